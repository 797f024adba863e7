/**
 * The dashboard (`/ui`): the files `npm run build` makes in dist/ui, served with a strict Content
 * Security Policy (its own scripts and styles, requests to this origin only, no framing). The page holds
 * no data: it reads the admin API, which asks for the admin token when the server has one.
 * @module
 */
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { TrellisError } from '../../errors.js';
import { sendError } from './errors.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};
/** Built file names: letters, digits, dots, dashes and underscores; nothing that could leave the folder. */
const ASSET = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

export function registerUiRoutes(
  app: FastifyInstance,
  dir: URL = new URL('../../../dist/ui/', import.meta.url),
): void {
  const send = async (reply: FastifyReply, file: string, cache: string) => {
    const ext = file.slice(file.lastIndexOf('.'));
    let body: Buffer;
    try {
      body = await readFile(new URL(file, dir));
    } catch {
      return sendError(
        reply,
        new TrellisError(
          'TRELLIS_ERR_ROUTE_NOT_FOUND',
          file === 'index.html'
            ? 'the dashboard is not built here: run npm run build'
            : `no file ${file} in the dashboard`,
        ),
      );
    }
    return reply
      .headers({
        ...HEADERS,
        'content-type': TYPES[ext] ?? 'application/octet-stream',
        'cache-control': cache,
      })
      .send(body);
  };
  // `/ui` and `/ui/` (the server ignores a trailing slash); the page's assets are relative to `/ui/`.
  app.get('/ui/', async (req, reply) =>
    req.url.split('?')[0] === '/ui' ? reply.redirect('/ui/') : send(reply, 'index.html', 'no-cache'),
  );
  app.get<{ Params: { file: string } }>('/ui/assets/:file', async (req, reply) => {
    if (!ASSET.test(req.params.file) || req.params.file.includes('..'))
      return sendError(
        reply,
        new TrellisError('TRELLIS_ERR_ROUTE_NOT_FOUND', 'no such file in the dashboard'),
      );
    // Built names carry a content hash: they never change.
    return send(reply, `assets/${req.params.file}`, 'public, max-age=31536000, immutable');
  });
}

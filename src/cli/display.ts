/**
 * `trellis display`: an HTTP sink that prints each CloudEvent it receives and answers 202.
 * @module
 */
import { createServer } from 'node:http';
import { escapeControl, formatEvent } from '../cloudevents/display.js';
import { decodeHttp } from '../cloudevents/http.js';

/** The largest request body the display reads. */
const MAX_BODY = 4 * 1024 * 1024;

/** Listens until SIGINT/SIGTERM; resolves with the bound port once listening. */
export function runDisplay(host: string, port: number): Promise<number> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY) {
        res
          .writeHead(413, { 'content-type': 'application/json' })
          .end(JSON.stringify({ message: `the body is over ${MAX_BODY} bytes` }));
        return;
      }
      try {
        const { events } = decodeHttp(req.rawHeaders, Buffer.concat(chunks));
        for (const e of events) process.stdout.write(`${formatEvent(e)}\n`);
        res.writeHead(202).end();
      } catch (err) {
        process.stderr.write(`not a CloudEvent: ${escapeControl((err as Error).message)}\n`);
        res
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ message: (err as Error).message }));
      }
    });
  });
  const stop = () => server.close(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address();
      const p = typeof addr === 'object' && addr ? addr.port : port;
      process.stderr.write(`event display listening on http://${host}:${p}/\n`);
      resolve(p);
    });
  });
}

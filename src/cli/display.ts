/**
 * `trellis display`: an HTTP sink that prints each CloudEvent it receives and answers 202.
 * @module
 */
import { createServer } from 'node:http';
import { formatEvent } from '../cloudevents/display.js';
import { decodeHttp } from '../cloudevents/http.js';

/** Listens until SIGINT/SIGTERM; resolves with the bound port once listening. */
export function runDisplay(host: string, port: number): Promise<number> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const { events } = decodeHttp(req.rawHeaders, Buffer.concat(chunks));
        for (const e of events) process.stdout.write(`${formatEvent(e)}\n`);
        res.writeHead(202).end();
      } catch (err) {
        process.stderr.write(`not a CloudEvent: ${(err as Error).message}\n`);
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

// Baseline for the end-to-end benchmark: a raw node:http server that answers 202 and forwards each
// request to one subscriber with undici, keeping nothing (no store, no retries). The same two HTTP hops
// as Broker -> Trigger -> subscriber, with none of the guarantees.
import { createServer } from 'node:http';
import { Pool } from 'undici';

const target = process.argv[2];
const pool = new Pool(target, { connections: 100 });
const path = new URL(target).pathname;
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    res.writeHead(202).end();
    const headers = {};
    for (const [k, v] of Object.entries(req.headers))
      if (k.startsWith('ce-') || k === 'content-type') headers[k] = v;
    pool
      .request({ path, method: 'POST', headers, body: Buffer.concat(chunks) })
      .then((r) => r.body.dump())
      .catch(() => {});
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
});

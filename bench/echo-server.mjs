// A flow step for the benchmark, in its own process: answers every event with itself (200, the same
// ce- headers and body), as a step that passes events on would.
import { createServer } from 'node:http';

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const headers = {};
    for (const [k, v] of Object.entries(req.headers))
      if (k.startsWith('ce-') || k === 'content-type') headers[k] = v;
    res.writeHead(200, headers).end(Buffer.concat(chunks));
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}/\n`);
});

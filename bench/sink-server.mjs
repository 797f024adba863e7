// The subscriber of the end-to-end benchmark, in its own process: answers 202, counts events and
// records latency from the `ce-benchsent` extension (epoch ms, set by the generator) to arrival.
// GET /stats returns { received, p50, p99 }; POST /reset starts over.
import { createServer } from 'node:http';

let latencies = [];
let received = 0;
const now = () => performance.timeOrigin + performance.now();
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    const s = [...latencies].sort((a, b) => a - b);
    const pct = (p) => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? null;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ received, p50: pct(50), p99: pct(99) }));
    return;
  }
  if (req.url === '/reset') {
    latencies = [];
    received = 0;
    res.writeHead(204).end();
    return;
  }
  const sent = Number(req.headers['ce-benchsent']);
  req.resume();
  req.on('end', () => {
    received++;
    if (sent > 0) latencies.push(now() - sent);
    res.writeHead(202).end();
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}/\n`);
});

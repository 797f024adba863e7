// The SDK in one program: a worker group, a publisher, and request-reply.
// Run it against a server: `npm start` in one terminal, then `node docs/examples/sdk-example.mjs`
// (TRELLIS_SERVER names another server; outside this repository, `npm install trellis` first).
import { TrellisClient } from 'trellis/client';

const client = new TrellisClient({ url: process.env.TRELLIS_SERVER ?? 'http://localhost:8080' });

// A worker: a member of the group 'example-workers', which takes the Broker's 'example.job' events.
const jobs = client.subscribe('default/default', {
  group: 'example-workers',
  filter: "type = 'example.job'",
  window: 10,
});
await jobs.ready;

// A producer: three jobs, stored before publish resolves.
await client.publish(
  'default/default',
  [1, 2, 3].map((n) => ({ source: '/example', type: 'example.job', data: { n } })),
);

let done = 0;
for await (const d of jobs) {
  console.log(`job ${d.event.data.n} done`);
  d.ack();
  if (++done === 3) jobs.close();
}

// Request-reply: a responder in the group 'example-quotes' answers 'example.quote' requests.
const responder = client.respond(
  'default/default',
  { group: 'example-quotes', filter: "type = 'example.quote'" },
  (request) => ({ source: '/quotes', type: 'example.quoted', data: { sku: request.data.sku, price: 42 } }),
);
await responder.ready;
const reply = await client.request(
  'default/default',
  { source: '/example', type: 'example.quote', data: { sku: 'A1' } },
  { timeout: 10_000 },
);
console.log(`quote for ${reply.data.sku}: ${reply.data.price}`);

responder.close();
client.close();

// The raw nats.js baseline of the cluster benchmark, in its own process: JetStream publishes of the
// given payload size to a stream of its own for the given seconds, with `window` publishes awaiting
// their acknowledgement at once. Prints `rate <msgs/s>` and removes its stream.
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

const [url, seconds, window, size] = process.argv.slice(2);
const nc = await connect({ servers: url });
const jsm = await jetstreamManager(nc);
const name = `benchraw${process.pid}`;
await jsm.streams.add({ name, subjects: [`${name}.>`] });
const js = jetstream(nc);
const payload = Buffer.alloc(Number(size), 120);
let done = 0;
const end = performance.now() + Number(seconds) * 1000;
const start = performance.now();
await Promise.all(
  Array.from({ length: Number(window) }, async () => {
    while (performance.now() < end) {
      await js.publish(`${name}.e`, payload);
      done++;
    }
  }),
);
const rate = done / ((performance.now() - start) / 1000);
await jsm.streams.delete(name);
await nc.close();
process.stdout.write(`rate ${rate}\n`);

// The baselines of the streaming benchmark, in their own process: a raw `ws` server and a raw
// @grpc/grpc-js server doing the least the protocols need. WebSocket `/echo` answers every message
// with a small JSON answer (as Trellis answers a publish); `/push?n=N&window=W` sends N 1 KiB events,
// never more than W unacknowledged (acks are control events whose data is `{"ids": [...]}`). gRPC serves the paths of
// trellis.v1.EventMesh with bytes as they are: Publish answers at once; Subscribe pushes N 1.1 KiB
// deliveries, W unacknowledged at most, N and W given by the first message.
import { createServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { WebSocketServer } from 'ws';

const EVENT = (i) =>
  JSON.stringify({
    specversion: '1.0',
    id: `p${i}`,
    source: '/bench',
    type: 'bench.event',
    trellisdelivery: String(i),
    data: { pad: 'x'.repeat(1000) },
  });

const http = createServer();
const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/echo') {
    ws.on('message', (m) => {
      const e = JSON.parse(String(m));
      ws.send(JSON.stringify({ type: 'published', data: { id: e.id, status: 202 } }));
    });
    return;
  }
  const n = Number(url.searchParams.get('n'));
  const window = Number(url.searchParams.get('window'));
  let sent = 0;
  let open = 0;
  const pump = () => {
    while (open < window && sent < n) {
      ws.send(EVENT(sent++));
      open++;
    }
  };
  ws.on('message', (m) => {
    // An ack as the client sends it to Trellis: a control event whose data lists the ids.
    open -= JSON.parse(String(m)).data.ids.length;
    pump();
  });
  pump();
});

const grpcServer = new grpc.Server();
const id = (b) => b;
const m = (name, req, res) => ({
  path: `/trellis.v1.EventMesh/${name}`,
  requestStream: req,
  responseStream: res,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
});
const DELIVERY = Buffer.alloc(1100, 0x61);
grpcServer.addService(
  { Publish: m('Publish', false, false), Subscribe: m('Subscribe', true, true) },
  {
    Publish: (_call, cb) => cb(null, Buffer.from([8, 1])),
    // The first message is the number of deliveries and the window, as two 4-byte integers.
    Subscribe: (call) => {
      let n = 0;
      let window = 0;
      let sent = 0;
      let open = 0;
      const pump = () => {
        while (open < window && sent < n) {
          call.write(DELIVERY);
          sent++;
          open++;
        }
      };
      call.on('data', (b) => {
        if (n === 0) {
          n = b.readUInt32BE(0);
          window = b.readUInt32BE(4);
        } else open -= b.readUInt32BE(0);
        pump();
      });
      call.on('end', () => call.end());
    },
  },
);
grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  http.listen(0, '127.0.0.1', () => {
    process.stdout.write(`listening on ws://127.0.0.1:${http.address().port} grpc ${port}\n`);
  });
});

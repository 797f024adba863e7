import { expect, it } from 'vitest';
import WebSocket from 'ws';
import { broker, ceHeaders, testServer } from './helpers/server.js';

it('smoke', async () => {
  await using s = await testServer();
  await s.apply(broker('default'));
  await s.settled();
  const url = s.url.replace('http', 'ws');
  const got: any[] = [];
  const sub = new WebSocket(`${url}/default/default?group=g1&window=2`, ['cloudevents.json']);
  sub.on('message', (m) => {
    const e = JSON.parse(String(m));
    got.push(e);
    if (e.trellisdelivery)
      sub.send(
        JSON.stringify({
          specversion: '1.0',
          id: 'a',
          source: '/c',
          type: 'dev.trellis.control.ack',
          data: { ids: [e.trellisdelivery] },
        }),
      );
  });
  sub.on('unexpected-response', (_r, res) => {
    let b = '';
    res.on('data', (c) => (b += c));
    res.on('end', () => console.log('refused', res.statusCode, b));
  });
  await new Promise((r) => sub.once('open', r));
  const pub = new WebSocket(`${url}/default/default`, ['cloudevents.json']);
  await new Promise((r) => pub.once('open', r));
  const answers: any[] = [];
  pub.on('message', (m) => answers.push(JSON.parse(String(m))));
  for (let i = 0; i < 5; i++)
    pub.send(JSON.stringify({ specversion: '1.0', id: `e${i}`, source: '/p', type: 't', data: { i } }));
  pub.send('{bad');
  await s.post('/default/default', ceHeaders('h1'), '{}');
  await expect.poll(() => got.filter((e) => e.trellisdelivery).length).toBe(6);
  console.log(
    answers.map((a) => JSON.stringify(a.data)),
    got.map((e) => e.id ?? e.type),
  );
  sub.close();
  pub.close();
});

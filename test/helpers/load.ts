/** A steady load of binary-mode POSTs from this process, recording which events got a 202. */
import { Pool } from 'undici';

export interface Load {
  acked: Set<string>;
  sent: number;
  failed: number;
  /** Points the load at another server (after a restart). */
  retarget(url: string): void;
  stop(): Promise<void>;
}

export function startLoad(url: string, opts: { concurrency: number; prefix: string; types: string[] }): Load {
  const acked = new Set<string>();
  let pool = new Pool(url, { connections: opts.concurrency });
  let stopped = false;
  let n = 0;
  const state: Load = {
    acked,
    sent: 0,
    failed: 0,
    retarget(next: string) {
      const old = pool;
      pool = new Pool(next, { connections: opts.concurrency });
      void old.destroy();
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
      await pool.destroy();
    },
  };
  const body = JSON.stringify({ pad: 'x'.repeat(900) });
  const loop = async () => {
    while (!stopped) {
      const i = n++;
      const id = `${opts.prefix}-${i}`;
      const type = opts.types[i % opts.types.length]!;
      state.sent++;
      try {
        const res = await pool.request({
          path: '/default/b',
          method: 'POST',
          headers: {
            'ce-specversion': '1.0',
            'ce-id': id,
            'ce-source': '/load',
            'ce-type': type,
            'content-type': 'application/json',
          },
          body,
        });
        await res.body.dump();
        if (res.statusCode === 202) acked.add(id);
        else state.failed++;
      } catch {
        state.failed++;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  const loops = Array.from({ length: opts.concurrency }, loop);
  return state;
}

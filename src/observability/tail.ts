/**
 * Live tails of Brokers and Channels: the events ingress stores, as they are stored, to whoever follows
 * the stream (`trellis tail`, the dashboard), each through its own CESQL filter. A follower that reads
 * slower than events come loses events (counted and told), never holds up ingress; the number of
 * followers is bounded.
 * @module
 */
import type { CloudEvent } from '../cloudevents/event.js';
import type { CesqlExpression } from '../filter/cesql/compile.js';

/** A follower's sink: false when it is full (its buffer over the limit). */
export interface TailFollower {
  filter?: CesqlExpression | undefined;
  /** Takes one stored event; returns false when it could not take it (too far behind). */
  send(seq: number, event: CloudEvent): boolean;
  /** Ends the follower (the server is stopping). */
  close(): void;
}

export class TailHub {
  private readonly byStream = new Map<string, Set<TailFollower>>();
  private count = 0;

  constructor(readonly maxFollowers = 64) {}

  /** Follows a stream; undefined when there are `maxFollowers` already. Returns the function that stops it. */
  follow(stream: string, f: TailFollower): (() => void) | undefined {
    if (this.count >= this.maxFollowers) return undefined;
    let set = this.byStream.get(stream);
    if (set === undefined) {
      set = new Set();
      this.byStream.set(stream, set);
    }
    set.add(f);
    this.count++;
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      this.count--;
      set.delete(f);
      if (set.size === 0) this.byStream.delete(stream);
    };
  }

  /** Ingress stored these events in `stream` (seqs in the same order). Cheap when no one follows. */
  publish(stream: string, events: readonly CloudEvent[], seqs: readonly number[]): void {
    const set = this.byStream.get(stream);
    if (set === undefined) return;
    for (const f of set) {
      for (let i = 0; i < events.length; i++) {
        const e = events[i]!;
        if (f.filter !== undefined && !f.filter.matches(e.attrs)) continue;
        f.send(seqs[i]!, e);
      }
    }
  }

  /** Ends every follower (the server is stopping). */
  closeAll(): void {
    for (const set of [...this.byStream.values()]) for (const f of [...set]) f.close();
  }

  get followers(): number {
    return this.count;
  }
}

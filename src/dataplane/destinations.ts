/**
 * Destination rules: which network addresses deliveries may connect to, checked after DNS resolution for
 * every connection (a host name that resolves into a denied network is refused), and up front for
 * addresses written in a URL (the resource is not Ready, with the reason). By default link-local and
 * cloud metadata addresses are denied (a subscriber URL is a way to make the server fetch
 * `http://169.254.169.254/` for whoever may apply resources); loopback is allowed for local development
 * unless `--deny-loopback`. The server's own addresses are always allowed.
 * @module
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { TrellisError } from '../errors.js';

/** Link-local (cloud metadata at 169.254.169.254 among them), Alibaba's metadata, AWS's IPv6 metadata. */
export const DEFAULT_DENIED_NETWORKS: readonly string[] = [
  '169.254.0.0/16',
  'fe80::/10',
  '100.100.100.200/32',
  'fd00:ec2::254/128',
];

export interface DestinationRulesOptions {
  /** CIDR networks never connected to. */
  deny: readonly string[];
  /** When not empty, the only networks connected to (loopback aside). */
  allow: readonly string[];
  /** Deny loopback (127.0.0.0/8, ::1) too. */
  denyLoopback: boolean;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Parses CIDR networks (`10.0.0.0/8`, `fd00::/8`, a bare address); throws the error naming `what`. */
export function parseNetworks(list: readonly string[], what: string): BlockList {
  const b = new BlockList();
  for (const raw of list) {
    const n = raw.trim();
    if (n === '') continue;
    const [addr, len, extra] = n.split('/');
    const v = isIP(addr ?? '');
    const max = v === 4 ? 32 : 128;
    const prefix = len === undefined ? max : Number(len);
    if (
      v === 0 ||
      extra !== undefined ||
      !Number.isInteger(prefix) ||
      prefix < 0 ||
      prefix > max ||
      (len !== undefined && !/^\d{1,3}$/.test(len))
    )
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_INVALID',
        `${what}: '${n}' is not a network (such as 10.0.0.0/8 or fd00::/8)`,
        {
          field: what,
        },
      );
    b.addSubnet(addr!, prefix, v === 4 ? 'ipv4' : 'ipv6');
  }
  return b;
}

/** An address as BlockList checks it: IPv4-mapped IPv6 (`::ffff:169.254.169.254`) as the IPv4 address. */
function normal(address: string): [string, 'ipv4' | 'ipv6'] | undefined {
  const a = address.startsWith('[') ? address.slice(1, -1) : address;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(a);
  if (mapped) return [mapped[1]!, 'ipv4'];
  const v = isIP(a);
  return v === 0 ? undefined : [a, v === 4 ? 'ipv4' : 'ipv6'];
}

export class DestinationRules {
  private readonly deny: BlockList;
  private readonly allow: BlockList | undefined;

  constructor(
    private readonly opts: DestinationRulesOptions,
    /** The server's own URLs: always allowed. */
    readonly isSelf: (url: string) => boolean = () => false,
  ) {
    this.deny = parseNetworks(opts.deny, '--deny-networks');
    this.allow = opts.allow.length > 0 ? parseNetworks(opts.allow, '--allow-networks') : undefined;
  }

  /** Why connecting to this address is refused, or undefined when it is allowed. */
  denied(address: string): string | undefined {
    const n = normal(address);
    if (n === undefined) return undefined;
    const [a, t] = n;
    if (LOOPBACK.check(a, t))
      return this.opts.denyLoopback ? `${a} is loopback (--deny-loopback)` : undefined;
    if (this.deny.check(a, t))
      return `${a} is in a denied network${a.startsWith('169.254.') || a.startsWith('fe80') ? ' (link-local: cloud metadata services live there)' : ''}; see --deny-networks`;
    if (this.allow !== undefined && !this.allow.check(a, t)) return `${a} is not in --allow-networks`;
    return undefined;
  }

  /**
   * For a URL whose host is an address: why it is refused. Undefined for allowed addresses, the server's
   * own URLs and host names (those are checked when a connection is made, after DNS).
   */
  deniedUrl(url: string): string | undefined {
    if (this.isSelf(url)) return undefined;
    let host: string;
    try {
      host = new URL(url).hostname;
    } catch {
      return undefined;
    }
    return this.denied(host);
  }

  /**
   * A `lookup` for connections: resolves like `dns.lookup` and fails the connection when an address it
   * gives is refused (every address is checked: a host name must not smuggle one in).
   */
  readonly lookup = (
    hostname: string,
    options: { all?: boolean; family?: number | string } | number,
    callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    const o = typeof options === 'number' ? { family: options } : options;
    dnsLookup(hostname, { ...o, all: true } as { all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      for (const a of addresses) {
        const why = this.denied(a.address);
        if (why !== undefined) {
          const e = new Error(
            `destination denied: ${hostname} resolves to ${a.address}: ${why}`,
          ) as NodeJS.ErrnoException;
          e.code = 'EDESTINATIONDENIED';
          return callback(e, []);
        }
      }
      if (o.all === true) return callback(null, addresses);
      const first = addresses[0]!;
      return callback(null, first.address, first.family);
    });
  };
}

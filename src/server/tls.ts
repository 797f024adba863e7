/**
 * The server's TLS certificate and key (`--tls-cert`, `--tls-key`): read at start (a clear error when
 * they cannot be), and read again when either file changes, so a renewed certificate is served without a
 * restart. A pair that does not load is logged and the previous one kept.
 * @module
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { TrellisError } from '../errors.js';

export interface TlsFiles {
  cert: string;
  key: string;
}

/** How often the files are looked at for a change. */
const POLL_MS = 2000;

export class TlsCertificate {
  private watching = false;

  constructor(
    private readonly certPath: string,
    private readonly keyPath: string,
  ) {}

  /** Reads and checks the pair; throws naming the file that does not load. */
  files(): TlsFiles {
    let cert: string;
    let key: string;
    try {
      cert = readFileSync(this.certPath, 'utf8');
      new X509Certificate(cert);
    } catch (err) {
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_INVALID',
        `--tls-cert ${this.certPath}: ${(err as Error).message}`,
      );
    }
    try {
      key = readFileSync(this.keyPath, 'utf8');
      createPrivateKey(key);
    } catch (err) {
      // The key's own text never goes into a message.
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_INVALID',
        `--tls-key ${this.keyPath}: ${(err as NodeJS.ErrnoException).code ?? 'not a private key'}`,
      );
    }
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key)))
      throw new TrellisError(
        'TRELLIS_ERR_RESOURCE_INVALID',
        `--tls-key ${this.keyPath} is not the key of --tls-cert ${this.certPath}`,
      );
    return { cert, key };
  }

  /** Calls `onChange` with the new pair when either file changes; `onError` when the new pair does not load. */
  watch(onChange: (files: TlsFiles) => void, onError: (err: Error) => void): void {
    this.watching = true;
    const changed = () => {
      try {
        onChange(this.files());
      } catch (err) {
        onError(err as Error);
      }
    };
    watchFile(this.certPath, { interval: POLL_MS }, changed);
    watchFile(this.keyPath, { interval: POLL_MS }, changed);
  }

  close(): void {
    if (!this.watching) return;
    unwatchFile(this.certPath);
    unwatchFile(this.keyPath);
  }
}

type IdentityUpdate = { certificate: Buffer; privateKey: Buffer } | null;
type CaUpdate = { caCertificate: Buffer } | null;

/**
 * The certificate and key for gRPC (grpc-js's certificate-provider interface), given the same pair as
 * https and renewed with it. grpc-js asks a client for a certificate against `clientCa` (--tls-client-ca)
 * and accepts connections without one; with no client CA, its own certificate stands in, which signs
 * no client's.
 */
export class GrpcCertificates {
  private identity: IdentityUpdate;
  private readonly ca: CaUpdate;
  private readonly identityListeners = new Set<(u: IdentityUpdate) => void>();
  private readonly caListeners = new Set<(u: CaUpdate) => void>();

  constructor(files: TlsFiles, clientCa: string | undefined) {
    this.identity = { certificate: Buffer.from(files.cert), privateKey: Buffer.from(files.key) };
    this.ca = { caCertificate: Buffer.from(clientCa ?? files.cert) };
  }

  /** A renewed pair, for every server that uses this provider. */
  update(files: TlsFiles): void {
    this.identity = { certificate: Buffer.from(files.cert), privateKey: Buffer.from(files.key) };
    for (const l of this.identityListeners) l(this.identity);
  }

  // grpc-js adds its listeners before it watches their result: the first update must come after.
  addIdentityCertificateListener(l: (u: IdentityUpdate) => void): void {
    this.identityListeners.add(l);
    process.nextTick(() => {
      if (this.identityListeners.has(l)) l(this.identity);
    });
  }
  removeIdentityCertificateListener(l: (u: IdentityUpdate) => void): void {
    this.identityListeners.delete(l);
  }
  addCaCertificateListener(l: (u: CaUpdate) => void): void {
    this.caListeners.add(l);
    process.nextTick(() => {
      if (this.caListeners.has(l)) l(this.ca);
    });
  }
  removeCaCertificateListener(l: (u: CaUpdate) => void): void {
    this.caListeners.delete(l);
  }
}

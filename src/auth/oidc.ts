/**
 * OIDC for the data plane: Trellis as a token issuer (an ES256 key kept in the data directory, published
 * as a JWKS at `/.well-known/jwks.json` beside `/.well-known/openid-configuration`), tokens it mints for
 * its own senders and for `trellis token`, and the verification of senders' tokens at ingress (signature
 * by a trusted issuer — Trellis or one configured with `--oidc-issuer`/`--oidc-jwks` —, audience,
 * expiry), with verified tokens cached.
 * @module
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  errors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from 'jose';
import { type ErrorCode, TrellisError } from '../errors.js';

/** Who sent: the token's subject and issuer. */
export interface Identity {
  sub: string;
  iss: string;
}

const ALG = 'ES256';

/** Trellis's own issuer: its key, its JWKS, and tokens it mints (cached until near their expiry). */
export class TrellisIssuer {
  private readonly minted = new Map<string, { token: string; until: number }>();

  private constructor(
    readonly issuer: string,
    private readonly privateKey: Awaited<ReturnType<typeof importJWK>>,
    readonly publicJwk: JWK,
  ) {}

  /** Loads the key from `file`, or makes one and writes it there (0600); without a file, a key for this run. */
  static async open(
    file: string | undefined,
    issuer: string,
    onUnsaved?: (err: Error) => void,
  ): Promise<TrellisIssuer> {
    let jwk: JWK;
    if (file !== undefined && existsSync(file)) jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
    else {
      const { privateKey } = await generateKeyPair(ALG, { extractable: true });
      jwk = {
        ...(await exportJWK(privateKey)),
        alg: ALG,
        use: 'sig',
        kid: `trellis-${Date.now().toString(36)}`,
      };
      if (file !== undefined) {
        try {
          mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
          writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
          chmodSync(file, 0o600);
        } catch (err) {
          // Not kept: tokens minted now do not survive a restart. The caller decides whether that matters.
          onUnsaved?.(err as Error);
        }
      }
    }
    const privateKey = await importJWK(jwk, ALG);
    const { d: _d, ...pub } = jwk;
    return new TrellisIssuer(issuer, privateKey, pub);
  }

  jwks(): JSONWebKeySet {
    return { keys: [this.publicJwk] };
  }

  /** A token for `audience`, as `subject`, valid `ttlSeconds`. */
  mint(audience: string, subject: string, ttlSeconds: number): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: ALG, kid: this.publicJwk.kid!, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setSubject(subject)
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + ttlSeconds)
      .sign(this.privateKey);
  }

  /** A token for one of Trellis's own senders, minted for an hour and used for half of it. */
  async tokenFor(audience: string, subject: string): Promise<string> {
    const key = `${audience}\u0000${subject}`;
    const known = this.minted.get(key);
    if (known !== undefined && known.until > Date.now()) return known.token;
    const token = await this.mint(audience, subject, 3600);
    if (this.minted.size > 10_000) this.minted.clear();
    this.minted.set(key, { token, until: Date.now() + 1_800_000 });
    return token;
  }
}

/** An issuer whose tokens are accepted: its `iss`, and where its keys are (a JWKS URL or file). */
export interface TrustedIssuer {
  issuer: string;
  jwks: string;
}

/** Why a token was refused: the code says which check failed. */
function refused(code: ErrorCode, message: string): TrellisError {
  return new TrellisError(code, message);
}

/** Verifies senders' tokens; a verified one is remembered (by its text) until it expires. */
export class TokenVerifier {
  private readonly keys = new Map<string, JWTVerifyGetKey>();
  private readonly cache = new Map<string, { audience: string; exp: number; identity: Identity }>();

  constructor(own: TrellisIssuer | undefined, trusted: readonly TrustedIssuer[]) {
    if (own !== undefined) this.keys.set(own.issuer, createLocalJWKSet(own.jwks()));
    for (const t of trusted)
      this.keys.set(
        t.issuer,
        /^https?:\/\//.test(t.jwks)
          ? createRemoteJWKSet(new URL(t.jwks), { cacheMaxAge: 600_000, cooldownDuration: 30_000 })
          : fileKeys(t.jwks),
      );
  }

  /** The identity a cached token proves for `audience`, without crypto; undefined when not cached. */
  cached(token: string, audience: string): Identity | undefined {
    const c = this.cache.get(token);
    if (c === undefined || c.audience !== audience || c.exp * 1000 <= Date.now()) return undefined;
    return c.identity;
  }

  /** Checks a bearer token for `audience`; rejects with a TrellisError whose code names the failed check. */
  async verify(token: string, audience: string): Promise<Identity> {
    const hit = this.cached(token, audience);
    if (hit !== undefined) return hit;
    let iss: string | undefined;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw refused('TRELLIS_ERR_TOKEN_INVALID', 'the bearer token is not a JWT');
    }
    const keys = iss === undefined ? undefined : this.keys.get(iss);
    if (keys === undefined)
      throw refused(
        'TRELLIS_ERR_TOKEN_ISSUER',
        `the token's issuer ${JSON.stringify(iss ?? null).slice(0, 200)} is not trusted`,
      );
    try {
      const { payload } = await jwtVerify(token, keys, { issuer: iss!, audience, clockTolerance: 30 });
      const identity = { sub: String(payload.sub ?? ''), iss: iss! };
      if (this.cache.size > 10_000) this.cache.clear();
      if (payload.exp !== undefined) this.cache.set(token, { audience, exp: payload.exp, identity });
      return identity;
    } catch (err) {
      if (err instanceof errors.JWTExpired)
        throw refused('TRELLIS_ERR_TOKEN_EXPIRED', 'the token has expired');
      if (err instanceof errors.JWTClaimValidationFailed && err.claim === 'aud')
        throw refused('TRELLIS_ERR_TOKEN_AUDIENCE', `the token is not for this audience (${audience})`);
      if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWKSNoMatchingKey)
        throw refused(
          'TRELLIS_ERR_TOKEN_SIGNATURE',
          "the token's signature does not verify with its issuer's keys",
        );
      throw refused(
        'TRELLIS_ERR_TOKEN_INVALID',
        `the token is not valid: ${(err as Error).message.slice(0, 200)}`,
      );
    }
  }
}

/** Keys from a JWKS file, read again when the file changes (looked at no more than every 5 s). */
function fileKeys(file: string): JWTVerifyGetKey {
  const load = () => createLocalJWKSet(JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet);
  let mtime = statSync(file).mtimeMs;
  let keys = load();
  let looked = Date.now();
  return (header, token) => {
    if (Date.now() - looked > 5000) {
      looked = Date.now();
      try {
        const m = statSync(file).mtimeMs;
        if (m !== mtime) {
          keys = load();
          mtime = m;
        }
      } catch {
        // Unreadable for now (being replaced): the keys read last stay.
      }
    }
    return keys(header, token);
  };
}

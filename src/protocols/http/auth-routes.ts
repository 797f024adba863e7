/**
 * Trellis as an OIDC issuer: `GET /.well-known/openid-configuration` and `GET /.well-known/jwks.json`
 * (public keys only, for anyone who verifies Trellis's tokens), and `POST /apis/tokens` (behind the admin
 * guard) that mints a token: `{"audience": A, "subject": S, "ttl": "PT1H"}` → `{"token": ...}`.
 * @module
 */
import type { FastifyInstance } from 'fastify';
import type { TrellisIssuer } from '../../auth/oidc.js';
import { TrellisError } from '../../errors.js';
import { parseDuration } from '../../resources/duration.js';
import { isObject } from '../../resources/validation.js';
import { sendError } from './errors.js';

const MAX_TTL_MS = 24 * 3600 * 1000;

export function registerAuthRoutes(app: FastifyInstance, issuer: () => TrellisIssuer | undefined): void {
  const own = () => {
    const i = issuer();
    if (i === undefined)
      throw new TrellisError('TRELLIS_ERR_ROUTE_NOT_FOUND', 'this server mints no tokens yet');
    return i;
  };
  app.get('/.well-known/openid-configuration', async (_req, reply) => {
    try {
      const i = own();
      return {
        issuer: i.issuer,
        jwks_uri: `${i.issuer.replace(/\/$/, '')}/.well-known/jwks.json`,
        id_token_signing_alg_values_supported: ['ES256'],
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
      };
    } catch (err) {
      return sendError(reply, err);
    }
  });
  app.get('/.well-known/jwks.json', async (_req, reply) => {
    try {
      return own().jwks();
    } catch (err) {
      return sendError(reply, err);
    }
  });
  app.post('/apis/tokens', async (req, reply) => {
    try {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '{}');
      } catch {
        throw new TrellisError(
          'TRELLIS_ERR_BAD_REQUEST',
          'the body must be JSON: {"audience", "subject", "ttl"}',
        );
      }
      const b = isObject(body) ? body : {};
      const text = (field: string) => {
        const v = b[field];
        if (typeof v !== 'string' || v === '' || v.length > 512 || /[\u0000-\u001f]/.test(v))
          throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', `${field}: 1 to 512 printable characters`, {
            field,
          });
        return v;
      };
      const audience = text('audience');
      const subject = text('subject');
      const ttl = b['ttl'] === undefined ? 3_600_000 : parseDuration(String(b['ttl']));
      if (ttl === undefined || ttl < 1000 || ttl > MAX_TTL_MS)
        throw new TrellisError('TRELLIS_ERR_BAD_REQUEST', 'ttl: an ISO-8601 duration from PT1S to PT24H', {
          field: 'ttl',
        });
      const token = await own().mint(audience, subject, Math.round(ttl / 1000));
      return { token, audience, subject, expiresIn: Math.round(ttl / 1000) };
    } catch (err) {
      return sendError(reply, err);
    }
  });
}

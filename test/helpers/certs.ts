/** Certificates made with openssl for TLS tests: a CA, and a certificate for 127.0.0.1 signed by it. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A CA and a certificate for 127.0.0.1 signed by it, made with openssl. */
export function makeCerts(dir: string, name = 'srv', cn = '127.0.0.1') {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  // One CA per directory: a second certificate (a renewal) is signed by the same one.
  if (!existsCa(dir))
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=Test CA',
    );
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${cn}`,
  );
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
  );
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    ca: read('ca.pem'),
    key: read(`${name}.key`),
    cert: read(`${name}.pem`),
    /** The same, as files. */
    paths: { ca: join(dir, 'ca.pem'), key: join(dir, `${name}.key`), cert: join(dir, `${name}.pem`) },
  };
}

function existsCa(dir: string): boolean {
  try {
    readFileSync(join(dir, 'ca.pem'));
    return true;
  } catch {
    return false;
  }
}

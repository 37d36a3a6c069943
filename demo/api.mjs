// The demo's Kubernetes API server: HTTPS on 127.0.0.1 (kubectl sends credentials only to
// https), a self-signed certificate made here (no openssl needed), and one rule:
// `GET /api/...` answers 200 `{"kind":"Status","status":"Success"}` only with
// `Authorization: Bearer <id_token>` whose RS256 signature verifies against one of the IdPs'
// JWKS, whose `aud` is `kubernetes` and whose `exp` has not passed; 401 otherwise.
//
// Usage: JWKS_URLS=http://127.0.0.1:<idp>/jwks[,http://...] [PORT=0] node api.mjs
// Prints "LISTENING <port>" once it listens.
import crypto from 'node:crypto';
import https from 'node:https';

const urls = (process.env.JWKS_URLS ?? '').split(',').filter(Boolean);
if (urls.length === 0) {
  console.error('set JWKS_URLS to the IdPs\' JWKS URLs');
  process.exit(2);
}

// --- A self-signed P-256 certificate, DER-encoded by hand (X.509 v3, RFC 5280). ---
function der(tag, content) {
  const n = content.length;
  let len;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes = [];
    for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, content]);
}
const seq = (...parts) => der(0x30, Buffer.concat(parts));
const set = (...parts) => der(0x31, Buffer.concat(parts));
const explicit = (n, inner) => der(0xa0 | n, inner);
function integer(buf) {
  let b = buf;
  while (b.length > 1 && b[0] === 0 && b[1] < 0x80) b = b.subarray(1);
  if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return der(0x02, b);
}
function oid(dotted) {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const groups = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) groups.unshift(0x80 | (x & 0x7f));
    out.push(...groups);
  }
  return der(0x06, Buffer.from(out));
}
function utcTime(date) {
  const p = (n) => String(n).padStart(2, '0');
  const s = `${p(date.getUTCFullYear() % 100)}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}`
    + `${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}Z`;
  return der(0x17, Buffer.from(s, 'ascii'));
}

function selfSignedCertificate() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(set(seq(oid('2.5.4.3'), der(0x0c, Buffer.from('refresh-gate demo API')))));
  const now = Date.now();
  const san = seq(
    der(0x87, Buffer.from([127, 0, 0, 1])),
    der(0x82, Buffer.from('localhost', 'ascii')),
  );
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))),
    integer(crypto.randomBytes(16)),
    ecdsaSha256,
    name,
    seq(utcTime(new Date(now - 3600_000)), utcTime(new Date(now + 86_400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(seq(oid('2.5.29.17'), der(0x04, san)))),
  );
  const signature = crypto.sign('sha256', tbs, privateKey);
  const cert = seq(tbs, ecdsaSha256, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const pem = `-----BEGIN CERTIFICATE-----\n${cert.toString('base64').match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----\n`;
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) };
}

// --- The IdPs' signing keys. ---
const keys = [];
for (const url of urls) {
  const answer = await fetch(url);
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  for (const jwk of (await answer.json()).keys) {
    if (jwk.kty === 'RSA') keys.push(crypto.createPublicKey({ key: jwk, format: 'jwk' }));
  }
}

/// True when `token` is an RS256 JWT signed by one of `keys`, for `kubernetes`, unexpired.
function valid(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return false;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return false;
  }
  if (header.alg !== 'RS256') return false;
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  if (!keys.some((key) => crypto.verify('sha256', signed, key, signature))) return false;
  const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  return audience.includes('kubernetes') && typeof claims.exp === 'number'
    && claims.exp > Date.now() / 1000;
}

const server = https.createServer(selfSignedCertificate(), (req, res) => {
  const auth = req.headers.authorization ?? '';
  const ok = req.method === 'GET' && req.url.startsWith('/api/')
    && auth.startsWith('Bearer ') && valid(auth.slice('Bearer '.length));
  if (ok) {
    res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ kind: 'Status', status: 'Success' }));
  } else {
    res.writeHead(401, { 'content-type': 'application/json' })
      .end(JSON.stringify({ kind: 'Status', status: 'Failure', reason: 'Unauthorized', code: 401 }));
  }
});
server.listen(Number(process.env.PORT ?? '0'), '127.0.0.1', () => {
  console.log(`LISTENING ${server.address().port}`);
});

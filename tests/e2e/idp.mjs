// node-oidc-provider as the real upstream IdP for refresh-gate's end-to-end tests.
//
// Usage: ISSUER=http://127.0.0.1:<gate port> [TOKEN_LATENCY_MS=250] [TOKEN_JITTER_MS=0]
//        [DISCOVERY_JITTER_MS=0] [PORT=0] node idp.mjs
// Prints "LISTENING <port>" once it listens on 127.0.0.1 (PORT, by default 0: a free port).
// Test-only routes (never part of a real IdP):
//   POST /test/mint  -> {"refresh_token": "..."}: a grant and a refresh token for "alice",
//                       minted through the provider's model API (no person needed)
//   GET  /test/stats -> counts of refresh-token exchanges, errors and revoked grants, from
//                       the provider's own events, and when each POST /token arrived
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const [major] = process.versions.node.split('.').map(Number);
if (major < 20) {
  console.error(`node-oidc-provider 9 needs Node.js >= 20; this is ${process.version}`);
  process.exit(2);
}

const issuer = process.env.ISSUER;
if (!issuer) {
  console.error('set ISSUER to the URL clients use (the gate)');
  process.exit(2);
}
const idTokenTtl = Number(process.env.ID_TOKEN_TTL ?? '8');
// Token-endpoint latency, as a real IdP has (OpenUnison: LDAP and database look-ups).
const tokenLatencyMs = Number(process.env.TOKEN_LATENCY_MS ?? '0');
// A slow, uneven IdP: each token request waits a further random 0..TOKEN_JITTER_MS, and each
// discovery request a random 0..DISCOVERY_JITTER_MS (so a client that read its kubeconfig
// early can present its token after one that read it later). Both 0 by default.
const tokenJitterMs = Number(process.env.TOKEN_JITTER_MS ?? '0');
const discoveryJitterMs = Number(process.env.DISCOVERY_JITTER_MS ?? '0');
const jitter = (max) => (max > 0 ? Math.floor(Math.random() * (max + 1)) : 0);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e', use: 'sig', alg: 'RS256' };

const stats = {
  refresh_success: 0,
  refresh_error: 0,
  refresh_errors: [],
  grants_revoked: 0,
  // When each POST /token arrived (ms since the epoch), before any latency.
  token_requests_at_ms: [],
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'kubernetes',
    client_secret: 'kube-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'offline_access'],
  claims: { openid: ['sub'] },
  rotateRefreshToken: true,
  ttl: { IdToken: idTokenTtl, AccessToken: 60, RefreshToken: 900, Grant: 3600 },
  features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  // Token requests arrive through the gate, so the request's Host is the gate's: the
  // discovery document then names the gate's token endpoint, as in production.
});

provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refresh_success += 1;
});
provider.on('grant.error', (ctx, error) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') {
    stats.refresh_error += 1;
    stats.refresh_errors.push(`${error.error}: ${error.error_description}`);
  }
});
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });

async function mint() {
  const client = await provider.Client.find('kubernetes');
  const grant = new provider.Grant({ accountId: 'alice', clientId: 'kubernetes' });
  grant.addOIDCScope('openid offline_access');
  const grantId = await grant.save();
  const refreshToken = new provider.RefreshToken({
    accountId: 'alice',
    client,
    grantId,
    scope: 'openid offline_access',
    gty: 'authorization_code',
    authTime: Math.floor(Date.now() / 1000),
  });
  return { refresh_token: await refreshToken.save() };
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.url === '/test/mint' && req.method === 'POST') {
    const body = JSON.stringify(await mint());
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    return;
  }
  if (req.url === '/test/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return;
  }
  if (req.url.startsWith('/token')) {
    if (req.url === '/token' && req.method === 'POST') stats.token_requests_at_ms.push(Date.now());
    const delay = tokenLatencyMs + jitter(tokenJitterMs);
    if (delay > 0) {
      setTimeout(() => callback(req, res), delay);
      return;
    }
  }
  if (discoveryJitterMs > 0 && req.url.startsWith('/.well-known/openid-configuration')) {
    setTimeout(() => callback(req, res), jitter(discoveryJitterMs));
    return;
  }
  callback(req, res);
});
server.listen(Number(process.env.PORT ?? '0'), '127.0.0.1', () => {
  console.log(`LISTENING ${server.address().port}`);
});

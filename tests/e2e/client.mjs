// openid-client (a non-Go OpenID client) refreshing one token N times at once.
//
// Usage: node client.mjs <issuer URL> <refresh token> <N>
// Prints one JSON array: for each refresh, {ok, access_token, refresh_token, id_token} or
// {ok: false, error}.
import * as client from 'openid-client';

const [issuer, refreshToken, n] = process.argv.slice(2);
const config = await client.discovery(
  new URL(issuer),
  'kubernetes',
  undefined,
  client.ClientSecretBasic('kube-secret'),
  { execute: [client.allowInsecureRequests] },
);
const results = await Promise.all(
  Array.from({ length: Number(n) }, () => client.refreshTokenGrant(config, refreshToken).then(
    (tokens) => ({
      ok: true,
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      id_token: tokens.id_token,
    }),
    (error) => ({ ok: false, error: error.error ?? error.code ?? String(error.message) }),
  )),
);
console.log(JSON.stringify(results));

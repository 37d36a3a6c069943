// Oracle: would a Node.js IdP read this raw HTTP/1.1 request as a refresh grant?
//
// Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
// {"id", "refresh", "token", "note"}. The raw bytes go through a real socket into Node's own
// HTTP server (llhttp), twice:
//  - "oidc": node-oidc-provider 9's token route, assembled from its own modules (its Router,
//    selective_body `urlencoded`, assemble_params, reject_dupes) on its own Koa: POST only,
//    `type-is` application/x-www-form-urlencoded, `querystring.parse` (selective_body asks
//    for `ctx.charset`, which a Koa context lacks, so the body is always read as UTF-8), then
//    `grant_type === 'refresh_token'` and a non-empty `refresh_token`.
//  - "qs": a generic Node app: any method, any Content-Type mentioning "urlencoded",
//    `querystring.parse` of the UTF-8 body.
// Refresh if either reading says so. ORACLE_TOKEN_PATH (default /token) is the route.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import * as http from 'node:http';
import * as net from 'node:net';
import * as querystring from 'node:querystring';
import * as readline from 'node:readline';
import * as path from 'node:path';

// Anything the libraries print goes to stderr: stdout carries the protocol only.
for (const level of ['log', 'info', 'warn', 'error', 'debug']) console[level] = (...a) => process.stderr.write(`${a.join(' ')}\n`);

const e2e = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'e2e');
const require = createRequire(path.join(e2e, 'package.json'));
const Koa = require('koa');
const lib = path.join(e2e, 'node_modules', 'oidc-provider', 'lib');
const load = async (file) => import(pathToFileURL(path.join(lib, file)).href);
const { default: Router } = await load('helpers/router.js');
const { urlencoded } = await load('shared/selective_body.js');
const { default: assembleParams } = await load('shared/assemble_params.js');
const { default: rejectDupes } = await load('shared/reject_dupes.js');
const { default: presence } = await load('helpers/validate_presence.js');

const TOKEN_PATH = process.env.ORACLE_TOKEN_PATH || '/token';
// What the token route allows: every grant's parameters and the client authentication ones.
const ALLOW = new Set(['grant_type', 'refresh_token', 'scope', 'resource', 'code', 'redirect_uri',
  'code_verifier', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type']);

/** What each connection parsed, keyed by its two ports (server:client; one client port may
 *  serve connections to both servers at once); both ends meet here. */
const conns = new Map();
function conn(key) {
  let c = conns.get(key);
  if (!c) {
    c = { key, verdicts: [], pending: 0, closed: false, clientClosed: false, done: null };
    c.poke = () => { if (c.closed && c.clientClosed && c.pending <= 0 && c.done) c.done(); };
    conns.set(key, c);
  }
  return c;
}
/** The key of a server-side socket. */
const serverKey = (socket) => `${socket.localPort}:${socket.remotePort}`;
function track(server) {
  server.on('connection', (socket) => {
    const c = conn(serverKey(socket));
    socket.on('close', () => { c.closed = true; c.poke(); });
  });
  server.on('clientError', (err, socket) => {
    conn(serverKey(socket)).verdicts.push({ refresh: false, token: null, note: `parse error ${err.code || err.message}` });
    socket.destroy();
  });
}
/** Counts a request in on its connection (its key kept: a destroyed socket forgets it). */
function start(req) {
  req.oraclePort = serverKey(req.socket);
  conn(req.oraclePort).pending += 1;
}
function record(req, v) {
  const c = conn(req.oraclePort);
  c.verdicts.push({ ...v, note: `${req.method} ${v.note}` });
  c.pending -= 1;
  c.poke();
}
const isRefresh = (p) => p.grant_type === 'refresh_token' && typeof p.refresh_token === 'string' && p.refresh_token !== '';

// node-oidc-provider's token route, its own modules in its order.
const app = new Koa();
const router = new Router();
router.post('token', TOKEN_PATH, urlencoded, (ctx, next) => assembleParams(ALLOW, ctx, next),
  (ctx, next) => rejectDupes({ only: new Set(['grant_type']) }, ctx, next),
  (ctx, next) => { presence(ctx, 'grant_type'); return next(); },
  (ctx, next) => (ctx.oidc.params.grant_type === 'refresh_token' ? rejectDupes({}, ctx, next) : next()),
  (ctx) => {
    const p = ctx.oidc.params;
    ctx.state.verdict = { refresh: isRefresh(p), token: typeof p.refresh_token === 'string' ? p.refresh_token : null, note: `oidc grant_type=${JSON.stringify(p.grant_type)}` };
    ctx.body = 'ok';
  });
app.use(async (ctx, next) => {
  ctx.oidc = {};
  try {
    await next();
    ctx.state.verdict ||= { refresh: false, token: null, note: 'oidc not routed' };
  } catch (e) {
    ctx.state.verdict = { refresh: false, token: null, note: `oidc ${e.message}${e.error_description ? `: ${e.error_description}` : ''}${e.cause ? ` (${e.cause.message})` : ''}` };
  }
  ctx.status = 200; ctx.body = 'ok';
  record(ctx.req, ctx.state.verdict);
});
app.use(router.routes());
const handle = app.callback();
const oidc = http.createServer((req, res) => { start(req); handle(req, res); });

// A generic Node app: querystring.parse of any body that claims to be a form.
const generic = http.createServer((req, res) => {
  start(req);
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('error', (e) => { record(req, { refresh: false, token: null, note: `qs ${e.message}` }); res.destroy(); });
  req.on('end', () => {
    if (!/urlencoded/i.test(req.headers['content-type'] || '')) {
      record(req, { refresh: false, token: null, note: 'qs not a form' });
    } else {
      const p = querystring.parse(Buffer.concat(chunks).toString('utf8'));
      record(req, { refresh: isRefresh(p), token: typeof p.refresh_token === 'string' ? p.refresh_token : null, note: `qs grant_type=${JSON.stringify(p.grant_type)}` });
    }
    res.end('ok');
  });
});

/** Sends `raw` on a fresh connection to `server`; resolves with the verdicts of what it parsed. */
function send(server, raw) {
  return new Promise((resolve) => {
    const socket = net.connect(server.address().port, '127.0.0.1');
    let c;
    let response = '';
    socket.on('connect', () => {
      c = conn(`${socket.remotePort}:${socket.localPort}`);
      const timer = setTimeout(() => { c.verdicts.push({ refresh: false, token: null, note: 'timeout' }); if (c.done) c.done(); }, 3000);
      c.done = () => {
        c.done = null; clearTimeout(timer); conns.delete(c.key); socket.destroy();
        // Refused before any handler ran (e.g. no Host): say how.
        if (!c.verdicts.length) c.verdicts.push({ refresh: false, token: null, note: `refused ${response.split('\r\n')[0] || '(no response)'}` });
        resolve(c.verdicts);
      };
      socket.end(raw);
    });
    socket.on('data', (d) => { if (response.length < 200) response += d.toString('latin1'); });
    socket.on('error', () => {});
    socket.on('close', () => { if (c) { c.clientClosed = true; setImmediate(c.poke); } else resolve([{ refresh: false, token: null, note: 'connect failed' }]); });
  });
}

async function judge(raw) {
  const all = [...await send(oidc, raw), ...await send(generic, raw)];
  const hit = all.find((v) => v.refresh);
  return { refresh: !!hit, token: hit ? hit.token : null, note: all.map((v) => v.note).join('; ') || 'nothing parsed' };
}

await Promise.all([oidc, generic].map((s) => { track(s); return new Promise((r) => s.listen(0, '127.0.0.1', r)); }));

// Judge up to 16 requests at a time; answer in input order.
const queue = [];
let writing = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  let id = null;
  let work;
  try {
    const input = JSON.parse(line);
    id = input.id;
    work = judge(Buffer.from(input.raw, 'base64')).catch((e) => ({ refresh: false, token: null, note: `error ${e.message}` }));
  } catch (e) {
    work = Promise.resolve({ refresh: false, token: null, note: `bad input ${e.message}` });
  }
  const out = work.then((v) => `${JSON.stringify({ id, ...v })}\n`);
  queue.push(out);
  writing = writing.then(() => out).then((s) => new Promise((r) => process.stdout.write(s, r)));
  if (queue.length >= 16) await queue.shift();
}
await writing;
process.exit(0);

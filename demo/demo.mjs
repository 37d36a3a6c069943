// The demo of issue #18: ten kubectl processes racing on one kubeconfig lose the session
// against a rotating IdP, the gate in observe mode says what it would have saved, and the
// gate in enforce mode saves it. Run by scripts/demo (which sets up and builds first).
//
// Environment: REFRESH_GATE_BIN (the gate binary, required), DEMO_PROCESSES (10).
// Exit status: 0 when enforce saved the session (every command succeeded, the later call
// succeeded, the IdP revoked no grant), 1 otherwise, 2 for a missing prerequisite.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const E2E = path.join(ROOT, 'tests/e2e');
const KUBECTL = path.join(E2E, 'bin/kubectl-1.33');
const PROCESSES = Number(process.env.DEMO_PROCESSES ?? '10');
// node-oidc-provider's token endpoint latency: a realistic IdP, and long enough that the
// processes released together all present the token before the first answer returns.
const IDP_LATENCY_MS = 250;
// Shorter than client-go's ~10 s refresh margin: every kubectl call refreshes.
const ID_TOKEN_TTL = 8;
const started = Date.now();

function fail(code, message) {
  console.error(`demo: ${message}`);
  process.exit(code);
}

// --- Prerequisites (scripts/setup installs them all). ---
const SETUP = 'Run scripts/setup (it installs Node.js >= 20, the tests/e2e npm packages and kubectl).';
if (Number(process.versions.node.split('.')[0]) < 20) {
  fail(2, `prerequisite missing: Node.js >= 20 (this is ${process.version}). ${SETUP}`);
}
if (!fs.existsSync(path.join(E2E, 'node_modules/oidc-provider'))) {
  fail(2, `prerequisite missing: tests/e2e/node_modules/oidc-provider. ${SETUP}`);
}
if (!fs.existsSync(KUBECTL)) fail(2, `prerequisite missing: ${KUBECTL}. ${SETUP}`);
const GATE_BIN = process.env.REFRESH_GATE_BIN;
if (!GATE_BIN || !fs.existsSync(GATE_BIN)) {
  fail(2, `the gate binary is missing: set REFRESH_GATE_BIN (scripts/demo builds it), got ${GATE_BIN ?? 'nothing'}`);
}

// --- Everything started is stopped on exit, and the temporary directory removed. ---
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'refresh-gate-demo-'));
const children = new Set();
function cleanup() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch { /* already gone */ }
  }
  children.clear();
  if (process.env.DEMO_KEEP_TMP) console.error(`demo: kept ${tmp}`);
  else fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`demo: ${signal}, stopping`);
    process.exit(130);
  });
}
process.on('unhandledRejection', (error) => fail(1, `failed: ${error?.stack ?? error}`));

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/// Start a Node program that prints "LISTENING <port>"; its stderr goes to `<name>.log`.
async function startNode(name, script, env) {
  const log = fs.openSync(path.join(tmp, `${name}.log`), 'a');
  const child = track(spawn(process.execPath, [script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', log],
  }));
  const lines = readline.createInterface({ input: child.stdout });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 30 s`)), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const text = fs.readFileSync(path.join(tmp, `${name}.log`), 'utf8').trim();
      reject(new Error(`${name} exited (${code}) before listening:\n${text}`));
    });
    lines.on('line', (line) => {
      if (line.startsWith('LISTENING ')) {
        clearTimeout(timer);
        resolve(Number(line.slice('LISTENING '.length)));
      }
    });
  });
  return { child, port, url: `http://127.0.0.1:${port}` };
}

/// node-oidc-provider (tests/e2e/idp.mjs) on `port`, naming `issuer` as its issuer.
async function startIdp(name, port, issuer) {
  const idp = await startNode(name, path.join(E2E, 'idp.mjs'), {
    ISSUER: issuer,
    PORT: String(port),
    TOKEN_LATENCY_MS: String(IDP_LATENCY_MS),
    ID_TOKEN_TTL: String(ID_TOKEN_TTL),
  });
  return {
    ...idp,
    async mint() {
      const answer = await fetch(`${idp.url}/test/mint`, { method: 'POST' });
      return (await answer.json()).refresh_token;
    },
    async stats() {
      return (await fetch(`${idp.url}/test/stats`)).json();
    },
  };
}

// --- The gate. ---
function gateConfig({ listen, admin, upstream, mode }) {
  return `# written by scripts/demo
[listen]
address = "${listen}"
drain = "0s"
shutdown_grace = "1s"

[admin]
address = "${admin}"

[upstream]
url = "${upstream}"
token_paths = ["/token"]

[rotation]
mode = "${mode}"
grace_period = "5s"
max_reuses = 10
replay_spacing = "50ms"

[log]
format = "json"
level = "info"
`;
}

function writeAtomically(file, text) {
  fs.writeFileSync(`${file}.new`, text);
  fs.renameSync(`${file}.new`, file);
}

const GATE_LOG = path.join(tmp, 'gate.log');
function gateLog() {
  const lines = [];
  for (const line of fs.readFileSync(GATE_LOG, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const record = JSON.parse(line);
      lines.push({ ...record, ...(record.fields ?? {}) });
    } catch {
      lines.push({ message: line });
    }
  }
  return lines;
}

async function startGate(configFile, adminUrl) {
  const log = fs.openSync(GATE_LOG, 'a');
  const env = { ...process.env };
  delete env.RUST_LOG;
  const child = track(spawn(GATE_BIN, ['--config', configFile], { env, stdio: ['ignore', 'ignore', log] }));
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== null) {
      throw new Error(`the gate exited (${exited}):\n${fs.readFileSync(GATE_LOG, 'utf8').trim()}`);
    }
    try {
      if ((await fetch(`${adminUrl}/readyz`)).ok) return child;
    } catch { /* not yet listening */ }
    if (Date.now() > deadline) throw new Error(`the gate was not ready in 60 s:\n${fs.readFileSync(GATE_LOG, 'utf8')}`);
    await sleep(100);
  }
}

/// Prometheus text -> [{name, labels, value}].
async function metrics(adminUrl) {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const samples = [];
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/// The series of `name` as `{label-values: value}`, by the given labels.
function series(samples, name, keys) {
  const out = {};
  for (const s of samples.filter((x) => x.name === name)) {
    out[keys.map((k) => `${k}=${s.labels[k]}`).join(',')] = s.value;
  }
  return out;
}

function delta(after, before) {
  const out = {};
  for (const [key, value] of Object.entries(after)) {
    const d = value - (before[key] ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

// --- kubectl. ---
/// An id_token kubectl considers expired (it does not check signatures), so it refreshes.
function expiredIdToken() {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'alice', aud: 'kubernetes', exp: 1_000_000_000 })}`;
  return `${body}.${crypto.createHmac('sha256', 'not-checked').update(body).digest('base64url')}`;
}

function writeKubeconfig(file, apiPort, issuer, refreshToken) {
  fs.writeFileSync(file, `apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://127.0.0.1:${apiPort}
    insecure-skip-tls-verify: true
contexts:
- name: demo
  context:
    cluster: demo
    user: alice
current-context: demo
users:
- name: alice
  user:
    auth-provider:
      name: oidc
      config:
        client-id: kubernetes
        client-secret: kube-secret
        idp-issuer-url: ${issuer}
        id-token: ${expiredIdToken()}
        refresh-token: ${refreshToken}
`);
}

/// One `kubectl get --raw /api/demo`: {ok, stderr}.
function kubectl(kubeconfig) {
  const env = { ...process.env, HOME: path.dirname(kubeconfig) };
  delete env.KUBECONFIG;
  return new Promise((resolve) => {
    const child = track(spawn(KUBECTL, ['--kubeconfig', kubeconfig, 'get', '--raw', '/api/demo', '--request-timeout=20s'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ ok: code === 0 && stdout.includes('Success'), stderr: stderr.trim() || `exit ${code ?? signal}` });
    });
  });
}

function whyFailed(stderr) {
  if (/\.lock|could not persist/.test(stderr)) return 'kubeconfig lock collision';
  if (/invalid_grant/.test(stderr)) return 'refresh refused (invalid_grant)';
  if (/oauth2|refresh/i.test(stderr)) return 'refresh failed';
  if (/Unauthorized|401/.test(stderr)) return 'API server said 401';
  return stderr.split('\n')[0].slice(0, 120);
}

/// Release `PROCESSES` kubectl processes together on one fresh kubeconfig, then one more.
async function round(name, { issuer, idp, api, adminUrl }) {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  const kubeconfig = path.join(dir, 'config');
  writeKubeconfig(kubeconfig, api.port, issuer, await idp.mint());
  const idpBefore = await idp.stats();
  const gateBefore = adminUrl ? await metrics(adminUrl) : null;
  const logBefore = adminUrl ? gateLog().length : 0;
  const runs = await Promise.all(Array.from({ length: PROCESSES }, () => kubectl(kubeconfig)));
  const gateAfter = adminUrl ? await metrics(adminUrl) : null;
  await sleep(200); // the gate writes its log on its own thread
  const audit = adminUrl ? gateLog().slice(logBefore).filter((l) => l.target === 'audit') : [];
  // The session check: one more call, later. Its id_token is within the refresh margin
  // (ID_TOKEN_TTL < 10 s), so it refreshes with whatever refresh token the kubeconfig holds.
  const later = await kubectl(kubeconfig);
  const idpAfter = await idp.stats();
  const reasons = {};
  for (const run of runs.filter((r) => !r.ok)) {
    const why = whyFailed(run.stderr);
    reasons[why] = (reasons[why] ?? 0) + 1;
  }
  return {
    ok: runs.filter((r) => r.ok).length,
    failed: runs.filter((r) => !r.ok).length,
    reasons,
    alive: later.ok,
    laterError: later.ok ? '' : whyFailed(later.stderr),
    revoked: idpAfter.grants_revoked - idpBefore.grants_revoked,
    idpExchanges: idpAfter.refresh_success - idpBefore.refresh_success,
    idpErrors: idpAfter.refresh_error - idpBefore.refresh_error,
    gate: gateBefore && {
      outcomes: delta(
        series(gateAfter, 'refresh_gate_refresh_requests_total', ['outcome']),
        series(gateBefore, 'refresh_gate_refresh_requests_total', ['outcome']),
      ),
      audit,
      observed: delta(
        series(gateAfter, 'refresh_gate_observed_refreshes_total', ['would', 'idp']),
        series(gateBefore, 'refresh_gate_observed_refreshes_total', ['would', 'idp']),
      ),
    },
  };
}

function observeSays(gate) {
  const o = gate.observed;
  const sum = (would, idps) => idps.reduce((n, idp) => n + (o[`would=${would},idp=${idp}`] ?? 0), 0);
  const failed = ['refused', 'error'];
  const coalesce = sum('coalesce', failed);
  const replay = sum('replay', failed);
  const refuse = sum('refuse', ['success', ...failed]);
  const reasons = {};
  for (const l of gate.audit.filter((x) => x.event === 'RefreshTokenReplayObserved' && x.would === 'refuse')) {
    reasons[l.reason] = (reasons[l.reason] ?? 0) + 1;
  }
  const why = Object.entries(reasons).map(([k, n]) => `${k} ${n}`).join(', ');
  // Presentations (a kubectl the IdP refused retries once), not commands.
  return `would have saved ${coalesce + replay} refused presentations (coalesce ${coalesce}, replay ${replay}); `
    + `would refuse ${refuse}${why ? ` (${why})` : ''}`;
}

function enforceSays(gate) {
  const order = ['coalesced', 'grace_replay', 'forwarded', 'refused', 'upstream_error', 'internal_error', 'observed'];
  const names = { coalesced: 'coalesced', grace_replay: 'grace replays', forwarded: 'forwarded' };
  const parts = order
    .filter((k) => gate.outcomes[`outcome=${k}`])
    .map((k) => `${names[k] ?? k} ${gate.outcomes[`outcome=${k}`]}`);
  return parts.join(', ') || 'nothing';
}

// --- The run. ---
const step = (text) => console.log(`demo: ${text}`);

const straightPort = await freePort();
const gatePort = await freePort();
const adminPort = await freePort();
const gateUrl = `http://127.0.0.1:${gatePort}`;
const adminUrl = `http://127.0.0.1:${adminPort}`;

step(`starting node-oidc-provider twice (rotating refresh tokens, revoking the grant on reuse; token endpoint ${IDP_LATENCY_MS} ms, id_tokens ${ID_TOKEN_TTL} s)`);
const [straightIdp, gatedIdp] = await Promise.all([
  startIdp('idp-straight', straightPort, `http://127.0.0.1:${straightPort}`),
  startIdp('idp-behind-gate', 0, gateUrl),
]);
step(`  straight at ${straightIdp.url}; behind the gate at ${gatedIdp.url} (issuer ${gateUrl})`);

const api = await startNode('api', path.join(ROOT, 'demo/api.mjs'), {
  JWKS_URLS: `${straightIdp.url}/jwks,${gatedIdp.url}/jwks`,
});
step(`  HTTPS API server at https://127.0.0.1:${api.port} (accepts only an unexpired id_token the IdP signed)`);

const configFile = path.join(tmp, 'refresh-gate.toml');
const config = (mode) => gateConfig({
  listen: `127.0.0.1:${gatePort}`,
  admin: `127.0.0.1:${adminPort}`,
  upstream: gatedIdp.url,
  mode,
});
writeAtomically(configFile, config('observe'));
const gate = await startGate(configFile, adminUrl);
step(`  refresh-gate at ${gateUrl} (admin ${adminUrl}), [rotation] mode = "observe"`);

const rows = [];
step(`a. ${PROCESSES} kubectl 1.33 processes on one kubeconfig, straight at the IdP`);
const a = await round('straight', { issuer: straightIdp.url, idp: straightIdp, api });
rows.push(['straight at the IdP', a, '-']);

step(`b. the same through the gate in observe mode`);
const b = await round('observe', { issuer: gateUrl, idp: gatedIdp, api, adminUrl });
rows.push(['gate, observe', b, observeSays(b.gate)]);

step('   switching the gate to enforce: rewriting its configuration, then SIGHUP');
const reloadedBefore = gateLog().filter((l) => l.message === 'configuration reloaded').length;
writeAtomically(configFile, config('enforce'));
gate.kill('SIGHUP');
for (let waited = 0; ; waited += 50) {
  const log = gateLog();
  const refused = log.find((l) => /configuration not reloaded|need a restart/.test(l.message ?? ''));
  if (refused) fail(1, `the gate refused the reload: ${refused.message} ${refused.error ?? ''}`);
  if (log.filter((l) => l.message === 'configuration reloaded').length > reloadedBefore) break;
  if (waited > 10_000) fail(1, 'the gate did not log "configuration reloaded" within 10 s of SIGHUP');
  await sleep(50);
}
step('   the gate logged "configuration reloaded": [rotation] mode = "enforce"');

step(`c. the same through the gate in enforce mode`);
const c = await round('enforce', { issuer: gateUrl, idp: gatedIdp, api, adminUrl });
rows.push(['gate, enforce', c, enforceSays(c.gate)]);

// --- The report. ---
const finalMetrics = await metrics(adminUrl);
const advice = await (await fetch(`${adminUrl}/grace-advice`)).json();
const audit = gateLog().filter((l) => l.target === 'audit');

console.log('');
console.log(`${''.padEnd(22)}commands ok  failed  session   IdP grants revoked  gate says`);
for (const [label, r, says] of rows) {
  console.log(
    `${label.padEnd(22)}${`${r.ok}/${PROCESSES}`.padStart(11)}${String(r.failed).padStart(8)}     `
    + `${(r.alive ? 'alive' : 'dead').padEnd(6)}${String(r.revoked).padStart(13)}            ${says}`,
  );
}
console.log('');
for (const [label, r] of rows) {
  const why = Object.entries(r.reasons).map(([k, n]) => `${n} ${k}`).join(', ') || 'none';
  console.log(`  ${label}: failures: ${why}; later call: ${r.alive ? 'ok' : `FAILED (${r.laterError})`}; `
    + `the IdP saw ${r.idpExchanges} successful refreshes and ${r.idpErrors} refused`);
}

console.log('\nAudit lines (gate log, target "audit"):');
for (const [event, mode] of [['RefreshTokenReplayObserved', 'observe'], ['ExpiredRefreshTokenUsed', 'enforce']]) {
  const lines = audit.filter((l) => l.event === event);
  console.log(`  ${event} (${mode}): ${lines.length}`);
  for (const l of lines) {
    console.log(`    ${l.ts ?? l.timestamp ?? ''} +${l.since_first_use_ms}ms ${l.message}`);
  }
}
const others = audit.filter((l) => !['RefreshTokenReplayObserved', 'ExpiredRefreshTokenUsed', 'RefreshTokenRotated'].includes(l.event));
if (others.length > 0) {
  console.log(`  other audit events: ${others.length}`);
  for (const l of others) console.log(`    ${l.ts ?? l.timestamp ?? ''} ${l.message}`);
}

console.log(`\nMetrics (admin ${adminUrl}/metrics, since the gate started: rounds b and c and their later calls):`);
const nonZero = (name, keys) => {
  for (const [key, value] of Object.entries(series(finalMetrics, name, keys))) {
    if (value !== 0) console.log(`  ${name}{${key.replaceAll('=', '="').replaceAll(',', '",')}"} ${value}`);
  }
};
nonZero('refresh_gate_observed_refreshes_total', ['would', 'idp']);
nonZero('refresh_gate_refresh_requests_total', ['outcome']);
nonZero('refresh_gate_refused_total', ['reason']);
nonZero('refresh_gate_replay_delay_seconds_count', ['outcome']);

console.log(`\nGET ${adminUrl}/grace-advice:`);
console.log(JSON.stringify(advice, null, 2).replace(/^/gm, '  '));

const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log('');
if (c.ok === PROCESSES && c.alive && c.revoked === 0) {
  console.log(`demo: PASS: in enforce the gate saved the session (${c.ok}/${PROCESSES} commands, later call ok, no grant revoked by the IdP) in ${seconds} s`);
  process.exit(0);
}
const problems = [];
if (c.ok !== PROCESSES) problems.push(`${c.failed} of ${PROCESSES} commands failed`);
if (!c.alive) problems.push(`the later call failed (${c.laterError})`);
if (c.revoked !== 0) problems.push(`the IdP revoked ${c.revoked} grant(s)`);
console.log(`demo: FAIL: in enforce the gate did not save the session: ${problems.join('; ')}`);
process.exit(1);

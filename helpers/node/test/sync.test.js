'use strict';
// The synchronous client (cronium/sync, and the `cronium` global that global.js
// installs) against the fault server: values returned directly, the same
// timeouts and retries as the async client, errors of the same classes, and a
// process that ends as soon as the script does (the worker never holds it).
// Each case runs in a child node process so that a hang is seen as a timeout.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const { startFaultServer, json, hang, apiError } = require('../test-support/fault-server');
const { PACKAGE_DIR, cleanEnv, runNode, freePort } = require('../test-support/util');

const SYNC = JSON.stringify(path.join(PACKAGE_DIR, 'sync.js'));
const GLOBAL = path.join(PACKAGE_DIR, 'global.js');

function env(url, extra = {}) {
  return cleanEnv({
    CRONIUM_RUNTIME_API: url, CRONIUM_EXECUTION_TOKEN: 'tok-sync-secret', CRONIUM_EXECUTION_ID: 'e1',
    CRONIUM_RETRY_DELAY: '0.01', ...extra,
  });
}

// Runs `body` in a child; it prints one JSON line. Returns { out, ms, r }.
async function run(body, environment, { timeoutMs = 20000, args = [] } = {}) {
  const started = Date.now();
  const r = await runNode([...args, '-e', body], { env: environment, timeoutMs });
  const ms = Date.now() - started;
  let out = null;
  try { out = JSON.parse(r.stdout.trim().split('\n').pop()); } catch (err) { /* checked by the caller */ }
  return { out, ms, r };
}

const CATCH = `(f) => { try { return { value: f() }; } catch (e) { return { name: e.name, message: e.message, status: e.statusCode, code: e.code }; } }`;

describe('synchronous client', () => {
  let srv;
  before(async () => { srv = await startFaultServer(); });
  after(async () => { await srv.close(); });

  it('returns values, not promises, and sends the same requests as the async client', async () => {
    srv.requests.length = 0;
    srv.setSteps([
      json(200, { success: true }),
      json(200, { success: true, data: { key: 'COUNTER', value: '41' } }),
      json(200, { success: true }),
      json(200, { success: true, data: { condition: false } }),
      json(200, { success: true, data: { executionId: 'e1', event: { name: 'E', id: 'ev' } } }),
      json(200, { success: true, data: { key: 'log', value: 'a;b' } }),
      apiError(404, 'variable_not_found', 'no such variable'),
    ]);
    const { out, r } = await run(`
      const cronium = require(${SYNC});
      const input = cronium.input();
      const n = parseInt(cronium.getVariable('COUNTER') || '0') + 1;
      cronium.setVariable('COUNTER', String(n));
      const cond = cronium.getCondition() ? 'yes' : 'no';
      const ev = cronium.event();
      const appended = cronium.appendVariable('log', 'b', ';');
      const missing = cronium.getVariable('nope');
      console.log(JSON.stringify({ input, n, cond, name: ev.name, appended, missing }));`, env(srv.url));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(out, { input: {}, n: 42, cond: 'no', name: 'E', appended: 'a;b', missing: null });
    assert.deepEqual(srv.requests.map((q) => `${q.method} ${q.url}`), [
      'GET /executions/e1/input', 'GET /executions/e1/variables/COUNTER', 'PUT /executions/e1/variables/COUNTER',
      'GET /executions/e1/condition', 'GET /executions/e1/context', 'POST /executions/e1/variables/log/append',
      'GET /executions/e1/variables/nope',
    ]);
    assert.equal(srv.requests[2].body, '{"value":"42"}');
    assert.equal(srv.requests[5].body, '{"value":"b","separator":";"}');
    assert.equal(r.stderr, '');
  });

  it('the global from global.js is the synchronous client, for -e, CJS and ESM files', async () => {
    srv.setSteps([json(200, { success: true, data: { user_id: 'u7' } })]);
    const fs = require('node:fs');
    const os = require('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cronium-sync-'));
    const script = "const d = cronium.input(); console.log(JSON.stringify({ user: d.user_id || 'unknown', promise: d instanceof Promise }));";
    fs.writeFileSync(path.join(dir, 'job.js'), script);
    fs.writeFileSync(path.join(dir, 'job.mjs'), script);
    const e = env(srv.url, { NODE_OPTIONS: `--require ${GLOBAL}` });
    for (const args of [['-e', script], [path.join(dir, 'job.js')], [path.join(dir, 'job.mjs')]]) {
      const r = await runNode(args, { env: e, cwd: dir });
      assert.equal(r.code, 0, `${args}: ${r.stderr}`);
      assert.deepEqual(JSON.parse(r.stdout), { user: 'u7', promise: false }, String(args));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a slow service: the per-attempt timeout applies, idempotent calls are retried, then a CroniumTimeoutError', async () => {
    srv.requests.length = 0;
    srv.setSteps([hang()]);
    const { out, ms, r } = await run(`
      const cronium = require(${SYNC});
      const c = ${CATCH};
      console.log(JSON.stringify([c(() => cronium.getVariable('k')), c(() => cronium.incrementVariable('n'))]));`,
    env(srv.url, { CRONIUM_TIMEOUT: '0.3', CRONIUM_MAX_ATTEMPTS: '3' }));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(out[0].name, 'CroniumTimeoutError');
    assert.equal(out[1].name, 'CroniumTimeoutError');
    // 3 attempts for the GET, 1 for the increment (it may have been applied).
    assert.equal(srv.requests.filter((q) => q.method === 'GET').length, 3);
    assert.equal(srv.requests.filter((q) => q.method === 'POST').length, 1);
    assert.ok(ms >= 1200 && ms < 8000, `took ${ms} ms`);
  });

  it('a failing service: 503 is retried and the later success returned; 4xx errors keep status and code', async () => {
    srv.requests.length = 0;
    srv.setSteps([
      apiError(503, 'backend_unavailable', 'down'), apiError(503, 'backend_unavailable', 'down'),
      json(200, { success: true, data: { key: 'k', value: 7 } }),
      apiError(409, 'conflict', 'value is not a number'),
    ]);
    const { out, r } = await run(`
      const cronium = require(${SYNC});
      const c = ${CATCH};
      console.log(JSON.stringify([c(() => cronium.getVariable('k')), c(() => cronium.incrementVariable('k')),
                                  c(() => cronium.getVariable(''))]));`, env(srv.url));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(out[0], { value: 7 });
    assert.deepEqual(out[1], { name: 'CroniumAPIError', message: 'value is not a number', status: 409, code: 'conflict' });
    assert.equal(out[2].name, 'TypeError');
    assert.equal(srv.requests.length, 4);
    assert.ok(!r.stderr.includes('tok-sync-secret'));
  });

  it('a 502 backend_error is final (one attempt); a 502 without envelope is retried', async () => {
    srv.requests.length = 0;
    srv.setSteps([
      apiError(502, 'backend_error', 'the backend answered 500'),
      (req, res) => { res.writeHead(502, { 'Content-Type': 'text/html' }); res.end('<html>502</html>'); },
      json(200, { success: true, data: { key: 'k', value: 'after proxy' } }),
    ]);
    const { out, r } = await run(`
      const cronium = require(${SYNC});
      const c = ${CATCH};
      console.log(JSON.stringify([c(() => cronium.getVariable('k')), c(() => cronium.getVariable('k'))]));`, env(srv.url));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(out[0], { name: 'CroniumAPIError', message: 'the backend answered 500', status: 502, code: 'backend_error' });
    assert.deepEqual(out[1], { value: 'after proxy' });
    assert.equal(srv.requests.length, 3);
  });

  it('an unreachable service: a CroniumConnectionError after the attempts, quickly', async () => {
    const port = await freePort();
    const { out, ms, r } = await run(`
      const cronium = require(${SYNC});
      const c = ${CATCH};
      console.log(JSON.stringify([c(() => cronium.input()), c(() => cronium.setCondition(true))]));`,
    env(`http://127.0.0.1:${port}`, { CRONIUM_MAX_ATTEMPTS: '2' }));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(out[0].name, 'CroniumConnectionError');
    assert.equal(out[0].code, 'ECONNREFUSED');
    assert.equal(out[1].name, 'CroniumConnectionError');
    assert.ok(ms < 5000, `took ${ms} ms`);
  });

  it('missing settings throw at the call, synchronously, naming them', async () => {
    const { out, r } = await run(`
      const cronium = require(${SYNC});
      const c = ${CATCH};
      console.log(JSON.stringify(c(() => cronium.input())));`, cleanEnv());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(out.name, 'CroniumError');
    assert.match(out.message, /CRONIUM_EXECUTION_TOKEN/);
  });

  it('no hang at exit and no stray worker: the process ends right after the last call', async () => {
    srv.setSteps([json(200, { success: true, data: { a: 1 } })]);
    const { out, ms, r } = await run(`
      const { performance } = require('node:perf_hooks');
      const cronium = require(${SYNC});
      cronium.input();
      const t = performance.now();
      process.on('exit', () => { process.stdout.write(JSON.stringify({ exitAfterMs: performance.now() - t }) + '\\n'); });`,
    env(srv.url), { timeoutMs: 10000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.signal, null);
    assert.ok(out.exitAfterMs < 500, `the process lingered ${out.exitAfterMs} ms after the last call`);
    assert.ok(ms < 5000, `took ${ms} ms`);
  });

  it('no hang at exit when the last call timed out against a service that never answers', async () => {
    srv.setSteps([hang()]);
    const { out, ms, r } = await run(`
      const cronium = require(${SYNC});
      let name = '';
      try { cronium.getVariable('k'); } catch (e) { name = e.name; }
      console.log(JSON.stringify({ name }));`, env(srv.url, { CRONIUM_TIMEOUT: '0.2', CRONIUM_MAX_ATTEMPTS: '1' }),
    { timeoutMs: 10000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(out, { name: 'CroniumTimeoutError' });
    assert.ok(ms < 4000, `took ${ms} ms`);
  });

  it('the main thread sleeps while waiting (CPU time stays far below wall time)', async () => {
    srv.setSteps([(req, res) => setTimeout(() => { res.writeHead(200, { 'Content-Type': 'application/json' }); res.end('{"success":true,"data":1}'); }, 700)]);
    const { out, r } = await run(`
      const cronium = require(${SYNC});
      cronium.input(); // starts the worker
      const cpu0 = process.cpuUsage(); const t0 = Date.now();
      const v = cronium.input();
      const cpu = process.cpuUsage(cpu0); const wall = Date.now() - t0;
      console.log(JSON.stringify({ v, wall, cpuMs: (cpu.user + cpu.system) / 1000 }));`, env(srv.url));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(out.v, 1);
    assert.ok(out.wall >= 650, `wall ${out.wall}`);
    assert.ok(out.cpuMs < out.wall / 4, `cpu ${out.cpuMs} ms for ${out.wall} ms of waiting`);
  });

  it('CRONIUM_DEBUG=1 lines reach stderr from the main thread, without the token', async () => {
    srv.setSteps([json(200, { success: true, data: 1 })]);
    const { r } = await run(`require(${SYNC}).input(); console.log('{}');`, env(srv.url, { CRONIUM_DEBUG: '1' }));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /\[cronium\] GET \/executions\/e1\/input 200/);
    assert.ok(!r.stderr.includes('tok-sync-secret'));
  });
});

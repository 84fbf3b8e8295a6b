'use strict';
// Loading the package in a fresh process: require and import with no settings
// never throw, the first call says what is missing, CRONIUM_DEBUG=1 prints
// requests to stderr without the token, and the module-level functions use the
// settings of the environment.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const { startFaultServer, json, apiError } = require('../test-support/fault-server');
const { PACKAGE_DIR, cleanEnv, runNode } = require('../test-support/util');

const CJS = path.join(PACKAGE_DIR, 'index.js');
const ESM = pathToFileURL(path.join(PACKAGE_DIR, 'index.mjs')).href;
const TOKEN = 'header.PAYLOAD-SECRET-42.signature';

const EXPECTED_FUNCTIONS = [
  'input', 'output', 'getOutput', 'getVariable', 'setVariable', 'variableExists', 'deleteVariable',
  'incrementVariable', 'event', 'context', 'setCondition', 'getCondition', 'executeToolAction',
  'sendEmail', 'sendSlackMessage', 'sendDiscordMessage', 'getDefaultClient', 'configure',
];

// A script run in the child: loads the package, lists what it exports, then
// makes one call and prints how it ended.
const PROBE = `
  const names = Object.keys(m).filter((k) => typeof m[k] === 'function').sort();
  let outcome;
  try {
    await m.getVariable('x');
    outcome = 'resolved';
  } catch (err) {
    outcome = { name: err.name, message: err.message, isCronium: err instanceof m.CroniumError };
  }
  console.log(JSON.stringify({ names, outcome }));
`;

describe('loading without any setting', () => {
  it('require() works and the first call rejects naming the missing settings', async () => {
    const script = `(async () => { const m = require(${JSON.stringify(CJS)}); ${PROBE} })();`;
    const r = await runNode(['-e', script], { env: cleanEnv() });
    assert.equal(r.code, 0, r.stderr);
    const { names, outcome } = JSON.parse(r.stdout);
    for (const n of [...EXPECTED_FUNCTIONS, 'Cronium', 'CroniumError', 'CroniumAPIError']) assert.ok(names.includes(n), n);
    assert.equal(outcome.name, 'CroniumError');
    assert.equal(outcome.isCronium, true);
    assert.match(outcome.message, /CRONIUM_EXECUTION_TOKEN/);
    assert.match(outcome.message, /CRONIUM_EXECUTION_ID/);
    assert.equal(r.stderr, '');
  });

  it('import works and the first call rejects naming the missing settings', async () => {
    const script = `import * as m from ${JSON.stringify(ESM)}; ${PROBE}`;
    const r = await runNode(['--input-type=module', '-e', script], { env: cleanEnv() });
    assert.equal(r.code, 0, r.stderr);
    const { names, outcome } = JSON.parse(r.stdout);
    for (const n of [...EXPECTED_FUNCTIONS, 'Cronium', 'CroniumError', 'CroniumTimeoutError']) assert.ok(names.includes(n), n);
    assert.equal(outcome.name, 'CroniumError');
    assert.match(outcome.message, /CRONIUM_EXECUTION_TOKEN/);
    assert.equal(r.stderr, '');
  });

  it('import and require share one module (same classes, same default client)', async () => {
    const script = `
      import { createRequire } from 'node:module';
      import * as esm from ${JSON.stringify(ESM)};
      import def from ${JSON.stringify(ESM)};
      const cjs = createRequire(import.meta.url)(${JSON.stringify(CJS)});
      console.log(JSON.stringify([esm.Cronium === cjs.Cronium, def === cjs, esm.getDefaultClient() === cjs.getDefaultClient()]));
    `;
    const r = await runNode(['--input-type=module', '-e', script], { env: cleanEnv() });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [true, true, true]);
  });
});

describe('settings from the environment', () => {
  let srv;
  before(async () => {
    srv = await startFaultServer([json(200, { success: true, data: { key: 'x', value: 0 } })]);
  });
  after(async () => { await srv.close(); });

  it('the module-level functions use CRONIUM_API_ENDPOINT / CRONIUM_API_TOKEN and keep the prefix', async () => {
    srv.requests.length = 0;
    const script = `import { getVariable } from ${JSON.stringify(ESM)}; console.log(JSON.stringify(await getVariable('a/b')));`;
    const env = cleanEnv({
      CRONIUM_API_ENDPOINT: `${srv.url}/prefix/`, CRONIUM_API_TOKEN: TOKEN, CRONIUM_EXECUTION_ID: 'run-9',
    });
    const r = await runNode(['--input-type=module', '-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '0');
    assert.equal(srv.requests.length, 1);
    assert.equal(srv.requests[0].url, '/prefix/executions/run-9/variables/a%2Fb');
    assert.equal(srv.requests[0].headers.authorization, `Bearer ${TOKEN}`);
  });

  it('CRONIUM_DEBUG=1 prints method, path, status and duration, never the token', async () => {
    srv.setSteps([
      apiError(503, 'backend_unavailable', `down for ${TOKEN}`, { 'Retry-After': '0' }),
      json(200, { success: true, data: { key: 'x', value: 0 } }),
      apiError(404, 'variable_not_found', 'variable not found'),
      apiError(401, 'invalid_token', `bad token ${TOKEN}`),
    ]);
    const script = `
      const m = require(${JSON.stringify(CJS)});
      (async () => {
        console.log(await m.getVariable('k'));
        console.log(await m.getVariable('gone'));
        try { await m.input(); } catch (e) { console.error(String(e)); }
      })();`;
    const env = cleanEnv({
      CRONIUM_RUNTIME_API: srv.url, CRONIUM_EXECUTION_TOKEN: TOKEN, CRONIUM_EXECUTION_ID: 'e1', CRONIUM_DEBUG: '1',
    });
    const r = await runNode(['-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '0\nnull\n');
    const lines = r.stderr.trim().split('\n');
    assert.match(lines[0], /^\[cronium\] GET \/executions\/e1\/variables\/k 503 \d+ms \(attempt 1\/3, retrying in 0ms\)$/);
    assert.match(lines[1], /^\[cronium\] GET \/executions\/e1\/variables\/k 200 \d+ms$/);
    assert.match(lines[2], /^\[cronium\] GET \/executions\/e1\/variables\/gone 404 \d+ms$/);
    assert.match(lines[3], /^\[cronium\] GET \/executions\/e1\/input 401 \d+ms$/);
    assert.match(lines[4], /^CroniumAPIError: bad token \[redacted\]$/);
    assert.ok(!r.stderr.includes(TOKEN));
    assert.ok(!r.stdout.includes(TOKEN));
  });

  it('prints nothing on stderr without CRONIUM_DEBUG', async () => {
    srv.setSteps([json(200, { success: true, data: 5 })]);
    const script = `require(${JSON.stringify(CJS)}).input().then((v) => console.log(v));`;
    const env = cleanEnv({ CRONIUM_RUNTIME_API: srv.url, CRONIUM_EXECUTION_TOKEN: TOKEN, CRONIUM_EXECUTION_ID: 'e1' });
    const r = await runNode(['-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '5\n');
    assert.equal(r.stderr, '');
  });
});

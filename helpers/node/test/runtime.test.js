'use strict';
// Every function of the helper against the real cronium-runtime binary in dev
// mode ($CRONIUM_RUNTIME_BIN, default <repo>/build/cronium-runtime). Without
// the binary these tests fail: the `before` hook cannot start it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');
const { pathToFileURL } = require('node:url');

const {
  Cronium, CroniumAPIError, CroniumError,
} = require('..');
const { startRuntime } = require('../test-support/runtime');
const { PACKAGE_DIR, cleanEnv, runNode } = require('../test-support/util');

const INPUT = {
  zero: 0,
  no: false,
  empty: '',
  nothing: null,
  text: 'héllo wörld ✓ 日本 🎉',
  nested: { list: [1, 2.5, -3, { deep: [null, false, 0, ''] }], obj: {} },
};
const CONTEXT = {
  executionId: 'node-sdk-exec',
  jobId: 'job-42',
  eventId: 'event-7',
  userId: 'user-node',
  metadata: { input: INPUT, note: 'seeded by the node tests' },
  event: { id: 'event-7', name: 'Nightly report ✓', type: 'NODEJS', tags: ['a', 'b'] },
  user: { id: 'user-node', email: 'node@example.com' },
};

// Values that must come back exactly as they were stored.
const VALUES = [
  0, false, '', null, 1, -7, 2.5, 1e21, true, 'plain', '42', 'true', 'null', '{"a":1}', 'ünïcödé ✓ 🎉 日本',
  'line\nbreak\t"quoted" \\ back', [], {}, [0, false, '', null], { a: { b: { c: [1, { d: 'ü' }] } }, x: null },
];

let rt;
let counter = 0;

function freshId(label) {
  counter += 1;
  return `${label}-${counter}-${crypto.randomBytes(3).toString('hex')}`;
}

async function clientFor(executionId, userId, extra = {}) {
  const token = await rt.token(executionId, userId);
  return new Cronium({ apiUrl: rt.url, token, executionId, retryDelay: 20, maxRetryDelay: 100, env: {}, ...extra });
}

describe('cronium-runtime in dev mode', () => {
  before(async () => {
    rt = await startRuntime({ context: CONTEXT });
  });
  after(async () => {
    if (rt) await rt.stop();
  });

  it('input() returns the seeded input exactly, falsy and unicode values included', async () => {
    const c = await clientFor(CONTEXT.executionId, CONTEXT.userId);
    assert.deepEqual(await c.input(), INPUT);
  });

  it('input() is {} for an execution without input', async () => {
    const c = await clientFor(freshId('noinput'), 'u-fresh');
    assert.deepEqual(await c.input(), {});
  });

  it('context() has the fields of the contract and the seeded values', async () => {
    const c = await clientFor(CONTEXT.executionId, CONTEXT.userId);
    const ctx = await c.context();
    assert.equal(ctx.executionId, CONTEXT.executionId);
    assert.equal(ctx.jobId, CONTEXT.jobId);
    assert.equal(ctx.eventId, CONTEXT.eventId);
    assert.equal(ctx.userId, CONTEXT.userId);
    assert.equal(ctx.eventName, CONTEXT.event.name);
    assert.equal(ctx.eventType, CONTEXT.event.type);
    assert.deepEqual(ctx.metadata, CONTEXT.metadata);
    assert.deepEqual(ctx.event, CONTEXT.event);
    assert.deepEqual(ctx.user, CONTEXT.user);
    assert.equal(typeof ctx.startTime, 'string');
    assert.ok(!Number.isNaN(Date.parse(ctx.startTime)), ctx.startTime);
    assert.deepEqual(Object.keys(ctx).sort(), [
      'event', 'eventId', 'eventName', 'eventType', 'executionId', 'jobId', 'metadata', 'startTime', 'user', 'userId',
    ]);
  });

  it('context(field) returns one field, falsy values included, and null when absent', async () => {
    const c = await clientFor(CONTEXT.executionId, CONTEXT.userId);
    assert.equal(await c.context('event.name'), CONTEXT.event.name);
    assert.equal(await c.context('metadata.input.zero'), 0);
    assert.equal(await c.context('metadata.input.no'), false);
    assert.equal(await c.context('metadata.input.empty'), '');
    assert.deepEqual(await c.context('metadata.input.nested'), INPUT.nested);
    assert.equal(await c.context('metadata.no.such.field'), null);
  });

  it('event() returns the event object, or {} when there is none', async () => {
    const seeded = await clientFor(CONTEXT.executionId, CONTEXT.userId);
    assert.deepEqual(await seeded.event(), CONTEXT.event);
    const fresh = await clientFor(freshId('noevent'), 'u-fresh');
    assert.deepEqual(await fresh.event(), {});
    const ctx = await fresh.context();
    assert.equal(ctx.event, null);
    assert.equal(ctx.eventName, null);
    assert.equal(ctx.eventType, null);
    assert.equal(ctx.userId, 'u-fresh');
  });

  it('output() and getOutput() round-trip every kind of value', async () => {
    const c = await clientFor(freshId('output'), 'u-output');
    assert.equal(await c.getOutput(), null);
    for (const v of VALUES) {
      await c.output(v);
      assert.deepEqual(await c.getOutput(), v, JSON.stringify(v));
    }
  });

  it('setVariable() and getVariable() round-trip every kind of value', async () => {
    const c = await clientFor(freshId('vars'), 'u-vars');
    for (const [i, v] of VALUES.entries()) {
      await c.setVariable(`v${i}`, v);
    }
    // A string that spells JSON ('42', 'true', '{"a":1}') reads back as the value it
    // spells, in dev mode as in production (docs/api.md §6).
    const readBack = (v) => {
      if (typeof v !== 'string') return v;
      try {
        const p = JSON.parse(v);
        return typeof p === 'string' ? v : p;
      } catch {
        return v;
      }
    };
    for (const [i, v] of VALUES.entries()) {
      assert.deepEqual(await c.getVariable(`v${i}`), readBack(v), JSON.stringify(v));
      assert.equal(await c.variableExists(`v${i}`), true, JSON.stringify(v));
    }
  });

  it('a missing variable is null, does not exist, and deleting it says false', async () => {
    const c = await clientFor(freshId('missing'), 'u-missing');
    assert.equal(await c.getVariable('never-set'), null);
    assert.equal(await c.variableExists('never-set'), false);
    assert.equal(await c.deleteVariable('never-set'), false);
  });

  it('deleteVariable() removes a variable, also one holding null or false', async () => {
    const c = await clientFor(freshId('delete'), 'u-delete');
    for (const v of [null, false, 0, 'x']) {
      await c.setVariable('d', v);
      assert.equal(await c.variableExists('d'), true);
      assert.equal(await c.deleteVariable('d'), true);
      assert.equal(await c.variableExists('d'), false);
      assert.equal(await c.getVariable('d'), null);
    }
  });

  it('keys with "/", "%", spaces, reserved characters and unicode are distinct and exact', async () => {
    const c = await clientFor(freshId('keys'), 'u-keys');
    const keys = ['a/b', 'a%2Fb', 'a b', 'a+b', '?x=1&y=#z', 'ключ/✓ 🎉', '日本語', '/lead', 'trail/', '...', 'a/../b'];
    for (const [i, k] of keys.entries()) await c.setVariable(k, { i, k });
    for (const [i, k] of keys.entries()) {
      assert.deepEqual(await c.getVariable(k), { i, k }, k);
      assert.equal(await c.variableExists(k), true, k);
    }
    assert.equal(await c.getVariable('a'), null);
    assert.equal(await c.getVariable('b'), null);
    assert.equal(await c.deleteVariable('a/b'), true);
    assert.equal(await c.getVariable('a/b'), null);
    assert.deepEqual(await c.getVariable('a%2Fb'), { i: 1, k: 'a%2Fb' });
  });

  it('appendVariable: atomic, separator, non-string is a 409', async () => {
    const c = await clientFor(freshId('append'), 'u-append');
    assert.equal(await c.appendVariable('log', 'a'), 'a');
    assert.equal(await c.appendVariable('log', 'b', ';'), 'a;b');
    await Promise.all(Array.from({ length: 20 }, () => c.appendVariable('conc', 'x')));
    assert.equal(await c.getVariable('conc'), 'x'.repeat(20));
    await c.setVariable('num', 5);
    await assert.rejects(c.appendVariable('num', 'x'), (e) => e.statusCode === 409 && e.code === 'conflict');
  });

  it('incrementVariable() counts from 0, takes any number, and is atomic', async () => {
    const c = await clientFor(freshId('incr'), 'u-incr');
    assert.equal(await c.incrementVariable('n'), 1);
    assert.equal(await c.incrementVariable('n', 5), 6);
    assert.equal(await c.incrementVariable('n', -2.5), 3.5);
    assert.equal(await c.getVariable('n'), 3.5);
    await c.setVariable('z', 0);
    assert.equal(await c.incrementVariable('z', 0), 0);
    assert.equal(await c.incrementVariable('a/b ✓'), 1);

    // 3 executions of one user, 60 concurrent increments: exactly 60.
    const clients = await Promise.all([freshId('inc-a'), freshId('inc-b'), freshId('inc-c')].map((id) => clientFor(id, 'u-conc')));
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => clients[i % 3].incrementVariable('shared')));
    assert.deepEqual([...results].sort((a, b) => a - b), Array.from({ length: 60 }, (_, i) => i + 1));
    assert.equal(await clients[0].getVariable('shared'), 60);
  });

  it('incrementVariable() on a value that is not a number is a 409 conflict', async () => {
    const c = await clientFor(freshId('conflict'), 'u-conflict');
    await c.setVariable('s', 'text');
    await assert.rejects(c.incrementVariable('s'), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 409);
      assert.equal(err.code, 'conflict');
      assert.equal(typeof err.message, 'string');
      assert.ok(err.message.length > 0);
      return true;
    });
    assert.equal(await c.getVariable('s'), 'text');
  });

  it('variables are shared per user, not per execution', async () => {
    const a = await clientFor(freshId('share-a'), 'u-share');
    const b = await clientFor(freshId('share-b'), 'u-share');
    const other = await clientFor(freshId('share-c'), 'u-other');
    await a.setVariable('common', { from: 'a' });
    assert.deepEqual(await b.getVariable('common'), { from: 'a' });
    assert.equal(await other.getVariable('common'), null);
  });

  it('setCondition() and getCondition()', async () => {
    const c = await clientFor(freshId('cond'), 'u-cond');
    assert.equal(await c.getCondition(), null);
    await c.setCondition(true);
    assert.equal(await c.getCondition(), true);
    await c.setCondition(false);
    assert.equal(await c.getCondition(), false);
  });

  it('executeToolAction() sends params and returns the tool result', async () => {
    const c = await clientFor(freshId('tool'), 'u-tool');
    const params = { url: 'https://example.invalid/x', n: 0, flag: false, list: ['ü'] };
    const r = await c.executeToolAction('http', 'request', params);
    assert.deepEqual(r, { success: true, data: { tool: 'http', action: 'request', params }, metadata: { dev: true } });
  });

  it('sendEmail(), sendSlackMessage(), sendDiscordMessage() call their tools', async () => {
    const c = await clientFor(freshId('send'), 'u-send');
    const email = await c.sendEmail({ to: 'a@example.com,b@example.com', subject: 'Hi ✓', body: 'Body', html: false });
    assert.equal(email.success, true);
    assert.deepEqual(email.data, {
      tool: 'email',
      action: 'send_message',
      params: { to: ['a@example.com', 'b@example.com'], subject: 'Hi ✓', body: 'Body', html: false },
    });
    const slack = await c.sendSlackMessage({ channel: '#ops', text: 'deploy done', username: 'bot' });
    assert.deepEqual(slack.data, { tool: 'slack', action: 'send_message', params: { channel: '#ops', text: 'deploy done', username: 'bot' } });
    const discord = await c.sendDiscordMessage({ channelId: '123', content: 'hello', embeds: [{ title: 'T' }] });
    assert.deepEqual(discord.data, {
      tool: 'discord', action: 'send_message', params: { channelId: '123', content: 'hello', embeds: [{ title: 'T' }] },
    });
  });

  it('errors carry status and code and are not retried: wrong execution, bad token, bad key', async () => {
    const id = freshId('err');
    const good = await rt.token(id, 'u-err');
    const lines = [];
    const mismatch = new Cronium({
      apiUrl: rt.url, token: good, executionId: freshId('other'), env: {}, debug: true, logger: (l) => lines.push(l),
    });
    await assert.rejects(mismatch.getVariable('k'), (err) => err.statusCode === 403 && err.code === 'execution_mismatch');
    assert.equal(lines.length, 1, 'a 403 is not retried');

    const forged = new Cronium({ apiUrl: rt.url, token: `${good}x`, executionId: id, env: {} });
    await assert.rejects(forged.input(), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 401);
      assert.equal(err.code, 'invalid_token');
      assert.ok(!err.message.includes(good));
      return true;
    });

    const c = await clientFor(id, 'u-err');
    await assert.rejects(c.setVariable('x'.repeat(256), 1), (err) => err.statusCode === 400 && err.code === 'invalid_key');
    await assert.rejects(c.setVariable('ctl\u0001', 1), (err) => err.statusCode === 400 && err.code === 'invalid_key');
  });

  it('a body over the size limit is a 413 payload_too_large, not retried', async () => {
    const lines = [];
    const c = await clientFor(freshId('big'), 'u-big', { debug: true, logger: (l) => lines.push(l) });
    for (const size of [1.5, 2, 4]) {
      lines.length = 0;
      await assert.rejects(c.setVariable('big', 'x'.repeat(size * 1024 * 1024)), (err) => {
        assert.ok(err instanceof CroniumAPIError, `${size} MiB: ${err}`);
        assert.equal(err.statusCode, 413);
        assert.equal(err.code, 'payload_too_large');
        return true;
      });
      assert.equal(lines.length, 1, lines.join('\n'));
    }
    assert.equal(await c.variableExists('big'), false);
  });

  it('works through a base URL with a path prefix', async () => {
    // A reverse proxy on 127.0.0.1 that serves the runtime under /cronium/api.
    const target = new URL(rt.url);
    const seen = [];
    const proxy = http.createServer((req, res) => {
      seen.push(req.url);
      if (!req.url.startsWith('/cronium/api/')) {
        res.writeHead(404).end();
        return;
      }
      const up = http.request({
        host: target.hostname, port: target.port, method: req.method, path: req.url.slice('/cronium/api'.length), headers: req.headers,
      }, (upRes) => {
        res.writeHead(upRes.statusCode, upRes.headers);
        upRes.pipe(res);
      });
      up.on('error', () => res.writeHead(502).end());
      req.pipe(up);
    });
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const id = freshId('prefix');
      const c = new Cronium({
        apiUrl: `http://127.0.0.1:${proxy.address().port}/cronium/api/`, token: await rt.token(id, 'u-prefix'), executionId: id, env: {},
      });
      await c.setVariable('p/q', [1, 'ü']);
      assert.deepEqual(await c.getVariable('p/q'), [1, 'ü']);
      assert.equal(await c.incrementVariable('count'), 1);
      assert.deepEqual(seen, [
        `/cronium/api/executions/${id}/variables/p%2Fq`,
        `/cronium/api/executions/${id}/variables/p%2Fq`,
        `/cronium/api/executions/${id}/variables/count/increment`,
      ]);
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('the module-level functions, with require and with import, read the environment', async () => {
    const id = freshId('env');
    const token = await rt.token(id, 'u-env');
    const steps = `
      const out = [];
      await m.setVariable('k/1', { a: [0, false, '', null] });
      out.push(await m.getVariable('k/1'));
      out.push(await m.getVariable('absent'));
      out.push(await m.variableExists('k/1'));
      out.push(await m.incrementVariable('hits', 2));
      await m.output({ done: true });
      out.push(await m.getOutput());
      await m.setCondition(true);
      out.push(await m.getCondition());
      out.push(await m.event());
      out.push(await m.deleteVariable('k/1'));
      out.push((await m.executeToolAction('t', 'a', { p: 1 })).data);
      console.log(JSON.stringify(out));`;
    const cjs = `(async () => { const m = require(${JSON.stringify(path.join(PACKAGE_DIR, 'index.js'))}); ${steps} })()`;
    const esm = `import * as m from ${JSON.stringify(pathToFileURL(path.join(PACKAGE_DIR, 'index.mjs')).href)}; ${steps}`;
    const env = cleanEnv({ CRONIUM_RUNTIME_API: rt.url, CRONIUM_EXECUTION_TOKEN: token, CRONIUM_EXECUTION_ID: id });
    const first = await runNode(['-e', cjs], { env });
    assert.equal(first.code, 0, first.stderr);
    // The second run sees the first run's variables: the increment goes on from 2.
    const second = await runNode(['--input-type=module', '-e', esm], { env });
    assert.equal(second.code, 0, second.stderr);
    const expected = (hits) => [
      { a: [0, false, '', null] }, null, true, hits, { done: true }, true, {}, true,
      { tool: 't', action: 'a', params: { p: 1 } },
    ];
    assert.deepEqual(JSON.parse(first.stdout), expected(2));
    assert.deepEqual(JSON.parse(second.stdout), expected(4));
    assert.equal(first.stderr + second.stderr, '');
  });

  it('CRONIUM_DEBUG=1 shows each request against the service, without the token', async () => {
    const id = freshId('debug');
    const token = await rt.token(id, 'u-debug');
    const script = `
      const m = require(${JSON.stringify(path.join(PACKAGE_DIR, 'index.js'))});
      (async () => { await m.setVariable('k', 1); await m.getVariable('nope'); await m.variableExists('k'); })();`;
    const env = cleanEnv({
      CRONIUM_RUNTIME_API: rt.url, CRONIUM_EXECUTION_TOKEN: token, CRONIUM_EXECUTION_ID: id, CRONIUM_DEBUG: '1',
    });
    const r = await runNode(['-e', script], { env });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 3, r.stderr);
    assert.match(lines[0], new RegExp(`^\\[cronium\\] PUT /executions/${id}/variables/k 200 \\d+ms$`));
    assert.match(lines[1], new RegExp(`^\\[cronium\\] GET /executions/${id}/variables/nope 404 \\d+ms$`));
    assert.match(lines[2], new RegExp(`^\\[cronium\\] HEAD /executions/${id}/variables/k 200 \\d+ms$`));
    assert.ok(!r.stderr.includes(token));
  });

  it('with no settings at all, the first call fails with a clear error and nothing is sent', async () => {
    const c = new Cronium({ env: {} });
    await assert.rejects(c.input(), (err) => err instanceof CroniumError && /CRONIUM_EXECUTION_TOKEN/.test(err.message));
  });
});

describe('cronium-runtime rate limit', () => {
  let limited;
  before(async () => {
    limited = await startRuntime({ context: CONTEXT, env: { RATE_LIMIT_PER_MIN: '60', RATE_LIMIT_BURST: '2' } });
  });
  after(async () => {
    if (limited) await limited.stop();
  });

  it('a 429 is retried after Retry-After and the call succeeds', async () => {
    const id = freshId('limited');
    const lines = [];
    const c = new Cronium({
      apiUrl: limited.url, token: await limited.token(id, 'u-limit'), executionId: id, env: {}, debug: true, logger: (l) => lines.push(l),
    });
    const started = Date.now();
    for (let i = 0; i < 4; i += 1) await c.setVariable(`k${i}`, i);
    const took = Date.now() - started;
    const limitedLines = lines.filter((l) => / 429 \d+ms \(attempt \d\/3, retrying in \d+ms\)$/.test(l));
    assert.ok(limitedLines.length >= 1, lines.join('\n'));
    assert.ok(took >= 900, `took only ${took}ms`);
    assert.equal(await c.getVariable('k3'), 3);
  });
});

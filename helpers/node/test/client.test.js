'use strict';
// The client against a scripted fault server on 127.0.0.1: what goes on the
// wire for each call, retries, timeouts, Retry-After, error fields, redaction.

const { describe, it, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');

const {
  Cronium, CroniumError, CroniumAPIError, CroniumConnectionError, CroniumTimeoutError,
} = require('..');
const { startFaultServer, json, text, hang, apiError } = require('../test-support/fault-server');
const { freePort } = require('../test-support/util');

const TOKEN = 'tok.SECRET-abc123.sig';
const OK = json(200, { success: true });

function client(url, extra = {}) {
  return new Cronium({
    apiUrl: url,
    token: TOKEN,
    executionId: 'exec-1',
    retryDelay: 10,
    maxRetryDelay: 40,
    timeout: 2000,
    env: {},
    ...extra,
  });
}

describe('requests on the wire', () => {
  let srv;
  beforeEach(async () => {
    if (srv) await srv.close();
    srv = await startFaultServer([OK]);
  });
  after(async () => { if (srv) await srv.close(); });

  it('sends the bearer token, JSON headers and the execution path', async () => {
    srv.setSteps([json(200, { success: true, data: { a: 1 } })]);
    const value = await client(srv.url).input();
    assert.deepEqual(value, { a: 1 });
    assert.equal(srv.requests.length, 1);
    const r = srv.requests[0];
    assert.equal(r.method, 'GET');
    assert.equal(r.url, '/executions/exec-1/input');
    assert.equal(r.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(r.headers.accept, 'application/json');
  });

  it('maps every function to its method, path and body', async () => {
    const c = client(srv.url);
    const cases = [
      [() => c.output({ x: [1, 2] }), 'POST', '/executions/exec-1/output', { data: { x: [1, 2] } }],
      [() => c.output(undefined), 'POST', '/executions/exec-1/output', { data: null }],
      [() => c.getOutput(), 'GET', '/executions/exec-1/output', ''],
      [() => c.setVariable('k', 0), 'PUT', '/executions/exec-1/variables/k', { value: 0 }],
      [() => c.setVariable('k', ''), 'PUT', '/executions/exec-1/variables/k', { value: '' }],
      [() => c.setVariable('k', false), 'PUT', '/executions/exec-1/variables/k', { value: false }],
      [() => c.setVariable('k', null), 'PUT', '/executions/exec-1/variables/k', { value: null }],
      [() => c.variableExists('k'), 'HEAD', '/executions/exec-1/variables/k', ''],
      [() => c.deleteVariable('k'), 'DELETE', '/executions/exec-1/variables/k', ''],
      [() => c.setCondition(false), 'POST', '/executions/exec-1/condition', { condition: false }],
      [() => c.getCondition(), 'GET', '/executions/exec-1/condition', ''],
      [() => c.context(), 'GET', '/executions/exec-1/context', ''],
      [() => c.context('event.name'), 'GET', '/executions/exec-1/context?field=event.name', ''],
      [() => c.executeToolAction('http', 'get', { url: 'u' }), 'POST', '/tool-actions/execute',
        { tool: 'http', action: 'get', params: { url: 'u' } }],
    ];
    for (const [call, method, url, body] of cases) {
      srv.setSteps([json(200, { success: true, data: { key: 'k', value: 1, condition: null } })]);
      srv.requests.length = 0;
      await call();
      assert.equal(srv.requests.length, 1, `${method} ${url}`);
      const r = srv.requests[0];
      assert.equal(r.method, method);
      assert.equal(r.url, url);
      if (body === '') assert.equal(r.body, '');
      else {
        assert.deepEqual(JSON.parse(r.body), body);
        assert.match(r.headers['content-type'], /^application\/json/);
      }
    }
  });

  it('increments with one atomic POST, never a read and a write', async () => {
    srv.setSteps([json(200, { success: true, data: { key: 'n', value: 7 } })]);
    const c = client(srv.url);
    assert.equal(await c.incrementVariable('n', 5), 7);
    assert.equal(await c.incrementVariable('n'), 7);
    assert.deepEqual(srv.requests.map((r) => [r.method, r.url, JSON.parse(r.body)]), [
      ['POST', '/executions/exec-1/variables/n/increment', { by: 5 }],
      ['POST', '/executions/exec-1/variables/n/increment', { by: 1 }],
    ]);
  });

  it('percent-encodes keys and the execution id with encodeURIComponent', async () => {
    const c = client(srv.url, { executionId: 'ex/1 ü' });
    await c.setVariable('a/b c?d#e%f', 1);
    await c.setVariable('ключ✓', 1);
    assert.equal(srv.requests[0].url, '/executions/ex%2F1%20%C3%BC/variables/a%2Fb%20c%3Fd%23e%25f');
    assert.equal(srv.requests[1].url, `/executions/ex%2F1%20%C3%BC/variables/${encodeURIComponent('ключ✓')}`);
  });

  it('returns falsy values exactly; absent data is null, but {} for input()', async () => {
    const c = client(srv.url);
    for (const v of [0, false, '', null, { a: { b: [0, false, '', null] } }, 'ü✓🎉']) {
      srv.setSteps([json(200, { success: true, data: { key: 'k', value: v } })]);
      assert.deepEqual(await c.getVariable('k'), v);
      srv.setSteps([json(200, { success: true, data: v })]);
      assert.deepEqual(await c.input(), v === null ? {} : v);
      assert.deepEqual(await c.getOutput(), v);
    }
    srv.setSteps([json(200, { success: true })]);
    assert.deepEqual(await c.input(), {});
    assert.equal(await c.getOutput(), null);
    assert.equal(await c.context('no.such.field'), null);
  });

  it('treats 404 variable_not_found as null / false', async () => {
    srv.setSteps([apiError(404, 'variable_not_found', 'variable not found')]);
    const c = client(srv.url);
    assert.equal(await c.getVariable('missing'), null);
    assert.equal(await c.deleteVariable('missing'), false);
    assert.equal(await c.variableExists('missing'), false);
    assert.equal(srv.requests.length, 3, 'a 404 is not retried');
  });

  it('does not turn other 404s into null', async () => {
    srv.setSteps([apiError(404, 'execution_not_found', 'execution not found')]);
    await assert.rejects(client(srv.url).getVariable('k'), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 404);
      assert.equal(err.code, 'execution_not_found');
      return true;
    });
  });

  it('sends the email, slack and discord tool actions with their parameters', async () => {
    srv.setSteps([json(200, { success: true, data: { success: true, data: { id: 1 } } })]);
    const c = client(srv.url);
    const r = await c.sendEmail({ to: 'a@x.io, b@x.io', subject: 'S', body: 'B', cc: ['c@x.io'], html: true });
    assert.deepEqual(r, { success: true, data: { id: 1 } });
    await c.sendSlackMessage({ channel: '#ops', text: 'hi', icon_emoji: ':x:' });
    await c.sendDiscordMessage({ channelId: '42', content: 'yo', embeds: [{ title: 't' }] });
    const bodies = srv.requests.map((q) => JSON.parse(q.body));
    assert.deepEqual(bodies, [
      { tool: 'email', action: 'send_message', params: { to: ['a@x.io', 'b@x.io'], subject: 'S', body: 'B', cc: ['c@x.io'], html: true } },
      { tool: 'slack', action: 'send_message', params: { channel: '#ops', text: 'hi', icon_emoji: ':x:' } },
      { tool: 'discord', action: 'send_message', params: { channelId: '42', content: 'yo', embeds: [{ title: 't' }] } },
    ]);
    assert.ok(srv.requests.every((q) => q.url === '/tool-actions/execute'));
  });

  it('rejects bad arguments before sending anything', async () => {
    const c = client(srv.url);
    await assert.rejects(c.getVariable(''), TypeError);
    await assert.rejects(c.getVariable(5), TypeError);
    await assert.rejects(c.setVariable('..', 1), TypeError);
    await assert.rejects(c.incrementVariable('.'), TypeError);
    await assert.rejects(c.setCondition('yes'), TypeError);
    await assert.rejects(c.incrementVariable('n', '2'), TypeError);
    await assert.rejects(c.incrementVariable('n', NaN), TypeError);
    await assert.rejects(c.setVariable('k', 10n), TypeError);
    await assert.rejects(c.sendEmail({ subject: 's', body: 'b' }), TypeError);
    assert.equal(srv.requests.length, 0);
  });

  it('keeps the path prefix of the base URL', async () => {
    srv.setSteps([json(200, { success: true, data: { key: 'a/b', value: 1 } })]);
    await client(`${srv.url}/runtime/v1/`).getVariable('a/b');
    await client(`${srv.url}/runtime/v1`).input();
    assert.deepEqual(srv.requests.map((r) => r.url), [
      '/runtime/v1/executions/exec-1/variables/a%2Fb',
      '/runtime/v1/executions/exec-1/input',
    ]);
  });
});

describe('retries and errors', () => {
  const servers = [];
  async function server(steps) {
    const s = await startFaultServer(steps);
    servers.push(s);
    return s;
  }
  after(async () => { await Promise.all(servers.map((s) => s.close())); });

  it('retries after 503 and then succeeds, re-sending the whole body', async () => {
    const srv = await server([apiError(503, 'backend_unavailable', 'down'), OK]);
    await client(srv.url).setVariable('k', { big: 'x'.repeat(5000) });
    assert.equal(srv.requests.length, 2);
    assert.equal(srv.requests[0].body, srv.requests[1].body);
    assert.equal(JSON.parse(srv.requests[1].body).value.big.length, 5000);
  });

  it('gives up after maxAttempts 5xx answers with the last error', async () => {
    const srv = await server([apiError(500, 'internal', 'boom')]);
    await assert.rejects(client(srv.url, { maxAttempts: 4 }).input(), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 500);
      assert.equal(err.code, 'internal');
      assert.equal(err.message, 'boom');
      return true;
    });
    assert.equal(srv.requests.length, 4);
  });

  it('never retries a 400 and exposes status, code, message and request id', async () => {
    const srv = await server([apiError(400, 'invalid_body', 'value is required', { 'X-Request-Id': 'rid-7' })]);
    await assert.rejects(client(srv.url).setVariable('k', 1), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.ok(err instanceof CroniumError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, 'CroniumAPIError');
      assert.equal(err.statusCode, 400);
      assert.equal(err.code, 'invalid_body');
      assert.equal(err.message, 'value is required');
      assert.equal(err.requestId, 'rid-7');
      return true;
    });
    assert.equal(srv.requests.length, 1);
  });

  it('does not retry 401, 403, 409 or 413', async () => {
    for (const [status, code] of [[401, 'invalid_token'], [403, 'execution_mismatch'], [409, 'conflict'], [413, 'payload_too_large']]) {
      const srv = await server([apiError(status, code, 'no')]);
      await assert.rejects(client(srv.url).incrementVariable('k'), (err) => err.statusCode === status && err.code === code);
      assert.equal(srv.requests.length, 1, String(status));
    }
  });

  it('reports the status of a non-JSON error body', async () => {
    const srv = await server([text(502, '<html>Bad Gateway</html>')]);
    await assert.rejects(client(srv.url, { maxAttempts: 2 }).getVariable('k'), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 502);
      assert.equal(err.code, null);
      assert.match(err.message, /502/);
      return true;
    });
    assert.equal(srv.requests.length, 2, '502 is retried');
  });

  it('a 502 backend_error from the runtime is final: one attempt, its status and code', async () => {
    const srv = await server([apiError(502, 'backend_error', 'the backend answered 500'), OK]);
    await assert.rejects(client(srv.url).getVariable('k'), (err) => {
      assert.ok(err instanceof CroniumAPIError);
      assert.equal(err.statusCode, 502);
      assert.equal(err.code, 'backend_error');
      assert.equal(err.message, 'the backend answered 500');
      return true;
    });
    assert.equal(srv.requests.length, 1, '502 backend_error is not retried');
  });

  it('a 502 without the runtime envelope (a proxy) is still retried for a GET', async () => {
    const srv = await server([text(502, '<html>502 Bad Gateway</html>'),
      json(200, { success: true, data: { key: 'k', value: 'after proxy' } })]);
    assert.equal(await client(srv.url).getVariable('k'), 'after proxy');
    assert.equal(srv.requests.length, 2);
  });

  it('treats success:false in a 200 answer as an API error', async () => {
    const srv = await server([json(200, { success: false, error: 'Bad', message: 'nope', code: 'weird' })]);
    await assert.rejects(client(srv.url).input(), (err) => err instanceof CroniumAPIError && err.statusCode === 200 && err.code === 'weird');
  });

  it('retries after connection refused, then reaches the server', async () => {
    const port = await freePort();
    const c = client(`http://127.0.0.1:${port}`, { retryDelay: 400, maxRetryDelay: 400, maxAttempts: 3 });
    const lines = [];
    c.debug = true;
    c.logger = (l) => lines.push(l);
    const pending = c.input();
    // The first attempt is refused; the server comes up before the retry (200 to 400 ms later).
    await new Promise((r) => setTimeout(r, 60));
    const srv = await startFaultServer([json(200, { success: true, data: 'late' })], { port });
    servers.push(srv);
    assert.equal(await pending, 'late');
    assert.equal(srv.requests.length, 1);
    assert.match(lines[0], /GET \/executions\/exec-1\/input ECONNREFUSED \d+ms \(attempt 1\/3, retrying/);
  });

  it('fails with CroniumConnectionError when nothing listens', async () => {
    const port = await freePort();
    const lines = [];
    const c = client(`http://127.0.0.1:${port}`, { maxAttempts: 3, debug: true, logger: (l) => lines.push(l) });
    await assert.rejects(c.incrementVariable('k'), (err) => {
      assert.ok(err instanceof CroniumConnectionError);
      assert.equal(err.code, 'ECONNREFUSED');
      return true;
    });
    assert.equal(lines.length, 3, 'a refused connection is retried even for an increment');
  });

  it('times out a silent server, retrying idempotent calls', async () => {
    const srv = await server([hang()]);
    const started = Date.now();
    await assert.rejects(client(srv.url, { timeout: 150, maxAttempts: 2 }).getVariable('k'), (err) => {
      assert.ok(err instanceof CroniumTimeoutError);
      assert.equal(err.timeout, 150);
      return true;
    });
    const took = Date.now() - started;
    assert.equal(srv.requests.length, 2);
    assert.ok(took >= 300 && took < 3000, `took ${took}ms`);
  });

  it('does not repeat an increment or a tool action whose outcome is unknown', async () => {
    const srv = await server([hang()]);
    await assert.rejects(client(srv.url, { timeout: 150 }).incrementVariable('k'), CroniumTimeoutError);
    assert.equal(srv.requests.length, 1);
    await assert.rejects(client(srv.url, { timeout: 150 }).executeToolAction('email', 'send_message', {}), CroniumTimeoutError);
    assert.equal(srv.requests.length, 2);
    const srv2 = await server([apiError(503, 'backend_unavailable', 'down'), OK]);
    await assert.rejects(client(srv2.url).incrementVariable('k'), (err) => err.statusCode === 503);
    assert.equal(srv2.requests.length, 1);
  });

  it('honours Retry-After on 429, also for an increment', async () => {
    const srv = await server([
      apiError(429, 'rate_limited', 'slow down', { 'Retry-After': '1' }),
      json(200, { success: true, data: { key: 'k', value: 3 } }),
    ]);
    const started = Date.now();
    assert.equal(await client(srv.url, { retryDelay: 1, maxRetryDelay: 1 }).incrementVariable('k'), 3);
    const gap = srv.requests[1].at - srv.requests[0].at;
    assert.equal(srv.requests.length, 2);
    assert.ok(gap >= 950, `waited only ${gap}ms`);
    assert.ok(Date.now() - started < 5000);
  });

  it('honours a fractional Retry-After and an HTTP date', async () => {
    const srv = await server([
      apiError(503, 'backend_unavailable', 'down', { 'Retry-After': '0.3' }),
      // An HTTP date has whole seconds: now + 2 s asks for a wait between 1 and 2 s.
      (req, res) => apiError(503, 'backend_unavailable', 'down', { 'Retry-After': new Date(Date.now() + 2000).toUTCString() })(req, res),
      OK,
    ]);
    await client(srv.url, { retryDelay: 1, maxRetryDelay: 1 }).output('x');
    assert.equal(srv.requests.length, 3);
    assert.ok(srv.requests[1].at - srv.requests[0].at >= 280);
    assert.ok(srv.requests[2].at - srv.requests[1].at >= 900);
  });

  it('gives up at once when Retry-After is longer than maxRetryAfter', async () => {
    const srv = await server([apiError(429, 'rate_limited', 'slow down', { 'Retry-After': '120' }), OK]);
    await assert.rejects(client(srv.url, { maxRetryAfter: 5000 }).input(), (err) => {
      assert.equal(err.statusCode, 429);
      assert.equal(err.retryAfter, 120);
      return true;
    });
    assert.equal(srv.requests.length, 1);
  });

  it('uses exponential backoff between attempts', async () => {
    const srv = await server([apiError(500, 'internal', 'x'), apiError(500, 'internal', 'x'), apiError(500, 'internal', 'x'), OK]);
    await client(srv.url, { retryDelay: 100, maxRetryDelay: 10000, maxAttempts: 4 }).input();
    const gaps = srv.requests.slice(1).map((r, i) => r.at - srv.requests[i].at);
    // attempt n waits between half and all of 100 * 2^(n-1) ms
    assert.ok(gaps[0] >= 45 && gaps[0] < 400, `gap1 ${gaps[0]}`);
    assert.ok(gaps[1] >= 95 && gaps[1] < 600, `gap2 ${gaps[1]}`);
    assert.ok(gaps[2] >= 195 && gaps[2] < 900, `gap3 ${gaps[2]}`);
  });

  it('does not retry a 501 not_supported', async () => {
    const srv = await server([apiError(501, 'not_supported', 'no delete')]);
    await assert.rejects(client(srv.url).deleteVariable('k'), (err) => err.statusCode === 501 && err.code === 'not_supported');
    assert.equal(srv.requests.length, 1);
  });

  it('does not follow redirects (the token stays with the runtime)', async () => {
    const other = await server([OK]);
    const srv = await server([(req, res) => { res.writeHead(302, { Location: `${other.url}/steal` }); res.end(); }]);
    await assert.rejects(client(srv.url).input(), (err) => err instanceof CroniumAPIError && err.statusCode === 302);
    assert.equal(other.requests.length, 0);
  });
});

describe('the token never shows', () => {
  let srv;
  after(async () => { if (srv) await srv.close(); });

  it('is redacted from error messages and debug lines', async () => {
    srv = await startFaultServer([apiError(401, 'invalid_token', `token ${TOKEN} is not valid`)]);
    const lines = [];
    const c = client(srv.url, { debug: true, logger: (l) => lines.push(l), executionId: TOKEN });
    let caught;
    await c.input().catch((e) => { caught = e; });
    assert.ok(caught instanceof CroniumAPIError);
    const everything = [caught.message, caught.stack, caught.path, String(caught), JSON.stringify(caught), ...lines,
      util.inspect(caught)].join('\n');
    assert.ok(!everything.includes(TOKEN), everything);
    assert.match(caught.message, /\[redacted\]/);
    assert.equal(lines.length, 1);
    const plain = client(srv.url);
    for (const shown of [util.inspect(plain, { showHidden: true, depth: 5 }), JSON.stringify(plain), String(plain)]) {
      assert.ok(!shown.includes(TOKEN), shown);
    }
    // the request itself did carry the token
    assert.equal(srv.requests[0].headers.authorization, `Bearer ${TOKEN}`);
  });
});

describe('settings', () => {
  it('reports every missing setting on the first call, without sending anything', async () => {
    const c = new Cronium({ env: {} });
    await assert.rejects(c.getVariable('k'), (err) => {
      assert.ok(err instanceof CroniumError);
      assert.match(err.message, /CRONIUM_EXECUTION_TOKEN/);
      assert.match(err.message, /CRONIUM_EXECUTION_ID/);
      return true;
    });
    const onlyId = new Cronium({ env: { CRONIUM_EXECUTION_TOKEN: 't' } });
    await assert.rejects(onlyId.input(), (err) => /CRONIUM_EXECUTION_ID/.test(err.message) && !/TOKEN/.test(err.message));
  });

  it('reads the alternative names and defaults to http://localhost:8081', () => {
    const a = new Cronium({ env: { CRONIUM_API_ENDPOINT: 'http://h:1/p', CRONIUM_API_TOKEN: 't', CRONIUM_EXECUTION_ID: 'e' } });
    assert.equal(a.apiUrl, 'http://h:1/p');
    assert.equal(a.executionId, 'e');
    const b = new Cronium({ env: { CRONIUM_RUNTIME_API: 'http://first', CRONIUM_API_ENDPOINT: 'http://second' } });
    assert.equal(b.apiUrl, 'http://first');
    assert.equal(new Cronium({ env: {} }).apiUrl, 'http://localhost:8081');
    assert.equal(new Cronium({ env: { CRONIUM_DEBUG: '1' } }).debug, true);
    assert.equal(new Cronium({ env: {} }).debug, false);
  });

  it('prefers CRONIUM_EXECUTION_TOKEN over CRONIUM_API_TOKEN', async () => {
    const srv = await startFaultServer([OK]);
    try {
      await new Cronium({
        env: { CRONIUM_RUNTIME_API: srv.url, CRONIUM_EXECUTION_TOKEN: 'first', CRONIUM_API_TOKEN: 'second', CRONIUM_EXECUTION_ID: 'e' },
      }).output(1);
      assert.equal(srv.requests[0].headers.authorization, 'Bearer first');
      await new Cronium({ env: { CRONIUM_RUNTIME_API: srv.url, CRONIUM_API_TOKEN: 'second', CRONIUM_EXECUTION_ID: 'e' } }).output(1);
      assert.equal(srv.requests[1].headers.authorization, 'Bearer second');
    } finally {
      await srv.close();
    }
  });

  it('reports a malformed base URL on the first call', async () => {
    const c = new Cronium({ env: { CRONIUM_RUNTIME_API: 'not a url', CRONIUM_EXECUTION_TOKEN: 't', CRONIUM_EXECUTION_ID: 'e' } });
    await assert.rejects(c.input(), (err) => err instanceof CroniumError && /CRONIUM_RUNTIME_API/.test(err.message));
  });

  it('throws TypeError for explicit options of the wrong type', () => {
    assert.throws(() => new Cronium({ timeout: -1 }), TypeError);
    assert.throws(() => new Cronium({ maxAttempts: 0 }), TypeError);
    assert.throws(() => new Cronium({ logger: 'x' }), TypeError);
  });
});

describe('retry settings from the environment', () => {
  let srv;
  after(async () => { if (srv) await srv.close(); });

  it('reads CRONIUM_MAX_ATTEMPTS (and the old CRONIUM_MAX_RETRIES) like bash and Python', async () => {
    srv = await startFaultServer([]);
    for (const [env, want] of [[{ CRONIUM_MAX_ATTEMPTS: '1' }, 1], [{ CRONIUM_MAX_RETRIES: '2' }, 2],
                               [{}, 3]]) {
      srv.setSteps([json(503, { success: false }), json(503, { success: false }), json(503, { success: false })]);
      srv.requests.length = 0;
      const c = new Cronium({ apiUrl: srv.url, token: TOKEN, executionId: 'exec-1', retryDelay: 5, maxRetryDelay: 5, env });
      await assert.rejects(c.input(), CroniumAPIError);
      assert.equal(srv.requests.length, want, JSON.stringify(env));
    }
  });

  it('reads CRONIUM_TIMEOUT in seconds and reports a bad value on the first call', async () => {
    assert.equal(new Cronium({ env: { CRONIUM_TIMEOUT: '2.5' } }).timeout, 2500);
    assert.equal(new Cronium({ timeout: 700, env: { CRONIUM_TIMEOUT: '9' } }).timeout, 700);
    const bad = new Cronium({ apiUrl: 'http://127.0.0.1:9', token: TOKEN, executionId: 'e', env: { CRONIUM_MAX_ATTEMPTS: 'lots' } });
    await assert.rejects(bad.input(), /CRONIUM_MAX_ATTEMPTS/);
  });
});

'use strict';
// Starts the real cronium-runtime binary in dev mode for the integration tests:
// a free port on 127.0.0.1, a random JWT secret, a --dev-context file; waits for
// GET /health; mints tokens with `cronium-runtime token`; stops the process
// (SIGTERM, then SIGKILL) when asked or when the test process exits.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn, execFile } = require('node:child_process');

const { PACKAGE_DIR, freePort } = require('./util');

const BIN = process.env.CRONIUM_RUNTIME_BIN || path.resolve(PACKAGE_DIR, '..', '..', 'build', 'cronium-runtime');

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch (err) { /* already gone */ }
  }
});

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function healthy(url) {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    await res.text();
    return res.status === 200;
  } catch (err) {
    return false;
  }
}

/**
 * Starts the binary. `context` is written to the --dev-context file; `env` adds
 * settings (RATE_LIMIT_PER_MIN, ...). Resolves to
 * { url, port, bin, env, token(executionId, userId), stop(), logs() }.
 */
async function startRuntime({ context, env: extra = {}, startTimeoutMs = 15000 } = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`cronium-runtime binary not found at ${BIN}: build it (meson compile -C build) or set CRONIUM_RUNTIME_BIN`);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cronium-node-rt-'));
  const args = ['--dev'];
  if (context) {
    const file = path.join(tmp, 'dev-context.json');
    fs.writeFileSync(file, JSON.stringify(context));
    args.push('--dev-context', file);
  }
  const port = await freePort();
  const env = {
    PATH: process.env.PATH,
    PORT: String(port),
    HOST: '127.0.0.1',
    JWT_SECRET: crypto.randomBytes(32).toString('hex'),
    // Dev mode writes its export block to $TMPDIR; keep it in our temp dir.
    TMPDIR: tmp,
    ...extra,
  };
  // Keep sanitizer settings of a sanitizer build, nothing else from our environment.
  for (const k of ['ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS']) {
    if (process.env[k] !== undefined) env[k] = process.env[k];
  }

  const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  const keep = (d) => {
    output += d;
    if (output.length > 65536) output = output.slice(-65536);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
    child.on('error', (err) => {
      running.delete(child);
      resolve({ code: null, signal: null, error: err });
    });
  });
  let gone = null;
  exited.then((r) => { gone = r; });

  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (gone === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    return gone;
  };

  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (gone !== null) {
      await stop();
      throw new Error(`cronium-runtime exited during start (${JSON.stringify(gone)}):\n${output}`);
    }
    if (await healthy(url)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`cronium-runtime did not answer GET /health within ${startTimeoutMs}ms:\n${output}`);
    }
    await sleep(50);
  }

  const token = (executionId, userId) => new Promise((resolve, reject) => {
    const targs = ['token', '--execution-id', executionId];
    if (userId !== undefined) targs.push('--user-id', userId);
    execFile(BIN, targs, { env, timeout: 10000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`cronium-runtime token failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });

  return { url, port, bin: BIN, env, token, stop, logs: () => output };
}

module.exports = { startRuntime, BIN };

'use strict';
// The package as shipped: `npm pack` gives a tarball that installs offline into
// an empty project, where `require('cronium')` and `import 'cronium'` work; and
// index.d.ts declares exactly what the module exports.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');

const { PACKAGE_DIR, cleanEnv, runNode } = require('../test-support/util');
const cronium = require('..');

const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_DIR, 'package.json'), 'utf8'));

function npm(args, cwd, env) {
  return new Promise((resolve, reject) => {
    execFile('npm', args, { cwd, env, timeout: 60000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`npm ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

describe('npm pack', () => {
  let tmp;
  let appDir;
  let files;
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cronium-pack-'));
    const env = cleanEnv({
      npm_config_cache: path.join(tmp, 'cache'),
      npm_config_update_notifier: 'false',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
    });
    const out = JSON.parse(await npm(['pack', '--json', '--pack-destination', tmp], PACKAGE_DIR, env));
    files = out[0].files.map((f) => f.path).sort();
    const tarball = path.join(tmp, out[0].filename);
    assert.ok(fs.existsSync(tarball));
    appDir = path.join(tmp, 'app');
    fs.mkdirSync(appDir);
    fs.writeFileSync(path.join(appDir, 'package.json'), '{"name":"app","version":"1.0.0","private":true}\n');
    await npm(['install', '--offline', '--no-package-lock', tarball], appDir, env);
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('ships the entry points, the types and the README, not the tests', () => {
    assert.deepEqual(files, ['README.md', 'global.js', 'index.d.ts', 'index.js', 'index.mjs', 'package.json',
      'sync-worker.js', 'sync.d.ts', 'sync.js']);
  });

  it('installs and loads with require and import in another project', async () => {
    const script = `
      const c = require('cronium');
      import('cronium').then(async (m) => {
        let message = '';
        try { await m.input(); } catch (e) { message = e.message; }
        console.log(JSON.stringify({
          cjs: typeof c.getVariable, esm: typeof m.getVariable, same: m.Cronium === c.Cronium,
          version: c.VERSION, path: require.resolve('cronium'), message,
        }));
      });`;
    const r = await runNode(['-e', script], { cwd: appDir, env: cleanEnv() });
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout);
    assert.equal(got.cjs, 'function');
    assert.equal(got.esm, 'function');
    assert.equal(got.same, true);
    assert.equal(got.version, pkg.version);
    assert.ok(got.path.startsWith(path.join(appDir, 'node_modules', 'cronium')), got.path);
    assert.match(got.message, /CRONIUM_EXECUTION_TOKEN/);
  });
});

describe('package.json and index.d.ts', () => {
  const dts = fs.readFileSync(path.join(PACKAGE_DIR, 'index.d.ts'), 'utf8');

  it('declares the node >= 18 engine, no dependencies and both entry points', () => {
    assert.equal(pkg.name, 'cronium');
    assert.equal(pkg.engines.node, '>=18');
    assert.equal(pkg.dependencies, undefined);
    const root = pkg.exports['.'];
    for (const key of ['require', 'import', 'types']) {
      assert.ok(fs.existsSync(path.join(PACKAGE_DIR, root[key])), key);
    }
    assert.equal(cronium.VERSION, pkg.version);
  });

  it('declares every export of the module, and nothing else', () => {
    const declared = new Set([...dts.matchAll(/^export declare (?:function|class|const) (\w+)/gm)].map((m) => m[1]));
    const actual = new Set(Object.keys(cronium));
    assert.deepEqual([...declared].sort(), [...actual].sort());
  });

  it('declares every method of the Cronium class, and nothing else', () => {
    const start = dts.indexOf('export declare class Cronium {');
    const block = dts.slice(start, dts.indexOf('\n}\n', start));
    const declared = new Set([...block.matchAll(/^ {2}(\w+)(?:<[^>]*>)?\(/gm)].map((m) => m[1]));
    declared.delete('constructor');
    const proto = cronium.Cronium.prototype;
    const actual = Object.getOwnPropertyNames(proto)
      .filter((n) => n !== 'constructor' && typeof Object.getOwnPropertyDescriptor(proto, n).value === 'function');
    assert.deepEqual([...declared].sort(), actual.sort());
  });

  it('the error classes carry the fields the declarations promise', () => {
    const e = new cronium.CroniumAPIError('m', { statusCode: 418, code: 'c', requestId: 'r', method: 'GET', path: '/p' });
    assert.equal(e.statusCode, 418);
    assert.equal(e.code, 'c');
    assert.equal(e.message, 'm');
    assert.equal(e.requestId, 'r');
    assert.equal(e.retryAfter, null);
    for (const field of ['statusCode', 'code', 'requestId', 'retryAfter', 'method', 'path']) {
      assert.match(dts, new RegExp(`readonly ${field}: `), field);
    }
  });
});

'use strict';
// Per-call cost of the synchronous client against the async one, on loopback,
// against the real cronium-runtime in dev mode ($CRONIUM_RUNTIME_BIN):
//   CRONIUM_RUNTIME_BIN=build-sdk/cronium-runtime node helpers/node/test-support/bench-sync.js [calls]
// Each client makes the same sequential getVariable calls after a warm-up;
// the figure is the median of 5 rounds, and the difference is what the worker
// thread and Atomics.wait add per call. The runtime logs errors only: its log pipe
// is read by this process, which does not read while a sync call blocks it.

const { startRuntime } = require('./runtime');

async function main() {
  const calls = Number(process.argv[2] || 300);
  const rt = await startRuntime({ env: { RATE_LIMIT_PER_MIN: '10000000', RATE_LIMIT_BURST: '1000000', LOG_LEVEL: 'error' } });
  try {
    const token = await rt.token('bench-exec', 'bench-user');
    const options = { apiUrl: rt.url, token, executionId: 'bench-exec' };
    const { Cronium } = require('..');
    const { CroniumSync } = require('../sync');
    const a = new Cronium(options);
    const s = new CroniumSync(options);
    await a.setVariable('k', 'v');
    const t0 = performance.now();
    s.getVariable('k'); // the first call starts the worker
    const startMs = performance.now() - t0;
    for (let i = 0; i < 50; i += 1) { await a.getVariable('k'); s.getVariable('k'); }
    const median = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const asyncRounds = [];
    const syncRounds = [];
    for (let round = 0; round < 5; round += 1) {
      let t = performance.now();
      for (let i = 0; i < calls; i += 1) await a.getVariable('k');
      asyncRounds.push((performance.now() - t) / calls);
      t = performance.now();
      for (let i = 0; i < calls; i += 1) s.getVariable('k');
      syncRounds.push((performance.now() - t) / calls);
    }
    const am = median(asyncRounds);
    const sm = median(syncRounds);
    console.log(JSON.stringify({
      calls, node: process.version, asyncMsPerCall: +am.toFixed(3), syncMsPerCall: +sm.toFixed(3),
      extraMsPerCall: +(sm - am).toFixed(3), firstSyncCallMs: +startMs.toFixed(1),
    }));
  } finally {
    await rt.stop();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });

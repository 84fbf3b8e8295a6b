'use strict';
/*
 * The worker thread of the synchronous client (sync.js). It runs the async client
 * (index.js) and answers each request on the port it was given; the main thread
 * is blocked in Atomics.wait meanwhile, and is woken by Atomics.notify once the
 * answer is posted. Every request is answered, errors included, so the main
 * thread never waits for an answer that cannot come.
 */

const { workerData } = require('node:worker_threads');
const { Cronium } = require('./index.js');

const { port, flag } = workerData;
const clients = new Map();

function describe(err) {
  const out = { name: err && err.name, message: err && err.message !== undefined ? String(err.message) : String(err) };
  if (err && typeof err === 'object') {
    for (const field of ['statusCode', 'code', 'requestId', 'retryAfter', 'method', 'path', 'timeout']) {
      if (err[field] !== undefined) out[field] = err[field];
    }
  }
  return out;
}

function answer(seq, reply) {
  try {
    port.postMessage({ seq, ...reply });
  } catch (err) {
    // A value that cannot be cloned: say so instead of leaving the caller waiting.
    port.postMessage({ seq, logs: reply.logs, error: describe(new TypeError(`cronium: the answer cannot be passed back: ${err.message}`)) });
  }
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}

port.on('message', async (msg) => {
  const logs = [];
  try {
    let client = clients.get(msg.client);
    if (!client) {
      client = new Cronium({ ...msg.options, logger: (line) => logs.push(line) });
      clients.set(msg.client, client);
    }
    client.logger = (line) => logs.push(line);
    const value = await client[msg.method](...msg.args);
    answer(msg.seq, { logs, value });
  } catch (err) {
    answer(msg.seq, { logs, error: describe(err) });
  }
});

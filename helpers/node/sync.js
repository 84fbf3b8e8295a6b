'use strict';
/*
 * cronium/sync: the synchronous client. Every call returns the value itself
 * (`const n = cronium.getVariable('COUNTER')`), as the public Cronium docs show,
 * and throws the same errors as the async client.
 *
 * How: one worker thread per process runs the async client (index.js: the same
 * settings, timeouts and retries). A call posts its request to the worker and the
 * main thread sleeps in Atomics.wait on a SharedArrayBuffer (no spinning) until
 * the worker has posted the answer and called Atomics.notify; the answer is then
 * read with receiveMessageOnPort. The worker starts on the first call and is
 * unref'd: it never keeps the process alive, and nothing is left at exit.
 */

const path = require('node:path');
const { Worker, MessageChannel, receiveMessageOnPort } = require('node:worker_threads');
const async = require('./index.js');

const { Cronium, CroniumError, CroniumAPIError, CroniumConnectionError, CroniumTimeoutError } = async;

/* Headroom over the worst case of one call, for the worker's start and scheduling. */
const SLACK_MS = 10000;

let shared = null;   // { worker, port, flag, seq }
let nextClientId = 1;

function channel() {
  if (shared !== null) return shared;
  const { port1, port2 } = new MessageChannel();
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(path.join(__dirname, 'sync-worker.js'), {
    workerData: { port: port2, flag },
    transferList: [port2],
    stdout: false,
    stderr: false,
  });
  worker.unref();
  port1.unref();
  // A worker that dies is replaced on the next call.
  worker.on('exit', () => { if (shared && shared.worker === worker) shared = null; });
  worker.on('error', () => { if (shared && shared.worker === worker) shared = null; });
  shared = { worker, port: port1, flag, seq: 0 };
  return shared;
}

function rebuild(e) {
  const details = { ...e };
  switch (e.name) {
    case 'CroniumAPIError': return new CroniumAPIError(e.message, details);
    case 'CroniumConnectionError': return new CroniumConnectionError(e.message, details);
    case 'CroniumTimeoutError': return new CroniumTimeoutError(e.message, details);
    case 'CroniumError': return new CroniumError(e.message);
    case 'TypeError': return new TypeError(e.message);
    case 'RangeError': return new RangeError(e.message);
    default: {
      const err = new Error(e.message);
      if (e.name) err.name = e.name;
      return err;
    }
  }
}

/**
 * A synchronous client bound to one execution: the options of `new Cronium()`
 * (apiUrl, token, executionId, timeout, maxAttempts, retryDelay, maxRetryDelay,
 * maxRetryAfter, debug, logger, env), read the same way.
 */
class CroniumSync {
  #id;

  #options;

  #settings;

  constructor(options = {}) {
    // Checks the options now (a wrong type throws here, as with new Cronium()).
    this.#settings = new Cronium(options);
    const { logger, env, ...rest } = options || {};
    // The worker reads the settings from this snapshot of the environment.
    this.#options = { ...rest, env: { ...(env || process.env) } };
    this.logger = logger || ((line) => { try { require('node:fs').writeSync(2, `${line}\n`); } catch (err) { /* ignore */ } });
    this.#id = nextClientId;
    nextClientId += 1;
  }

  get apiUrl() { return this.#settings.apiUrl; }

  get executionId() { return this.#settings.executionId; }

  /* Longest time one call may take: every attempt times out and every wait is the longest. */
  #budget() {
    const s = this.#settings;
    const wait = Math.max(s.maxRetryDelay, s.maxRetryAfter);
    return s.maxAttempts * s.timeout + (s.maxAttempts - 1) * wait + SLACK_MS;
  }

  #call(method, args) {
    const ch = channel();
    ch.seq += 1;
    const seq = ch.seq;
    Atomics.store(ch.flag, 0, 0);
    const options = ch.known && ch.known.has(this.#id) ? undefined : this.#options;
    ch.port.postMessage({ seq, client: this.#id, options, method, args });
    if (!ch.known) ch.known = new Set();
    ch.known.add(this.#id);
    const budget = this.#budget();
    const outcome = Atomics.wait(ch.flag, 0, 0, budget);
    let msg = receiveMessageOnPort(ch.port);
    while (msg && msg.message.seq !== seq) msg = receiveMessageOnPort(ch.port); // answers of abandoned calls
    if (!msg) {
      // No answer in time: the worker is stuck or gone; start a fresh one next time.
      ch.worker.terminate();
      if (shared === ch) shared = null;
      throw new CroniumTimeoutError(`cronium: ${method}: no answer from the helper's worker thread within ${budget}ms (${outcome})`,
        { timeout: budget, method, path: '' });
    }
    const reply = msg.message;
    for (const line of reply.logs || []) {
      try { this.logger(line); } catch (err) { /* a broken logger must not break the call */ }
    }
    if (reply.error) throw rebuild(reply.error);
    return reply.value;
  }

  input() { return this.#call('input', []); }

  output(data) { return this.#call('output', [data === undefined ? null : data]); }

  getOutput() { return this.#call('getOutput', []); }

  getVariable(key) { return this.#call('getVariable', [key]); }

  setVariable(key, value) { return this.#call('setVariable', [key, value === undefined ? null : value]); }

  variableExists(key) { return this.#call('variableExists', [key]); }

  deleteVariable(key) { return this.#call('deleteVariable', [key]); }

  incrementVariable(key, by = 1) { return this.#call('incrementVariable', [key, by]); }

  appendVariable(key, text, separator = '') { return this.#call('appendVariable', [key, text, separator]); }

  event() { return this.#call('event', []); }

  context(field) { return this.#call('context', field === undefined ? [] : [field]); }

  setCondition(condition) { return this.#call('setCondition', [condition]); }

  getCondition() { return this.#call('getCondition', []); }

  executeToolAction(tool, action, params = {}) { return this.#call('executeToolAction', [tool, action, params]); }

  sendEmail(message) { return this.#call('sendEmail', [message]); }

  sendSlackMessage(message) { return this.#call('sendSlackMessage', [message]); }

  sendDiscordMessage(message) { return this.#call('sendDiscordMessage', [message]); }
}

let defaultClient = null;

/** The client behind the module-level functions, created from the environment on first use. */
function getDefaultClient() {
  if (defaultClient === null) defaultClient = new CroniumSync();
  return defaultClient;
}

/** Replaces the default client with one built from these options (and the environment). */
function configure(options = {}) {
  defaultClient = new CroniumSync(options);
  return defaultClient;
}

const METHODS = [
  'input', 'output', 'getOutput', 'getVariable', 'setVariable', 'variableExists', 'deleteVariable',
  'incrementVariable', 'appendVariable', 'event', 'context', 'setCondition', 'getCondition',
  'executeToolAction', 'sendEmail', 'sendSlackMessage', 'sendDiscordMessage',
];

const api = {
  CroniumSync,
  Cronium: CroniumSync,
  CroniumError,
  CroniumAPIError,
  CroniumConnectionError,
  CroniumTimeoutError,
  getDefaultClient,
  configure,
  VERSION: async.VERSION,
};
for (const name of METHODS) {
  api[name] = (...args) => getDefaultClient()[name](...args);
}
Object.defineProperty(api, 'cronium', { get: getDefaultClient, enumerable: true, configurable: true });

module.exports = api;

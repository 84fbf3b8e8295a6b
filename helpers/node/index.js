'use strict';
/*
 * cronium: the Node.js helper that job scripts use to talk to cronium-runtime.
 *
 * One file, no dependencies, Node >= 18 (global fetch and AbortSignal.timeout).
 * Settings come from explicit options or the environment and are checked when a
 * call is made, never when the module is loaded: `require('cronium')` and
 * `import 'cronium'` always succeed, and the first call reports what is missing.
 *
 * Every call maps to one endpoint of docs/api.md §4. Transient failures (connection
 * refused, timeouts, 429, 5xx) are retried with exponential backoff and jitter,
 * honouring Retry-After. Calls that are not safe to repeat (the atomic increment
 * and tool actions) are retried only when the service certainly did not act on
 * them (no connection, or 429). A 502 with the runtime's code `backend_error`
 * is final: the backend answered something definite and wrong and would say it
 * again (a 502 without it, from a proxy, is retried like any 5xx). The token is
 * kept in a private field and is removed from every message this module writes
 * or throws.
 */

const VERSION = '1.0.0';

const DEFAULTS = Object.freeze({
  apiUrl: 'http://localhost:8081',
  timeout: 30000,
  maxAttempts: 3,
  retryDelay: 250,
  maxRetryDelay: 5000,
  maxRetryAfter: 60000,
});

/* Network error codes meaning the request never reached the service: always
 * safe to retry, even for calls that must not run twice. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT',
]);

/* Network error codes where the request may have been processed. */
const MAYBE_SENT_CODES = new Set([
  'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT', 'UND_ERR_SOCKET',
  'UND_ERR_CLOSED', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
]);

/* ------------------------------------------------------------------ errors */

/** Base class of every error this module throws on purpose. */
class CroniumError extends Error {
  constructor(message, options) {
    super(message, options && options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'CroniumError';
  }
}

/** The service answered with an error status (or `success: false`). */
class CroniumAPIError extends CroniumError {
  constructor(message, details = {}) {
    super(message);
    this.name = 'CroniumAPIError';
    /** HTTP status of the answer. */
    this.statusCode = details.statusCode;
    /** The API's machine code (`variable_not_found`, ...), or null when the body had none. */
    this.code = details.code == null ? null : String(details.code);
    /** The `X-Request-Id` of the answer, or null. */
    this.requestId = details.requestId == null ? null : details.requestId;
    /** Seconds the service asked to wait (Retry-After), or null. */
    this.retryAfter = details.retryAfter == null ? null : details.retryAfter;
    this.method = details.method;
    this.path = details.path;
  }
}

/** The service could not be reached (connection refused, reset, DNS failure...). */
class CroniumConnectionError extends CroniumError {
  constructor(message, details = {}) {
    super(message, { cause: details.cause });
    this.name = 'CroniumConnectionError';
    /** The system error code (`ECONNREFUSED`, ...), or null. */
    this.code = details.code == null ? null : details.code;
    this.method = details.method;
    this.path = details.path;
  }
}

/** No complete answer arrived within the per-attempt timeout. */
class CroniumTimeoutError extends CroniumError {
  constructor(message, details = {}) {
    super(message, { cause: details.cause });
    this.name = 'CroniumTimeoutError';
    /** The per-attempt timeout in milliseconds. */
    this.timeout = details.timeout;
    this.method = details.method;
    this.path = details.path;
  }
}

/* ----------------------------------------------------------------- helpers */

function firstSet(...values) {
  for (const v of values) {
    if (v !== undefined && v !== null && v !== '') return v;
  }
  return undefined;
}

function isTruthyFlag(value) {
  return typeof value === 'string' && /^(1|true|yes|on)$/i.test(value.trim());
}

function checkNumberOption(options, name, min) {
  const v = options[name];
  if (v === undefined) return DEFAULTS[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new TypeError(`cronium: option ${name} must be a number >= ${min}, got ${String(v)}`);
  }
  return v;
}

function checkKey(key) {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError('cronium: a variable key must be a non-empty string');
  }
  return encodePathSegment(key, 'variable key');
}

/* A URL path segment. "." and ".." cannot be one: URL parsing (and so fetch)
 * removes them as dot segments, even percent-encoded, and the request would go
 * to another path. */
function encodePathSegment(text, what) {
  if (text === '.' || text === '..') {
    throw new TypeError(`cronium: the ${what} cannot be "." or ".." (URLs drop such path segments)`);
  }
  return encodeSegment(text, what);
}

function encodeSegment(text, what) {
  try {
    return encodeURIComponent(text);
  } catch (err) {
    throw new TypeError(`cronium: the ${what} is not valid unicode (lone surrogate)`);
  }
}

function toJsonBody(payload) {
  let text;
  try {
    text = JSON.stringify(payload);
  } catch (err) {
    throw new TypeError(`cronium: value cannot be sent as JSON: ${err.message}`);
  }
  return text;
}

/* Retry-After is delta-seconds or an HTTP date; a decimal number is accepted too. */
function parseRetryAfter(header) {
  if (header == null) return null;
  const text = String(header).trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - Date.now()) / 1000);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function toList(value, name) {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === 'string') {
    return value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  }
  throw new TypeError(`cronium: ${name} must be a string or an array of strings`);
}

/* ------------------------------------------------------------------ client */

/**
 * A client bound to one execution. Options win over the environment:
 *   apiUrl        CRONIUM_RUNTIME_API, CRONIUM_API_ENDPOINT, default http://localhost:8081
 *   token         CRONIUM_EXECUTION_TOKEN, CRONIUM_API_TOKEN
 *   executionId   CRONIUM_EXECUTION_ID
 *   debug         CRONIUM_DEBUG=1
 *   timeout       CRONIUM_TIMEOUT (seconds in the environment, milliseconds as an option)
 *   maxAttempts   CRONIUM_MAX_ATTEMPTS (or CRONIUM_MAX_RETRIES), total attempts, default 3
 *   retryDelay, maxRetryDelay, maxRetryAfter (milliseconds)
 *   logger        function receiving each debug line (default: write to stderr)
 *   env           where to read the settings from (default process.env)
 * The constructor throws only for an explicit option of the wrong type; missing or
 * malformed settings are reported by the first call.
 */
class Cronium {
  #token;

  #configProblem;

  #base;

  #apiUrl;

  #executionId;

  constructor(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError('cronium: options must be an object');
    }
    const env = options.env || process.env;

    this.timeout = checkNumberOption(options, 'timeout', 1);
    this.maxAttempts = Math.floor(checkNumberOption(options, 'maxAttempts', 1));
    this.retryDelay = checkNumberOption(options, 'retryDelay', 0);
    this.maxRetryDelay = checkNumberOption(options, 'maxRetryDelay', 0);
    this.maxRetryAfter = checkNumberOption(options, 'maxRetryAfter', 0);
    if (options.logger !== undefined && typeof options.logger !== 'function') {
      throw new TypeError('cronium: option logger must be a function');
    }
    this.debug = options.debug !== undefined ? Boolean(options.debug) : isTruthyFlag(env.CRONIUM_DEBUG);
    this.logger = options.logger || ((line) => process.stderr.write(`${line}\n`));

    const apiUrl = firstSet(options.apiUrl, env.CRONIUM_RUNTIME_API, env.CRONIUM_API_ENDPOINT);
    this.#apiUrl = apiUrl === undefined ? DEFAULTS.apiUrl : String(apiUrl);
    const token = firstSet(options.token, env.CRONIUM_EXECUTION_TOKEN, env.CRONIUM_API_TOKEN);
    this.#token = token === undefined ? null : String(token);
    const executionId = firstSet(options.executionId, env.CRONIUM_EXECUTION_ID);
    this.#executionId = executionId === undefined ? null : String(executionId);

    this.#configProblem = null;
    // The same retry settings the bash and Python helpers read (options win).
    const envNumber = (names, min, scale) => {
      for (const name of names) {
        const raw = env[name];
        if (raw === undefined || raw === '') continue;
        const v = Number(raw);
        if (!Number.isFinite(v) || v < min) {
          this.#configProblem = `${name} must be a number >= ${min}, got ${JSON.stringify(raw)}`;
          return undefined;
        }
        return v * scale;
      }
      return undefined;
    };
    if (options.timeout === undefined) {
      const t = envNumber(['CRONIUM_TIMEOUT'], 0.001, 1000);   // seconds in the environment
      if (t !== undefined) this.timeout = t;
    }
    if (options.maxAttempts === undefined) {
      const a = envNumber(['CRONIUM_MAX_ATTEMPTS', 'CRONIUM_MAX_RETRIES'], 1, 1);
      if (a !== undefined) this.maxAttempts = Math.floor(a);
    }
    this.#base = null;
    let url = null;
    try {
      url = new URL(this.#apiUrl);
    } catch (err) {
      url = null;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      this.#configProblem = `CRONIUM_RUNTIME_API (or CRONIUM_API_ENDPOINT) is not an http(s) URL: ${JSON.stringify(this.#apiUrl)}`;
    } else {
      // Keep any path prefix ("http://host/runtime/" + "/executions/...").
      this.#base = url.origin + url.pathname.replace(/\/+$/, '');
    }
  }

  /** The runtime's base URL as configured. */
  get apiUrl() {
    return this.#apiUrl;
  }

  /** The execution this client acts for, or null when not configured. */
  get executionId() {
    return this.#executionId;
  }

  /* ------------------------------------------------------------ the API */

  /** The execution's input (`context.metadata.input`); `{}` when it has none, as the public docs say. */
  async input() {
    const env = await this.#request('GET', this.#execPath('/input'));
    return env.data === undefined || env.data === null ? {} : env.data;
  }

  /** Saves the execution's output; `undefined` is sent as null. */
  async output(data) {
    await this.#request('POST', this.#execPath('/output'), { body: { data: data === undefined ? null : data } });
  }

  /** The output last saved, or null when none was. */
  async getOutput() {
    const env = await this.#request('GET', this.#execPath('/output'));
    return env.data === undefined ? null : env.data;
  }

  /** A variable's value, or null when the variable does not exist. */
  async getVariable(key) {
    const path = this.#execPath(`/variables/${checkKey(key)}`);
    let env;
    try {
      env = await this.#request('GET', path);
    } catch (err) {
      if (err instanceof CroniumAPIError && err.statusCode === 404 && err.code === 'variable_not_found') {
        return null;
      }
      throw err;
    }
    const data = this.#expectObject(env, 'GET', path);
    return data.value === undefined ? null : data.value;
  }

  /** Stores a variable; any JSON value, `undefined` is sent as null. */
  async setVariable(key, value) {
    const path = this.#execPath(`/variables/${checkKey(key)}`);
    await this.#request('PUT', path, { body: { value: value === undefined ? null : value } });
  }

  /** True when the variable exists (HEAD), also when its value is null or false. */
  async variableExists(key) {
    const path = this.#execPath(`/variables/${checkKey(key)}`);
    try {
      await this.#request('HEAD', path);
      return true;
    } catch (err) {
      if (err instanceof CroniumAPIError && err.statusCode === 404) return false;
      throw err;
    }
  }

  /** Deletes a variable: true when it existed, false when there was nothing to delete. */
  async deleteVariable(key) {
    const path = this.#execPath(`/variables/${checkKey(key)}`);
    try {
      await this.#request('DELETE', path);
      return true;
    } catch (err) {
      if (err instanceof CroniumAPIError && err.statusCode === 404 && err.code === 'variable_not_found') {
        return false;
      }
      throw err;
    }
  }

  /** Atomically adds `by` (default 1) on the service; a missing variable counts as 0. Returns the new value. */
  async incrementVariable(key, by = 1) {
    if (typeof by !== 'number' || !Number.isFinite(by)) {
      throw new TypeError('cronium: incrementVariable(key, by): by must be a finite number');
    }
    const path = this.#execPath(`/variables/${checkKey(key)}/increment`);
    const env = await this.#request('POST', path, { body: { by }, idempotent: false });
    const data = this.#expectObject(env, 'POST', path);
    return data.value;
  }

  /**
   * Atomically appends `text` to a string variable, `separator` (default '') between; a
   * missing variable starts empty. Returns the new value. A value that is not a string
   * is a 409 `conflict`. Not repeated after a timeout (it could apply twice).
   */
  async appendVariable(key, text, separator = '') {
    if (typeof text !== 'string') {
      throw new TypeError('cronium: appendVariable(key, text, separator): text must be a string');
    }
    if (typeof separator !== 'string') {
      throw new TypeError('cronium: appendVariable(key, text, separator): separator must be a string');
    }
    const path = this.#execPath(`/variables/${checkKey(key)}/append`);
    const env = await this.#request('POST', path, { body: { value: text, separator }, idempotent: false });
    const data = this.#expectObject(env, 'POST', path);
    return data.value === undefined ? null : data.value;
  }

  /** The full execution context (see index.d.ts), or one field of it with a dotted path ('event.name'). */
  async context(field) {
    let path = this.#execPath('/context');
    if (field !== undefined) {
      if (typeof field !== 'string' || field.length === 0) {
        throw new TypeError('cronium: context(field): field must be a non-empty string');
      }
      path += `?field=${encodeSegment(field, 'field')}`;
      const env = await this.#request('GET', path);
      return env.data === undefined ? null : env.data;
    }
    const env = await this.#request('GET', path);
    return this.#expectObject(env, 'GET', path);
  }

  /** The event that triggered the execution (the context's `event`); `{}` when there is none. */
  async event() {
    const ctx = await this.context();
    return ctx.event === undefined || ctx.event === null ? {} : ctx.event;
  }

  /** Sets the execution's condition (a boolean). */
  async setCondition(condition) {
    if (typeof condition !== 'boolean') {
      throw new TypeError('cronium: setCondition(condition): condition must be true or false');
    }
    await this.#request('POST', this.#execPath('/condition'), { body: { condition } });
  }

  /** The condition set for this execution, or null when none was set. */
  async getCondition() {
    const path = this.#execPath('/condition');
    const env = await this.#request('GET', path);
    const data = this.#expectObject(env, 'GET', path);
    return data.condition === undefined ? null : data.condition;
  }

  /** Runs a tool action; resolves to the tool's result object `{success, data, error?, metadata?}`. */
  async executeToolAction(tool, action, params = {}) {
    if (typeof tool !== 'string' || tool.length === 0) {
      throw new TypeError('cronium: executeToolAction: tool must be a non-empty string');
    }
    if (typeof action !== 'string' || action.length === 0) {
      throw new TypeError('cronium: executeToolAction: action must be a non-empty string');
    }
    if (!isObject(params)) {
      throw new TypeError('cronium: executeToolAction: params must be an object');
    }
    const path = '/tool-actions/execute';
    const env = await this.#request('POST', path, {
      body: { tool, action, params },
      idempotent: false,
      needsExecution: false,
    });
    return this.#expectObject(env, 'POST', path);
  }

  /** Sends an email through the `email` tool. `to`, `cc`, `bcc`: an address, a comma-separated list or an array. */
  async sendEmail(message) {
    if (!isObject(message)) throw new TypeError('cronium: sendEmail({ to, subject, body, ... })');
    const { to, subject, body, cc, bcc, html, ...extras } = message;
    const recipients = toList(to, 'to');
    if (!recipients || recipients.length === 0) throw new TypeError('cronium: sendEmail: to is required');
    if (typeof subject !== 'string') throw new TypeError('cronium: sendEmail: subject must be a string');
    if (typeof body !== 'string') throw new TypeError('cronium: sendEmail: body must be a string');
    const params = { ...extras, to: recipients, subject, body };
    const ccList = toList(cc, 'cc');
    if (ccList !== undefined) params.cc = ccList;
    const bccList = toList(bcc, 'bcc');
    if (bccList !== undefined) params.bcc = bccList;
    if (html !== undefined) params.html = Boolean(html);
    return this.executeToolAction('email', 'send_message', params);
  }

  /** Posts a Slack message through the `slack` tool (`username`, `icon_emoji`, `icon_url` optional). */
  async sendSlackMessage(message) {
    if (!isObject(message)) throw new TypeError('cronium: sendSlackMessage({ channel, text, ... })');
    const { channel, text } = message;
    if (typeof channel !== 'string' || channel.length === 0) {
      throw new TypeError('cronium: sendSlackMessage: channel must be a non-empty string');
    }
    if (typeof text !== 'string') throw new TypeError('cronium: sendSlackMessage: text must be a string');
    return this.executeToolAction('slack', 'send_message', { ...message });
  }

  /** Posts a Discord message through the `discord` tool (`embeds` optional). */
  async sendDiscordMessage(message) {
    if (!isObject(message)) throw new TypeError('cronium: sendDiscordMessage({ channelId, content, ... })');
    const { channelId, content } = message;
    if (typeof channelId !== 'string' || channelId.length === 0) {
      throw new TypeError('cronium: sendDiscordMessage: channelId must be a non-empty string');
    }
    if (typeof content !== 'string') throw new TypeError('cronium: sendDiscordMessage: content must be a string');
    return this.executeToolAction('discord', 'send_message', { ...message });
  }

  /* ------------------------------------------------------------ transport */

  #execPath(suffix) {
    // The id is checked in #request; a placeholder keeps the path printable meanwhile.
    const id = this.#executionId === null ? '' : encodePathSegment(this.#executionId, 'execution id');
    return `/executions/${id}${suffix}`;
  }

  #expectObject(env, method, path) {
    if (!isObject(env.data)) {
      throw new CroniumError(`cronium: unexpected answer to ${method} ${this.#redact(path)}: no data object`);
    }
    return env.data;
  }

  #redact(text) {
    const s = String(text);
    if (!this.#token) return s;
    return s.split(this.#token).join('[redacted]');
  }

  #log(line) {
    if (!this.debug) return;
    try {
      this.logger(this.#redact(`[cronium] ${line}`));
    } catch (err) {
      /* a broken logger must not break the call */
    }
  }

  #checkSettings(needsExecution) {
    const missing = [];
    if (this.#token === null) missing.push('CRONIUM_EXECUTION_TOKEN (or CRONIUM_API_TOKEN)');
    if (needsExecution && this.#executionId === null) missing.push('CRONIUM_EXECUTION_ID');
    const problems = [];
    if (this.#configProblem) problems.push(this.#configProblem);
    if (missing.length > 0) problems.push(`missing setting${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`);
    if (problems.length > 0) {
      throw new CroniumError(`cronium: ${problems.join('; ')}. Set them in the environment or pass `
        + '{ apiUrl, token, executionId } to new Cronium().');
    }
  }

  #backoff(attempt) {
    const exp = Math.min(this.maxRetryDelay, this.retryDelay * 2 ** (attempt - 1));
    return exp / 2 + Math.random() * (exp / 2);
  }

  /*
   * Sends one logical request, retrying as described at the top of the file.
   * Resolves to the parsed success envelope ({} for an empty body); rejects with
   * a CroniumError subclass.
   */
  async #request(method, path, { body, idempotent = true, needsExecution = true } = {}) {
    this.#checkSettings(needsExecution);
    const url = this.#base + path;
    const headers = {
      Authorization: `Bearer ${this.#token}`,
      Accept: 'application/json',
      'User-Agent': `cronium-node/${VERSION}`,
    };
    let payload;
    if (body !== undefined) {
      payload = toJsonBody(body);
      headers['Content-Type'] = 'application/json';
    }
    const parsedUrl = new URL(url);
    const shownPath = parsedUrl.pathname + parsedUrl.search;

    for (let attempt = 1; ; attempt += 1) {
      const started = performance.now();
      const elapsed = () => `${Math.round(performance.now() - started)}ms`;
      const last = attempt >= this.maxAttempts;
      let response;
      let text;
      try {
        response = await fetch(url, {
          method,
          headers,
          body: payload,
          redirect: 'manual',
          signal: AbortSignal.timeout(this.timeout),
        });
        text = method === 'HEAD' ? '' : await response.text();
      } catch (err) {
        const failure = this.#classify(err, method, shownPath);
        const retry = !last && (failure.notSent || (idempotent && failure.retryable));
        if (retry) {
          const delay = this.#backoff(attempt);
          this.#log(`${method} ${shownPath} ${failure.label} ${elapsed()} (attempt ${attempt}/${this.maxAttempts}, retrying in ${Math.round(delay)}ms)`);
          await sleep(delay);
          continue;
        }
        this.#log(`${method} ${shownPath} ${failure.label} ${elapsed()} (attempt ${attempt}/${this.maxAttempts})`);
        if (!idempotent && !failure.notSent && !last && failure.retryable) {
          failure.error.message += ' (not retried: the service may have acted on it)';
        }
        throw failure.error;
      }

      const status = response.status;
      if (status >= 200 && status < 300) {
        this.#log(`${method} ${shownPath} ${status} ${elapsed()}`);
        if (text === '') return {};
        let env;
        try {
          env = JSON.parse(text);
        } catch (err) {
          throw new CroniumError(`cronium: ${method} ${this.#redact(shownPath)} answered ${status} with a body that is not JSON`);
        }
        if (isObject(env) && env.success === false) {
          throw this.#apiError(response, env, method, shownPath);
        }
        return isObject(env) ? env : { data: env };
      }

      const error = this.#apiError(response, text, method, shownPath);
      const final = status === 501 || (status === 502 && error.code === 'backend_error');
      const transient = status === 429 || (status >= 500 && !final);
      let retry = !last && transient && (idempotent || status === 429);
      let delay = 0;
      if (retry) {
        if (error.retryAfter !== null) {
          delay = error.retryAfter * 1000;
          if (delay > this.maxRetryAfter) retry = false;
        } else {
          delay = this.#backoff(attempt);
        }
      }
      if (retry) {
        this.#log(`${method} ${shownPath} ${status} ${elapsed()} (attempt ${attempt}/${this.maxAttempts}, retrying in ${Math.round(delay)}ms)`);
        await sleep(delay);
        continue;
      }
      this.#log(`${method} ${shownPath} ${status} ${elapsed()}${attempt > 1 ? ` (attempt ${attempt}/${this.maxAttempts})` : ''}`);
      throw error;
    }
  }

  #apiError(response, body, method, shownPath) {
    const status = response.status;
    let parsed = body;
    if (typeof body === 'string') {
      try {
        parsed = body === '' ? null : JSON.parse(body);
      } catch (err) {
        parsed = null;
      }
    }
    let code = null;
    let message = null;
    if (isObject(parsed)) {
      if (typeof parsed.code === 'string') code = parsed.code;
      if (typeof parsed.message === 'string' && parsed.message !== '') message = parsed.message;
      else if (typeof parsed.error === 'string' && parsed.error !== '') message = parsed.error;
    }
    if (message === null) {
      const reason = response.statusText ? ` ${response.statusText}` : '';
      message = `HTTP ${status}${reason}`;
    }
    return new CroniumAPIError(this.#redact(message), {
      statusCode: status,
      code: code === null ? null : this.#redact(code),
      requestId: response.headers.get('x-request-id'),
      retryAfter: parseRetryAfter(response.headers.get('retry-after')),
      method,
      path: this.#redact(shownPath),
    });
  }

  #classify(err, method, shownPath) {
    const path = this.#redact(shownPath);
    const where = `${method} ${path}`;
    if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
      return {
        label: 'timeout',
        notSent: false,
        retryable: true,
        error: new CroniumTimeoutError(`cronium: ${where}: no answer within ${this.timeout}ms from ${this.#redact(this.#base)}`, {
          timeout: this.timeout, method, path,
        }),
      };
    }
    const cause = err && err.cause;
    const code = (cause && typeof cause.code === 'string' && cause.code) || (err && typeof err.code === 'string' && err.code) || null;
    const detail = this.#redact((cause && cause.message) || (err && err.message) || String(err));
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return {
        label: 'timeout',
        notSent: false,
        retryable: true,
        error: new CroniumTimeoutError(`cronium: ${where}: ${detail}`, { timeout: this.timeout, method, path }),
      };
    }
    const notSent = code !== null && NOT_SENT_CODES.has(code);
    const retryable = notSent || (code !== null && MAYBE_SENT_CODES.has(code));
    return {
      label: code || 'error',
      notSent,
      retryable,
      error: new CroniumConnectionError(`cronium: ${where}: cannot reach ${this.#redact(this.#base)}: ${detail}`, {
        code, method, path,
      }),
    };
  }
}

/* ------------------------------------------------------ module-level API */

let defaultClient = null;

/** The client used by the module-level functions, created from the environment on first use. */
function getDefaultClient() {
  if (defaultClient === null) defaultClient = new Cronium();
  return defaultClient;
}

/** Replaces the default client with one built from these options (and the environment). */
function configure(options = {}) {
  defaultClient = new Cronium(options);
  return defaultClient;
}

/* Module-level functions: the same calls on the default client. Each is an async
 * function, so even creating the client can only ever reject, never throw. */
async function input() { return getDefaultClient().input(); }
async function output(data) { return getDefaultClient().output(data); }
async function getOutput() { return getDefaultClient().getOutput(); }
async function getVariable(key) { return getDefaultClient().getVariable(key); }
async function setVariable(key, value) { return getDefaultClient().setVariable(key, value); }
async function variableExists(key) { return getDefaultClient().variableExists(key); }
async function deleteVariable(key) { return getDefaultClient().deleteVariable(key); }
async function incrementVariable(key, by) { return getDefaultClient().incrementVariable(key, by); }
async function appendVariable(key, text, separator) {
  return getDefaultClient().appendVariable(key, text, separator);
}
async function event() { return getDefaultClient().event(); }
async function context(field) { return getDefaultClient().context(field); }
async function setCondition(condition) { return getDefaultClient().setCondition(condition); }
async function getCondition() { return getDefaultClient().getCondition(); }
async function executeToolAction(tool, action, params) {
  return getDefaultClient().executeToolAction(tool, action, params);
}
async function sendEmail(message) { return getDefaultClient().sendEmail(message); }
async function sendSlackMessage(message) { return getDefaultClient().sendSlackMessage(message); }
async function sendDiscordMessage(message) { return getDefaultClient().sendDiscordMessage(message); }

/* module.exports is the Cronium class itself, as in the original helper
 * (`new (require('cronium'))()`), carrying the module-level functions, the other
 * classes and `cronium`, the default client (`require('cronium').cronium`). Static
 * and instance members do not collide: `require('cronium').input()` is the
 * module-level call, `new Cronium().input()` the method. */
const api = {
  input,
  output,
  getOutput,
  getVariable,
  setVariable,
  variableExists,
  deleteVariable,
  incrementVariable,
  appendVariable,
  event,
  context,
  setCondition,
  getCondition,
  executeToolAction,
  sendEmail,
  sendSlackMessage,
  sendDiscordMessage,
  Cronium,
  CroniumError,
  CroniumAPIError,
  CroniumConnectionError,
  CroniumTimeoutError,
  getDefaultClient,
  configure,
  VERSION,
};
Object.assign(Cronium, api);
Object.defineProperty(Cronium, 'cronium', {
  get: getDefaultClient, enumerable: true, configurable: true,
});
module.exports = Cronium;

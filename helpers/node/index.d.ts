// Type declarations for cronium, the Node.js helper of cronium-runtime.
// The shapes follow the service's answers (docs/api.md §4 and §5).

/** Any value JSON can carry; every variable, input and output is one of these. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object. */
export interface JsonObject {
  [key: string]: JsonValue;
}

/** What `GET /executions/{id}/context` answers. */
export interface ExecutionContext {
  executionId: string;
  /** null when the execution has none. */
  jobId: string | null;
  /** null when the execution was not started by an event. */
  eventId: string | null;
  /** `event.name`, or null. */
  eventName: string | null;
  /** `event.type`, or null. */
  eventType: string | null;
  userId: string;
  /** RFC 3339 time. */
  startTime: string;
  /** The job's metadata; `metadata.input` is what `input()` returns. */
  metadata: JsonObject;
  /** The event that started the execution, or null. */
  event: JsonObject | null;
  /** The user the execution runs for, or null. */
  user: JsonObject | null;
}

/** The result of a tool action, as the backend (or dev mode) answers it. */
export interface ToolActionResult {
  success: boolean;
  data?: JsonValue;
  error?: string;
  metadata?: JsonObject;
}

export interface EmailMessage {
  /** One address, a comma-separated list, or an array. */
  to: string | string[];
  subject: string;
  body: string;
  cc?: string | string[];
  bcc?: string | string[];
  html?: boolean;
  /** Further fields are passed to the tool as they are. */
  [extra: string]: JsonValue | undefined;
}

export interface SlackMessage {
  channel: string;
  text: string;
  username?: string;
  icon_emoji?: string;
  icon_url?: string;
  [extra: string]: JsonValue | undefined;
}

export interface DiscordMessage {
  channelId: string;
  content: string;
  embeds?: JsonObject[];
  [extra: string]: JsonValue | undefined;
}

export interface CroniumOptions {
  /** Base URL of the runtime; a path prefix is kept. Default: CRONIUM_RUNTIME_API, CRONIUM_API_ENDPOINT, http://localhost:8081. */
  apiUrl?: string;
  /** Bearer token. Default: CRONIUM_EXECUTION_TOKEN, CRONIUM_API_TOKEN. */
  token?: string;
  /** Execution id. Default: CRONIUM_EXECUTION_ID. */
  executionId?: string;
  /** Per-attempt timeout in milliseconds (default 30000). */
  timeout?: number;
  /** Attempts per call, first one included (default 3). */
  maxAttempts?: number;
  /** Base delay of the exponential backoff in milliseconds (default 250). */
  retryDelay?: number;
  /** Cap of one backoff delay in milliseconds (default 5000). */
  maxRetryDelay?: number;
  /** Longest Retry-After the client waits for, in milliseconds (default 60000); longer ones end the call. */
  maxRetryAfter?: number;
  /** Print each request's method, path, status and duration. Default: CRONIUM_DEBUG=1. */
  debug?: boolean;
  /** Receives each debug line (default: written to stderr). */
  logger?: (line: string) => void;
  /** Where settings are read from (default process.env). */
  env?: { [name: string]: string | undefined };
}

export declare class CroniumError extends Error {
  constructor(message: string, options?: { cause?: unknown });
}

export declare class CroniumAPIError extends CroniumError {
  constructor(message: string, details?: {
    statusCode?: number; code?: string | null; requestId?: string | null; retryAfter?: number | null; method?: string; path?: string;
  });
  /** HTTP status of the answer. */
  readonly statusCode: number;
  /** The API's machine code (`variable_not_found`, `invalid_key`, ...), null when the body had none. */
  readonly code: string | null;
  /** The `X-Request-Id` of the answer. */
  readonly requestId: string | null;
  /** Seconds the service asked to wait before trying again. */
  readonly retryAfter: number | null;
  readonly method: string;
  readonly path: string;
}

export declare class CroniumConnectionError extends CroniumError {
  constructor(message: string, details?: { code?: string | null; method?: string; path?: string; cause?: unknown });
  /** System error code such as `ECONNREFUSED`, or null. */
  readonly code: string | null;
  readonly method: string;
  readonly path: string;
}

export declare class CroniumTimeoutError extends CroniumError {
  constructor(message: string, details?: { timeout?: number; method?: string; path?: string; cause?: unknown });
  /** The per-attempt timeout in milliseconds. */
  readonly timeout: number;
  readonly method: string;
  readonly path: string;
}

export declare class Cronium {
  constructor(options?: CroniumOptions);
  readonly apiUrl: string;
  readonly executionId: string | null;
  timeout: number;
  maxAttempts: number;
  retryDelay: number;
  maxRetryDelay: number;
  maxRetryAfter: number;
  debug: boolean;
  logger: (line: string) => void;

  /** The execution's input; `{}` when it has none. */
  input<T extends JsonValue = JsonValue>(): Promise<T | JsonObject>;
  /** Saves the execution's output (undefined is sent as null). */
  output(data: JsonValue | undefined): Promise<void>;
  /** The output saved last, or null. */
  getOutput<T extends JsonValue = JsonValue>(): Promise<T | null>;
  /** A variable's value, or null when it does not exist. */
  getVariable<T extends JsonValue = JsonValue>(key: string): Promise<T | null>;
  setVariable(key: string, value: JsonValue | undefined): Promise<void>;
  /** True when the variable exists, whatever its value. */
  variableExists(key: string): Promise<boolean>;
  /** True when the variable existed and was deleted, false when there was none. */
  deleteVariable(key: string): Promise<boolean>;
  /** Adds `by` (default 1) atomically on the service; returns the new value. */
  incrementVariable(key: string, by?: number): Promise<number>;
  /** Appends `text` atomically on the service, `separator` (default '') between; returns the new value. */
  appendVariable(key: string, text: string, separator?: string): Promise<string>;
  /** The event that started the execution (the context's `event`); `{}` when there is none. */
  event(): Promise<JsonObject>;
  /** The execution context. */
  context(): Promise<ExecutionContext>;
  /** One field of the context by dotted path (`event.name`, `metadata.input.x`), or null when absent. */
  context<T extends JsonValue = JsonValue>(field: string): Promise<T | null>;
  setCondition(condition: boolean): Promise<void>;
  /** The condition set for this execution, or null when none was. */
  getCondition(): Promise<boolean | null>;
  executeToolAction(tool: string, action: string, params?: JsonObject): Promise<ToolActionResult>;
  sendEmail(message: EmailMessage): Promise<ToolActionResult>;
  sendSlackMessage(message: SlackMessage): Promise<ToolActionResult>;
  sendDiscordMessage(message: DiscordMessage): Promise<ToolActionResult>;
}

export declare function input<T extends JsonValue = JsonValue>(): Promise<T | JsonObject>;
export declare function output(data: JsonValue | undefined): Promise<void>;
export declare function getOutput<T extends JsonValue = JsonValue>(): Promise<T | null>;
export declare function getVariable<T extends JsonValue = JsonValue>(key: string): Promise<T | null>;
export declare function setVariable(key: string, value: JsonValue | undefined): Promise<void>;
export declare function variableExists(key: string): Promise<boolean>;
export declare function deleteVariable(key: string): Promise<boolean>;
export declare function incrementVariable(key: string, by?: number): Promise<number>;
export declare function appendVariable(key: string, text: string, separator?: string): Promise<string>;
export declare function event(): Promise<JsonObject>;
export declare function context(): Promise<ExecutionContext>;
export declare function context<T extends JsonValue = JsonValue>(field: string): Promise<T | null>;
export declare function setCondition(condition: boolean): Promise<void>;
export declare function getCondition(): Promise<boolean | null>;
export declare function executeToolAction(tool: string, action: string, params?: JsonObject): Promise<ToolActionResult>;
export declare function sendEmail(message: EmailMessage): Promise<ToolActionResult>;
export declare function sendSlackMessage(message: SlackMessage): Promise<ToolActionResult>;
export declare function sendDiscordMessage(message: DiscordMessage): Promise<ToolActionResult>;

/** The client behind the module-level functions, created from the environment on first use. */
export declare function getDefaultClient(): Cronium;
/** Replaces the default client with one built from these options. */
export declare function configure(options?: CroniumOptions): Cronium;

/** Version of this package. */
export declare const VERSION: string;
/** The default client, as the original helper's `require('cronium').cronium`. */
export declare const cronium: Cronium;

// Types of cronium/sync (and of the `cronium` global of the Node runner image):
// the same calls as the async client, each returning its value directly.
import type {
  CroniumOptions, DiscordMessage, EmailMessage, ExecutionContext, JsonObject, JsonValue,
  SlackMessage, ToolActionResult,
} from './index';

export {
  CroniumError, CroniumAPIError, CroniumConnectionError, CroniumTimeoutError,
} from './index';

export declare class CroniumSync {
  constructor(options?: CroniumOptions);
  readonly apiUrl: string;
  readonly executionId: string | null;
  logger: (line: string) => void;
  /** The execution's input; `{}` when it has none. */
  input<T extends JsonValue = JsonValue>(): T | JsonObject;
  output(data: JsonValue | undefined): void;
  getOutput<T extends JsonValue = JsonValue>(): T | null;
  /** A variable's value, or null when it does not exist. */
  getVariable<T extends JsonValue = JsonValue>(key: string): T | null;
  setVariable(key: string, value: JsonValue | undefined): void;
  variableExists(key: string): boolean;
  deleteVariable(key: string): boolean;
  incrementVariable(key: string, by?: number): number;
  appendVariable(key: string, text: string, separator?: string): string;
  /** The event that started the execution; `{}` when there is none. */
  event(): JsonObject;
  context(): ExecutionContext;
  context<T extends JsonValue = JsonValue>(field: string): T | null;
  setCondition(condition: boolean): void;
  getCondition(): boolean | null;
  executeToolAction(tool: string, action: string, params?: JsonObject): ToolActionResult;
  sendEmail(message: EmailMessage): ToolActionResult;
  sendSlackMessage(message: SlackMessage): ToolActionResult;
  sendDiscordMessage(message: DiscordMessage): ToolActionResult;
}
export { CroniumSync as Cronium };

export declare function input<T extends JsonValue = JsonValue>(): T | JsonObject;
export declare function output(data: JsonValue | undefined): void;
export declare function getOutput<T extends JsonValue = JsonValue>(): T | null;
export declare function getVariable<T extends JsonValue = JsonValue>(key: string): T | null;
export declare function setVariable(key: string, value: JsonValue | undefined): void;
export declare function variableExists(key: string): boolean;
export declare function deleteVariable(key: string): boolean;
export declare function incrementVariable(key: string, by?: number): number;
export declare function appendVariable(key: string, text: string, separator?: string): string;
export declare function event(): JsonObject;
export declare function context(): ExecutionContext;
export declare function context<T extends JsonValue = JsonValue>(field: string): T | null;
export declare function setCondition(condition: boolean): void;
export declare function getCondition(): boolean | null;
export declare function executeToolAction(tool: string, action: string, params?: JsonObject): ToolActionResult;
export declare function sendEmail(message: EmailMessage): ToolActionResult;
export declare function sendSlackMessage(message: SlackMessage): ToolActionResult;
export declare function sendDiscordMessage(message: DiscordMessage): ToolActionResult;
export declare function getDefaultClient(): CroniumSync;
export declare function configure(options?: CroniumOptions): CroniumSync;
export declare const cronium: CroniumSync;
export declare const VERSION: string;

// ES module entry point of cronium: re-exports the CommonJS implementation, so
// `import` and `require` share one module instance and one default client.
import cronium from './index.js';

export const {
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
} = cronium;

export default cronium;

'use strict';
/*
 * Preloaded by the Node runner image (NODE_OPTIONS=--require <this file>): makes
 * `cronium` a global, so job scripts call it with no require or import, for
 * `node -e`, `node job.js` and ES modules (`node job.mjs`) alike. The global is
 * the synchronous client (cronium/sync): `const input = cronium.input();`.
 *
 * Loading this file only defines an accessor: cronium/sync (and its worker
 * thread) is loaded on the first use of `cronium`. The property is configurable
 * and assignable, so a script may declare its own `cronium` (const, let, var,
 * function) or `const cronium = require('cronium')` as before.
 */

if (!Object.prototype.hasOwnProperty.call(globalThis, 'cronium')) {
  const define = (value) => {
    Object.defineProperty(globalThis, 'cronium', { value, writable: true, configurable: true, enumerable: false });
    return value;
  };
  Object.defineProperty(globalThis, 'cronium', {
    get() { return define(require('./sync.js')); },
    set(value) { define(value); },
    configurable: true,
    enumerable: false,
  });
}

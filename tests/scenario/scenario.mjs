// The shared helper scenario, Node.js version (see test_scenario.py).
//
// Runs the ten operations of the scenario through the `cronium` package, imported as an
// ES module the way a job imports it (`import ... from 'cronium'`; the test makes the
// package resolvable through a node_modules folder next to a copy of this file), and
// prints one canonical line per operation:
//
//     op=<name> result=<compact JSON, keys sorted, non-ASCII kept as is>
//
// scenario.sh and scenario.py do the same operations and must print the same bytes.

import * as cronium from 'cronium';

// The value stored in operation 3: nested, with unicode and every falsy JSON value.
const PROFILE = {
  name: 'Zoë Ünïcødé 日本語 😀',
  quote: 'say "hi" \\ bye',
  lines: 'one\ntwo\tthree',
  zero: 0,
  false: false,
  empty: '',
  nothing: null,
  emptyList: [],
  emptyObject: {},
  negative: -7,
  big: 9007199254740991,
  nested: {
    list: [0, false, '', null, { deep: [1, 2.5, -3] }],
    'ключ': 'значение',
  },
};

const TOOL_PARAMS = { channel: '#ops', text: 'Zoë: report ✓', silent: false, count: 0 };

// Keys in code point order (what Python's sort_keys and jq -S use), not UTF-16 order.
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const k of Object.keys(value).sort(byCodePoint)) out[k] = sorted(value[k]);
    return out;
  }
  return value;
}

// A function that returns nothing (undefined) is shown as null, as in Python and bash.
function emit(op, result) {
  const text = JSON.stringify(sorted(result === undefined ? null : result));
  process.stdout.write(`op=${op} result=${text}\n`);
}

// 1. the execution's input
emit('input', await cronium.input());

// 2. the event, and its name from the context
emit('event', { event: await cronium.event(), eventName: await cronium.context('eventName') });

// 3. set a variable to the nested value (resolves to nothing)
emit('set_variable', await cronium.setVariable('profile', PROFILE));

// 4. read it back
emit('get_variable', await cronium.getVariable('profile'));

// 5. existence of a present and a missing variable
emit('variable_exists', {
  present: await cronium.variableExists('profile'),
  missing: await cronium.variableExists('never-set'),
});

// 6. a counter, incremented by 1, by 2 and by 0.5 (it starts missing: counts from 0)
const steps = [
  await cronium.incrementVariable('counter'),
  await cronium.incrementVariable('counter', 2),
  await cronium.incrementVariable('counter', 0.5),
];
emit('increment_variable', steps);

// 7. delete the variable, then read it as missing
const deleted = await cronium.deleteVariable('profile');
emit('delete_variable', {
  deleted,
  exists: await cronium.variableExists('profile'),
  value: await cronium.getVariable('profile'),
});

// 8. the condition: unset, then true, then false
const before = await cronium.getCondition();
await cronium.setCondition(true);
const afterTrue = await cronium.getCondition();
await cronium.setCondition(false);
const afterFalse = await cronium.getCondition();
emit('condition', { before, afterTrue, afterFalse });

// 9. the output (built from the counter's value), read back
await cronium.output({ counter: steps[2], ok: true, warnings: [], note: 'fini 🎉', zero: 0 });
emit('output', await cronium.getOutput());

// 10. a tool action (dev mode echoes it)
emit('tool_action', await cronium.executeToolAction('slack', 'send_message', TOOL_PARAMS));

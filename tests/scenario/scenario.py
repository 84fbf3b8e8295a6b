"""The shared helper scenario, Python version (see test_scenario.py).

Runs the ten operations of the scenario through the `cronium` package, loaded the way a
job loads it (`import cronium`; the test puts helpers/python on PYTHONPATH), and prints
one canonical line per operation:

    op=<name> result=<compact JSON, keys sorted, non-ASCII kept as is>

scenario.sh and scenario.mjs do the same operations and must print the same bytes.
"""

import json
import sys

import cronium

# The value stored in operation 3: nested, with unicode and every falsy JSON value.
PROFILE = {
    "name": "Zoë Ünïcødé 日本語 😀",
    "quote": 'say "hi" \\ bye',
    "lines": "one\ntwo\tthree",
    "zero": 0,
    "false": False,
    "empty": "",
    "nothing": None,
    "emptyList": [],
    "emptyObject": {},
    "negative": -7,
    "big": 9007199254740991,
    "nested": {
        "list": [0, False, "", None, {"deep": [1, 2.5, -3]}],
        "ключ": "значение",
    },
}

TOOL_PARAMS = {"channel": "#ops", "text": "Zoë: report ✓", "silent": False, "count": 0}


def emit(op, result):
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    sys.stdout.write(f"op={op} result={text}\n")
    sys.stdout.flush()


def main():
    # 1. the execution's input
    emit("input", cronium.input())

    # 2. the event, and its name from the context
    emit("event", {"event": cronium.event(), "eventName": cronium.context("eventName")})

    # 3. set a variable to the nested value (returns nothing)
    emit("set_variable", cronium.set_variable("profile", PROFILE))

    # 4. read it back
    emit("get_variable", cronium.get_variable("profile"))

    # 5. existence of a present and a missing variable
    emit(
        "variable_exists",
        {
            "present": cronium.variable_exists("profile"),
            "missing": cronium.variable_exists("never-set"),
        },
    )

    # 6. a counter, incremented by 1, by 2 and by 0.5 (it starts missing: counts from 0)
    steps = [
        cronium.increment_variable("counter"),
        cronium.increment_variable("counter", 2),
        cronium.increment_variable("counter", 0.5),
    ]
    emit("increment_variable", steps)

    # 7. delete the variable, then read it as missing
    deleted = cronium.delete_variable("profile")
    emit(
        "delete_variable",
        {
            "deleted": deleted,
            "exists": cronium.variable_exists("profile"),
            "value": cronium.get_variable("profile"),
        },
    )

    # 8. the condition: unset, then true, then false
    before = cronium.get_condition()
    cronium.set_condition(True)
    after_true = cronium.get_condition()
    cronium.set_condition(False)
    after_false = cronium.get_condition()
    emit("condition", {"before": before, "afterTrue": after_true, "afterFalse": after_false})

    # 9. the output (built from the counter's value), read back
    cronium.output({"counter": steps[-1], "ok": True, "warnings": [], "note": "fini 🎉", "zero": 0})
    emit("output", cronium.get_output())

    # 10. a tool action (dev mode echoes it)
    emit("tool_action", cronium.execute_tool_action("slack", "send_message", TOOL_PARAMS))


if __name__ == "__main__":
    main()

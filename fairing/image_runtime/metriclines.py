# Metrics from log lines: `name=value` pairs with a number as the value (`loss=0.31 acc=0.9`). A
# `step=N` (or `epoch=N`) on the same line makes the line's other metrics that step's values.
# Runs inside the image too (a retrain's pod reads its command's metrics for the promotion gate):
# the stdlib only, Python 3.8 syntax. fairing.runs.metrics reads client-side logs with the same code.
import math
import re

PAIR = re.compile(r"(?<![\w.\-/])([A-Za-z_][\w.\-/]*)\s*=\s*(?=[-+.\d]|nan\b|inf\b)"
                  r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))(?![\w.:/-])", re.I)
STEP_KEYS = ("step", "epoch", "iteration", "iter")
# Only `=` counts: `name: value` would also match timestamps and "Epoch 1/3: ...".
RESULT_MARKER = "FAIRING_RESULT:"  # a function's result line carries a pickle, not metrics


def parse_line(line):
    """({name: value}, step or None) for one log line."""
    found = {}
    if RESULT_MARKER in line:
        return found, None
    for m in PAIR.finditer(line):
        try:
            v = float(m.group(2))
        except ValueError:
            continue
        found[m.group(1)] = v
    step = None
    for key in STEP_KEYS:
        if key in found:
            s = found.pop(key)
            if step is None and not math.isnan(s) and s == int(s):
                step = int(s)
    return found, step

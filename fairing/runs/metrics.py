"""Metrics from log lines: `name=value` pairs with a number as the value (`loss=0.31 acc=0.9`).
A `step=N` (or `epoch=N`) on the same line makes the line's other metrics that step's values."""
from __future__ import annotations

import math
import re

PAIR = re.compile(r"(?<![\w.\-/])([A-Za-z_][\w.\-/]*)\s*=\s*(?=[-+.\d]|nan\b|inf\b)"
                  r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))(?![\w.:/-])", re.I)
STEP_KEYS = ("step", "epoch", "iteration", "iter")
# Only `=` counts: `name: value` would also match timestamps and "Epoch 1/3: ...".


def parse_line(line: str) -> tuple[dict[str, float], int | None]:
    """({name: value}, step or None) for one log line."""
    found: dict[str, float] = {}
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


class MetricLog:
    """Accumulates metrics from lines: the last value of each, and (name -> [(step, value)])."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.steps: dict[str, list[tuple[int, float]]] = {}

    def feed(self, line: str) -> None:
        if "FAIRING_RESULT:" in line:
            return  # the function result marker carries a pickle, not metrics
        from .redact import SECRET_KEY

        values, step = parse_line(line)
        for k, v in values.items():
            if SECRET_KEY.search(k):
                continue  # "token=123456" in a log is not a metric to keep
            self.last[k] = v
            if step is not None:
                self.steps.setdefault(k, []).append((step, v))

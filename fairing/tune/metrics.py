"""Metrics as log lines: `fairing.report(accuracy=0.93, loss=0.2)` prints

    accuracy=0.93
    loss=0.2

which is Katib's StdOut metrics-collector format; the built-in driver reads the same lines back
with `parse_metrics`. One line per metric, so a metric is never split across log chunks."""
from __future__ import annotations

import math
import re
import sys
from typing import Any, Iterable, Mapping

# Katib's default StdOut filter (pkg/metricscollector/v1beta1/common: DefaultFilter), so a line
# Katib reads is a line we read, and the other way round.
KATIB_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
_FILTER = re.compile(KATIB_FILTER)
LINE_FORMAT = "NAME=VALUE"


def format_metrics(metrics: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, value in metrics.items():
        if not re.fullmatch(r"[\w-]+", str(name)):
            raise ValueError(f"metric name {name!r}: use letters, digits, _ and -")
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_number(value):
            raise ValueError(f"metric {name}={value!r} is not a number")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"metric {name}={value!r} is not finite (NaN/inf cannot be compared)")
        lines.append(f"{name}={v!r}" if isinstance(value, float) else f"{name}={value}")
    return lines


def _is_number(v: Any) -> bool:
    # numpy scalars and the like: anything float() accepts that is not a string
    if isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def report(_file=None, **metrics: Any) -> None:
    """Print metrics as `name=value` lines on stdout (flushed at once, so they reach the log even
    if the trial is killed right after)."""
    out = _file or sys.stdout
    for line in format_metrics(metrics):
        out.write(line + "\n")
    out.flush()


def parse_metrics(lines: Iterable[str] | str) -> dict[str, float]:
    """Every `name=number` pair in the log, the last value of each name winning (Katib's
    "latest" strategy, which the Experiment we render asks for too)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out: dict[str, float] = {}
    for line in lines:
        if "=" not in line:
            continue
        for m in _FILTER.finditer(line):
            name, value = m.group(1), m.group(2)
            try:
                out[name] = float(value)
            except ValueError:  # "name=" with nothing numeric after it
                continue
    return out


def missing_metric_message(objective: str) -> str:
    return (f"the objective metric {objective!r} was never printed; print a line "
            f"'{objective}=<number>' (e.g. fairing.report({objective}=0.93)), or return "
            f"{{'{objective}': ...}} from a function")

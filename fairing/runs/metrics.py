"""Metrics from log lines: `name=value` pairs with a number as the value (`loss=0.31 acc=0.9`).
A `step=N` (or `epoch=N`) on the same line makes the line's other metrics that step's values."""
from __future__ import annotations

from ..image_runtime.metriclines import PAIR, STEP_KEYS, parse_line  # noqa: F401 - one parser, also in the pod


class MetricLog:
    """Accumulates metrics from lines: the last value of each, and (name -> [(step, value)])."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.steps: dict[str, list[tuple[int, float]]] = {}

    def feed(self, line: str) -> None:
        from .redact import SECRET_KEY

        values, step = parse_line(line)
        for k, v in values.items():
            if SECRET_KEY.search(k):
                continue  # "token=123456" in a log is not a metric to keep
            self.last[k] = v
            if step is not None:
                self.steps.setdefault(k, []).append((step, v))

"""The live table of trials (rich): params, state, objective, time; redrawn as trials start and
finish in a terminal, one line per finished trial elsewhere (notebooks, logs), quiet when off."""
from __future__ import annotations

from typing import Any

from .. import runtime
from ..progress import wanted
from .result import FAILED, STOPPED, SUCCEEDED, Trial, TuneResult
from .space import value_text

_STYLE = {SUCCEEDED: "green", FAILED: "red", STOPPED: "yellow"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return value_text(v)


def table(result: TuneResult, *, limit: int | None = None):
    from rich.table import Table

    best = result.best
    t = Table(title=f"{result.objective} ({result.goal}) — {result.backend}, {result.algorithm}",
              title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("#", justify="right")
    for name in result.space:
        t.add_column(name, justify="right")
    t.add_column("state")
    t.add_column(result.objective, justify="right")
    t.add_column("time", justify="right")
    t.add_column("note", overflow="fold", max_width=60)
    rows = result.trials if limit is None else result.trials[-limit:]
    for tr in rows:
        mark = " *" if best is not None and tr is best else ""
        style = _STYLE.get(tr.state, "")
        t.add_row(str(tr.number), *(_fmt(tr.params.get(n)) for n in result.space),
                  f"[{style}]{tr.state}[/]" if style else tr.state,
                  ("" if tr.value is None else _fmt(tr.value)) + mark,
                  "" if tr.seconds is None else f"{tr.seconds:.1f}s",
                  tr.error or "")
    return t


def trial_line(result: TuneResult, tr: Trial) -> str:
    params = " ".join(f"{n}={_fmt(v)}" for n, v in tr.params.items())
    value = f" {result.objective}={_fmt(tr.value)}" if tr.value is not None else ""
    why = f": {tr.error}" if tr.error else ""
    return f"trial {tr.number} {tr.state} {params}{value}{why}"


def best_line(result: TuneResult) -> str:
    b = result.best
    if b is None:
        return f"no trial finished ({result.reason or result.status})"
    params = ", ".join(f"{n}={_fmt(v)}" for n, v in b.params.items())
    return f"best: trial {b.number} ({b.name}) {result.objective}={_fmt(b.value)} with {params}"


class TrialTable:
    """`with TrialTable(enabled) as view: run_study(..., on_update=view.update)`."""

    def __init__(self, enabled: bool | None = None, console: Any = None, *, transient: bool = False):
        self.enabled = wanted() if enabled is None else enabled
        self._console = console
        self._live = None
        self.transient = transient  # the CLI prints the final table itself: the live one goes away

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def __enter__(self) -> "TrialTable":
        if self.enabled and self.console.is_terminal and not runtime.in_notebook():
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=4, transient=self.transient)
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, result: TuneResult, trial: Trial | None) -> None:
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(table(result, limit=30))
            return
        # A notebook or a log: one line per trial state change (not every trial's log).
        seen = self.__dict__.setdefault("_seen", {})
        changed = [trial] if trial is not None else list(result.trials)
        for tr in changed:
            if seen.get(tr.name) != tr.state:
                seen[tr.name] = tr.state
                self.console.print(trial_line(result, tr), markup=False)
        if trial is None and result.status == "Interrupted" and not seen.get("\0interrupted"):
            seen["\0interrupted"] = True
            stopped = sum(1 for t in result.trials if t.state == STOPPED and t.error == "interrupted")
            self.console.print(f"interrupted: stopped and deleted {stopped} running trial{'s' if stopped != 1 else ''}",
                               markup=False)

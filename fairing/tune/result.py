"""What a tuning run returns: every trial, the best one, and the image they all ran.

    res = fairing.tune(train, params=..., objective="accuracy", goal="maximize")
    res.best.params, res.best.value      # the best finished trial
    res.trials                           # list of Trial, in start order
    res.image                            # registry/repo@sha256:... every trial ran
    res.to_dataframe()                   # pandas, if installed
    res.plot("tune.png")                 # matplotlib, if installed"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError, FairingError

SUCCEEDED, FAILED, RUNNING, PENDING, STOPPED = "Succeeded", "Failed", "Running", "Pending", "Stopped"


@dataclass
class Trial:
    number: int
    name: str
    params: dict
    state: str = PENDING
    metrics: dict = field(default_factory=dict)
    value: float | None = None  # the objective metric, when the trial printed it
    error: str | None = None  # why it failed (one line)
    seconds: float | None = None
    run_id: str | None = None  # the trial's run record (fairing.runs), when it was recorded

    @property
    def outputs(self):
        """The trial's output files (what it wrote to $FAIRING_OUTPUT_DIR), fetched from the
        outputs store to ./outputs/RUN_ID: a pathlib.Path. `result.best.outputs` is the best model."""
        from ..errors import ConfigError

        if not self.run_id:
            raise ConfigError(f"trial {self.name} has no run record to fetch outputs by",
                              hint="trials are recorded when tuning runs from fairing.tune (not a dry run)")
        from .. import runs

        return runs.outputs(self.run_id)

    @property
    def finished(self) -> bool:
        return self.state == SUCCEEDED and self.value is not None

    def as_dict(self) -> dict:
        return {"number": self.number, "name": self.name, "params": dict(self.params), "state": self.state,
                "metrics": dict(self.metrics), "value": self.value, "error": self.error,
                "seconds": None if self.seconds is None else round(self.seconds, 3)}


@dataclass
class TuneResult:
    objective: str
    goal: str  # "maximize" | "minimize"
    space: Mapping[str, Any]
    trials: list[Trial] = field(default_factory=list)
    image: str | None = None  # the digest-pinned reference every trial ran ("context:..." for local processes)
    backend: str = "local"
    algorithm: str = "tpe"
    experiment: str | None = None  # the Katib Experiment / the trials' name prefix
    status: str = RUNNING  # Succeeded | Failed | Interrupted
    reason: str | None = None
    optimal_trial: str | None = None  # Katib's currentOptimalTrial name, when the backend has one
    run: str | None = None  # the tuning run's record id (fair runs show ID; trials are its children)
    seed: int | None = None  # the sampler's seed (fresh per run unless given): the same seed, the same points

    @property
    def finished_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.finished]

    @property
    def best(self) -> Trial | None:
        """The finished trial with the best objective (ties: the earliest); on Katib, the trial its
        currentOptimalTrial names."""
        done = self.finished_trials
        if not done:
            return None
        named = [t for t in done if self.optimal_trial and t.name == self.optimal_trial]
        if named:
            return named[0]
        sign = 1 if self.goal == "maximize" else -1
        return max(done, key=lambda t: (sign * t.value, -t.number))

    def best_so_far(self) -> list[tuple[int, float]]:
        """(trial number, best objective up to it) for finished trials in trial order."""
        out, best = [], None
        for t in sorted(self.finished_trials, key=lambda t: t.number):
            if best is None or (t.value > best if self.goal == "maximize" else t.value < best):
                best = t.value
            out.append((t.number, best))
        return out

    def to_dataframe(self):
        """One row per trial: number, name, state, value, error, a column per param and metric."""
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("to_dataframe() needs pandas", hint="pip install pandas") from None
        rows = []
        for t in self.trials:
            row = {"number": t.number, "name": t.name, "state": t.state, "value": t.value, "error": t.error,
                   "seconds": t.seconds}
            row.update({f"param_{k}": v for k, v in t.params.items()})
            row.update({f"metric_{k}": v for k, v in t.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, path: str | None = None):
        """A matplotlib Figure: the objective per trial with a best-so-far line, then the objective
        against each parameter. With `path`, also saved there (PNG, SVG, PDF by extension)."""
        from .plot import figure

        fig = figure(self)
        if path:
            fig.savefig(path, dpi=100, bbox_inches="tight")
        return fig

    def as_dict(self) -> dict:
        best = self.best
        return {"objective": self.objective, "goal": self.goal, "backend": self.backend,
                "algorithm": self.algorithm, "image": self.image, "experiment": self.experiment,
                "status": self.status, "reason": self.reason,
                "space": {k: getattr(v, "describe", lambda v=v: str(v))() for k, v in self.space.items()},
                "best": best.as_dict() if best else None, "optimal_trial": self.optimal_trial,
                "trials": [t.as_dict() for t in self.trials], "run": self.run, "seed": self.seed}

    def __repr__(self) -> str:
        b = self.best
        best = f"best={b.value:g} {b.params}" if b else "no finished trial"
        return f"<TuneResult {self.status} {len(self.finished_trials)}/{len(self.trials)} trials, {best}>"

    def best_text(self, fmt: Any = str) -> str:
        b = self.best
        if b is None:
            return f"no trial finished ({self.reason or self.status})"
        params = ", ".join(f"{n}={fmt(v)}" for n, v in b.params.items())
        return f"best: trial {b.number} ({b.name}) {self.objective}={fmt(b.value)} with {params}"

    def _repr_html_(self) -> str:
        """A notebook's view: one row per trial (the best starred), the best line, and the plot
        inline when matplotlib is installed."""
        from ..display import tune_html
        from .space import value_text

        def _fmt(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else value_text(v)

        names = list(self.space)
        header = ["#", *names, "state", self.objective, "time", "note"]
        rows = [[str(t.number), *(_fmt(t.params.get(n)) for n in names), t.state,
                 "" if t.value is None else _fmt(t.value), "" if t.seconds is None else f"{t.seconds:.1f}s",
                 t.error or ""] for t in self.trials]
        best = self.best
        best_row = next((i for i, t in enumerate(self.trials) if t is best), None)
        png, note = None, None
        if self.finished_trials:
            try:
                from .plot import figure

                png = figure(self)._repr_png_()  # the PNG a notebook would show for the figure
            except ConfigError:
                note = "pip install matplotlib to see the plot here"
        title = f"tuning {self.experiment or ''} — {self.objective} ({self.goal}), {self.backend}, {self.algorithm}"
        return tune_html(title, self.status, header, rows, best_row=best_row, best=self.best_text(_fmt), png=png,
                         note=note)


class TuneFailed(FairingError):
    """The tuning run stopped (too many failed trials, or none finished). `.result` has the trials."""

    def __init__(self, message: str, hint: str | None = None, result: TuneResult | None = None):
        super().__init__(message, hint)
        self.result = result

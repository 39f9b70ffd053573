"""Run records for a tuning run: one "tune" record for the run and one "trial" record per trial,
nested under it (`parent`), in the local store and, when MLflow is configured, there too (the
trials as child runs of the tuning run).

Every record is written from the calling thread only (the store's SQLite connection belongs to
it): the driver reports trials through `update`, which it calls from that thread."""
from __future__ import annotations

from typing import Any, Callable

from .result import FAILED, STOPPED, SUCCEEDED, Trial, TuneResult

_DONE = (SUCCEEDED, FAILED, STOPPED)


class TuneRecorder:
    def __init__(self, entry: Any, plan: Any, settings: Any, summary: dict):
        from ..runs import hook
        from ..runs.record import start

        self.entry, self.settings = entry, settings
        self.how = hook.how_of(plan)
        params = {k: summary[k] for k in ("objective", "goal", "algorithm", "backend", "trials", "parallel")}
        for key in ("max_failed", "seed"):
            if summary.get(key) is not None:
                params[key] = summary[key]
        params.update({f"space.{n}": d for n, d in summary["space"].items()})
        self.run = start("tune", entry=entry, how=self.how, params=params, settings=settings)
        self.run.note(experiment=summary["name"])
        # A tracker's run for the tuning run exists before any trial ends, so trials nest under it.
        self.run.open()
        self.trials: dict[str, Any] = {}
        self._closed: set[str] = set()
        # Trials whose Jobs another controller makes (Katib): their pods name their run after the
        # Job (fairing.outputs.wire.job_run_id), and keep outputs in `trial_outputs` (a store's
        # text), read back into the trial's record when it ends.
        self.trial_ids: Callable[[Trial], str] | None = None
        self.trial_outputs: str | None = None

    @property
    def id(self) -> str:
        return self.run.id

    def built(self, ctx: Any, image: Any, plan: Any) -> None:
        from ..runs import hook

        if ctx is not None:
            self.run.packaged(ctx)
        if image is not None:
            self.run.built(image, **dict(zip(("base_image", "base_digest"), hook.base_of(plan))))

    def trial_run(self, t: Trial):
        """The trial's record (made on first sight: the built-in tuner reports a trial before it
        is deployed, so its objects can carry the trial's run id)."""
        run = self.trials.get(t.name)
        if run is None:
            from ..runs.record import start

            run = start("trial", entry=self.entry, how=self.how, params=dict(t.params), parent=self.run.id,
                        settings=self.settings, git=False,
                        run_id=self.trial_ids(t) if self.trial_ids is not None else None)
            parent = self.run.doc
            fields = {k: parent[k] for k in ("source", "image", "requirements", "git") if k in parent}
            run.doc.update(fields, workload={"name": t.name}, trial=t.number)
            if self.trial_outputs is not None:
                run.doc["outputs"] = {"store": self.trial_outputs}
            run.save()
            self.trials[t.name] = run
        t.run_id = run.id
        return run

    def update(self, result: TuneResult, t: Trial | None) -> None:
        if t is None:
            return
        run = self.trial_run(t)
        if t.params and run.doc.get("params") != t.params:
            run.note(params=dict(t.params))  # Katib's first event may come before its assignments
        if t.state not in _DONE or t.name in self._closed:
            return
        self._closed.add(t.name)
        for k, v in (t.metrics or {}).items():
            run.log(f"{k}={v}")
        if t.seconds is not None:
            run.doc["trial_seconds"] = round(t.seconds, 3)
        if self.trial_outputs is not None:
            from ..runs import hook

            hook.settle_outputs(None, run, persist=False)  # what the trial's pod saved, by digest
        status = SUCCEEDED if t.state == SUCCEEDED else FAILED
        run.finish(status, t.error if status == FAILED else None)

    def finish(self, result: TuneResult) -> None:
        """The tuning run's outcome: its status, the best trial and its objective as the metric."""
        self._close_unfinished(result)
        best = result.best
        if best is not None:
            self.run.log(f"{result.objective}={best.value}")
            self.run.note(best={"trial": best.name, "run": self.trials[best.name].id if best.name in self.trials else None,
                                "params": dict(best.params), "value": best.value})
        self.run.note(trials_run=len(result.trials), trials_finished=len(result.finished_trials))
        status = result.status if result.status in (SUCCEEDED, FAILED) else FAILED
        self.run.finish(status, result.reason if status != SUCCEEDED else None)

    def fail(self, exc: BaseException, result: TuneResult | None = None) -> None:
        if result is not None:
            self._close_unfinished(result)
        self.run.fail(exc)

    def _close_unfinished(self, result: TuneResult) -> None:
        """Trials the driver never reported as ended (stopped by Ctrl-C or an error) end Failed."""
        for t in result.trials:
            if t.name in self.trials and t.name not in self._closed:
                self._closed.add(t.name)
                self.trials[t.name].finish(FAILED, t.error or "interrupted")


def chain(*fns: Callable[[TuneResult, Trial | None], None]) -> Callable[[TuneResult, Trial | None], None]:
    def both(result: TuneResult, t: Trial | None) -> None:
        for f in fns:
            f(result, t)

    return both


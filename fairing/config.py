"""The one-liner API, for notebooks and scripts:

    import fairing
    fairing.config.set_preprocessor("notebook")               # or python / function / full_notebook
    fairing.config.set_builder("append", base_image="python:3.11-slim", registry="127.0.0.1:5000/me")
    fairing.config.set_deployer("job", namespace="team")
    image, handle = fairing.config.run()

    train = fairing.config.fn(train)                         # run one function remotely
    accuracy = train(epochs=3)

Anything not set explicitly comes from the effective settings (fairing.yaml / FAIRING_* / defaults,
see `fairing.settings`); with no registry and no cluster the `local` deployer runs the code here.
Inside the image the pipeline built (FAIRING_RUNTIME=1), `run()` does nothing, so a notebook that
calls it does not launch itself again.

The stages are chosen and run by fairing.pipeline (plan/execute), as for TrainJob and the CLI."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from . import pipeline, runtime, stages
from . import settings as settings_mod
from .pipeline import Plan, RunResult
from .progress import Progress
from .request import CLEANUP_ON_SUCCESS, Request, Stage, Wait

__all__ = ["Config", "RunResult", "set_preprocessor", "set_builder", "set_deployer", "reset", "run", "fn"]


# --- the one-liner API -------------------------------------------------------------------------

class Config:
    """Pending choices for `run()`; the module-level functions use one shared instance."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.preprocessor: Stage | None = None
        self.builder: Stage | None = None
        self.deployer: Stage | None = None

    def set_preprocessor(self, name: str, **kw: Any) -> None:
        stages.check("preprocessor", name)
        self.preprocessor = Stage(name, kw)

    def set_builder(self, name: str, **kw: Any) -> None:
        stages.check("builder", name)
        self.builder = Stage(name, kw)

    def set_deployer(self, name: str, **kw: Any) -> None:
        stages.check("deployer", name)
        self.deployer = Stage(name, kw)

    def plan(self, entry: Any = None, *, settings: settings_mod.Settings | None = None,
             prepare_kw: Mapping[str, Any] | None = None, **overrides: Any) -> Plan:
        s = settings or settings_mod.load()
        if overrides:
            s = s.with_overrides(overrides)
        pre = self.preprocessor
        if entry is None and pre is not None:
            # set_preprocessor("python", executable="train.py") style: the entry is one of its options
            kw = dict(pre.options)
            for key in ("entry", "entry_point", "path", "notebook_file", "function"):
                if key in kw:
                    entry = kw.pop(key)
                    break
            pre = Stage(pre.name, kw)
        return pipeline.plan(Request(entry, s, preprocessor=pre, builder=self.builder, deployer=self.deployer,
                                     prepare=dict(prepare_kw or {})))

    def run(self, entry: Any = None, *, wait: bool = False, progress: Progress | None = None,
            quiet: bool | None = None, keep: bool | None = None, **overrides: Any) -> RunResult:
        """Package `entry` (default: the preprocessor's option, or the running notebook), build, deploy.
        Returns a RunResult (unpacks as `image, handle`). Inside the built image: does nothing.
        With `wait`, the workload's output shows as it runs (`quiet=True`: not), and an interrupt
        deletes it (`keep=True`: leaves it running and says how to reattach)."""
        if runtime.in_runtime():
            return RunResult(None, None, "skipped (runtime)")
        p = self.plan(entry, **overrides)
        return pipeline.execute(p, progress or Progress(), wait=waiting(quiet, kept(keep, p.settings)) if wait else None)

    def fn(self, f: Callable, *, quiet: bool | None = None, keep: bool | None = None, **overrides: Any) -> Callable:
        """`fn(f)(*args, **kw)` runs `f(*args, **kw)` as a workload and returns its return value.
        Inside the built image it simply calls `f`. What `f` prints shows as it runs (in a notebook
        or a terminal; `quiet=True`: never); an interrupt deletes the workload (`keep=True`: it
        keeps running)."""
        import functools

        @functools.wraps(f)
        def remote(*args: Any, **kwargs: Any) -> Any:
            if runtime.in_runtime():
                return f(*args, **kwargs)
            pre = self.preprocessor if self.preprocessor and self.preprocessor.name == "function" else None
            s = settings_mod.load()
            if overrides:
                s = s.with_overrides(overrides)
            p = pipeline.plan(Request(f, s, preprocessor=pre or Stage("function"), builder=self.builder,
                                      deployer=self.deployer, prepare={"args": args, "kwargs": kwargs}))
            # The return value is the point: one that cannot be read fails the run. Cleaned up
            # only after success: a failed workload stays for `fair logs NAME`.
            res = pipeline.execute(p, Progress(), wait=waiting(quiet, kept(keep, s), result="required",
                                                                 cleanup=CLEANUP_ON_SUCCESS))
            return res.value

        return remote


def kept(keep: bool | None, settings: Any) -> bool:
    """keep= for one call, else the `keep_on_interrupt` setting."""
    return bool(settings.keep_on_interrupt) if keep is None else bool(keep)


def waiting(quiet: bool | None, keep: bool, **kw: Any) -> Wait:
    """How a Python call waits: the log shown as it runs (fairing.logview; by default when a person
    watches), "[replica] " prefixes only for multi-replica runs, an interrupt deletes unless `keep`."""
    from .logview import LogView, wanted

    return Wait(on_log=LogView() if wanted(quiet) else None, keep=keep, prefix=None, **kw)


_config = Config()
set_preprocessor = _config.set_preprocessor
set_builder = _config.set_builder
set_deployer = _config.set_deployer
reset = _config.reset
run = _config.run
fn = _config.fn

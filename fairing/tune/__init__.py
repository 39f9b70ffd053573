"""Hyperparameter tuning: build the image once, run every trial on that digest.

    import fairing
    result = fairing.tune(train, params={"lr": fairing.loguniform(1e-4, 1e-1),
                                         "layers": fairing.choice([1, 2, 3])},
                          objective="accuracy", goal="maximize", trials=12, parallel=3)

Modules: space (search-space values, --param syntax), metrics (report(): name=value lines), trialfn
(the in-image wrapper for functions), build (the one build, per-trial deployers), driver (the
Optuna-driven scheduler for the jobs and local backends), katib (the Experiment backend),
result (TuneResult), plot (matplotlib), progress (the live table), api (tune()), cli (`fair tune`).
Nothing heavy is imported here."""
from __future__ import annotations

import sys
import types

__all__ = ["tune", "report", "uniform", "loguniform", "intrange", "choice", "TuneResult", "Trial", "TuneFailed"]


def __getattr__(name: str):
    import importlib

    where = {"tune": "api", "report": "metrics", "uniform": "space", "loguniform": "space", "intrange": "space",
             "choice": "space", "TuneResult": "result", "Trial": "result", "TuneFailed": "result"}
    if name in where:
        return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)
    raise AttributeError(f"module 'fairing.tune' has no attribute {name!r}")


class _TuneModule(types.ModuleType):
    """`fairing.tune` is both this package and the function: importing a submodule sets the
    package as attribute `tune` of `fairing`, which would shadow a function of that name, so the
    package itself is callable and forwards to fairing.tune.api.tune."""

    def __call__(self, *args, **kwargs):
        from .api import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _TuneModule

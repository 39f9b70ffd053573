"""fairing: package code, build an image, run it on Kubernetes (or locally) in one call.

Kept tiny on purpose: heavy modules load only when an attribute below is first used."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["config", "runs", "models", "kfp", "TrainJob", "PredictionEndpoint", "attach", "FairingError", "__version__", "tune", "report",
           "uniform", "loguniform", "intrange", "choice", "outputs_dir"]
_TUNE = ("tune", "report", "uniform", "loguniform", "intrange", "choice")


def __getattr__(name: str):
    # importlib, not `from . import x`: the latter looks the attribute up on this module first,
    # which would call __getattr__ again and recurse.
    import importlib

    if name in ("config", "runs", "models", "kfp"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("TrainJob", "PredictionEndpoint", "attach"):
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    if name in _TUNE:  # hyperparameter tuning (fairing.tune); optuna loads only when a study runs
        module = importlib.import_module(f"{__name__}.tune")
        return module if name == "tune" else getattr(module, name)  # the package is callable: tune(...)
    if name == "outputs_dir":  # where a run writes what it keeps (fairing.outputs)
        return importlib.import_module(f"{__name__}.outputs").outputs_dir
    if name == "FairingError":
        from .errors import FairingError

        return FairingError
    raise AttributeError(f"module 'fairing' has no attribute {name!r}")

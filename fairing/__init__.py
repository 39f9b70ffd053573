"""fairing: package code, build an image, run it on Kubernetes (or locally) in one call.

Kept tiny on purpose: heavy modules load only when an attribute below is first used."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["config", "TrainJob", "PredictionEndpoint", "FairingError", "__version__"]


def __getattr__(name: str):
    if name == "config":
        from . import config

        return config
    if name in ("TrainJob", "PredictionEndpoint"):
        from . import api

        return getattr(api, name)
    if name == "FairingError":
        from .errors import FairingError

        return FairingError
    raise AttributeError(f"module 'fairing' has no attribute {name!r}")

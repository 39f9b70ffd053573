"""Where else a run is reported besides the local store: MLflow, when configured.

A tracker gets the recorder's events (`opened` for a run others nest under, `deployed`, `finished`). A tracker that fails warns once and
is dropped; the run and its local record go on. This module is the base the trackers build on and
imports none of them: fairing.runs.record attaches the ones the settings name."""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping


class Tracker:
    name = "tracker"

    def __init__(self, warn: Callable[[str], None] | None = None):
        self._warn = warn
        self.broken = False

    def call(self, event: str, run) -> None:
        if self.broken:
            return
        import contextlib
        import sys

        try:
            # A tracking client may print (MLflow prints "View run ... at: URL" when a run ends):
            # to stderr, never into stdout, which `-o json` keeps for the one JSON document.
            with contextlib.redirect_stdout(sys.stderr):
                getattr(self, event)(run)
        except Exception as e:  # noqa: BLE001 - a tracking server must never fail the run
            self.broken = True
            from ..messages import info

            msg = f"warning: {self.name}: run {run.id} not logged ({type(e).__name__}: {_one_line(e)}); recorded locally"
            (self._warn or info)(msg)

    def opened(self, run) -> None:
        pass

    def deployed(self, run) -> None:
        pass

    def finished(self, run) -> None:
        pass


def _one_line(e: BaseException) -> str:
    return " ".join(str(getattr(e, "message", None) or e).split())[:300]


def mlflow_uri(settings: Mapping[str, Any]) -> str | None:
    return (settings.get("mlflow") if hasattr(settings, "get") else None) or os.environ.get("MLFLOW_TRACKING_URI") or None

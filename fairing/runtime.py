"""Where is this code running? Inside a fairing-built workload (runtime mode), in a notebook, or
in a plain terminal/script. Runtime mode is how a notebook that calls `fairing.config.run()`
avoids launching itself again when it executes inside the image it just built."""
from __future__ import annotations

import os
import sys

RUNTIME_ENV = "FAIRING_RUNTIME"


def in_runtime() -> bool:
    """True inside a workload fairing launched (its pod template / local run sets FAIRING_RUNTIME=1)."""
    return os.environ.get(RUNTIME_ENV, "") not in ("", "0", "false")


def in_notebook() -> bool:
    """True in a Jupyter kernel (JupyterLab, classic, VS Code, nbclient/papermill executions)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too broken to answer is not a notebook we can talk to
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def is_interactive(stream=None) -> bool:
    """A person is watching: a notebook, or a terminal on `stream` (default stderr)."""
    if in_notebook():
        return True
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def mode() -> str:
    """One word for messages and `fair config show`: runtime, notebook, terminal or script."""
    if in_runtime():
        return "runtime"
    if in_notebook():
        return "notebook"
    return "terminal" if is_interactive() else "script"

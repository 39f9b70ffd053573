"""Where is this code running? Inside a fairing-built workload (runtime mode), in a notebook, or
in a plain terminal/script. Runtime mode is how a notebook that calls `fairing.config.run()`
avoids launching itself again when it executes inside the image it just built."""
from __future__ import annotations

import sys

# The variable and its reader live with the other FAIRING_* knobs in fairing.settings;
# in_runtime() is True inside a workload fairing launched (its pod template / local run sets it).
from .settings import RUNTIME_ENV, in_runtime  # noqa: F401 - re-exported: fairing.runtime.in_runtime


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

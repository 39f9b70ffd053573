"""`full_notebook` preprocessor: ship the notebook itself and execute it in the image with nbclient.

Unlike `notebook`, magics and `!shell` lines keep working (an IPython kernel runs the cells). The
shim (image_runtime/run_notebook.py) injects parameters papermill-style and writes the executed notebook
to `$FAIRING_OUTPUT_DIR/<name>.executed.ipynb`. Outputs stored in the notebook are stripped before
shipping: they can be megabytes of images and are replaced by the run anyway.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .. import requirements as reqs_mod
from ..context import OUTPUT_DIR, BuildContext
from ..errors import ConfigError
from .base import PYTHON, RUNTIME_DIR, Preprocessor
from .notebook import find_notebook_path, read

SHIM = Path(__file__).parent.parent / "image_runtime" / "run_notebook.py"
# What the shim imports; added unless the user pinned them already.
RUNTIME_REQUIREMENTS = ("nbclient>=0.9", "ipykernel>=6.25")


class FullNotebookPreprocessor(Preprocessor):
    """Options: `parameters` (JSON-serialisable values, injected as a cell), `kernel_name`
    (default python3), `timeout` (seconds per cell, default none). `prepare(path=None,
    parameters=None)` merges per-call parameters over the constructor's."""

    kind = "full_notebook"

    def __init__(self, *, parameters: Mapping[str, Any] | None = None, kernel_name: str = "python3",
                 timeout: int | None = None, **kw):
        super().__init__(**kw)
        self.parameters = dict(parameters or {})
        self.kernel_name = kernel_name
        self.timeout = timeout

    def prepare(self, entry: str | os.PathLike | None = None, *, parameters: Mapping[str, Any] | None = None) -> BuildContext:
        import nbformat

        path = Path(entry) if entry is not None else find_notebook_path()
        nb = read(path)
        if not any(c.cell_type == "code" and c.source.strip() for c in nb.cells):
            raise ConfigError(f"notebook {path} has no code cells to run", hint="add a code cell")
        params = {**self.parameters, **(parameters or {})}
        _check_parameters(params)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        from .notebook import script_name

        name = script_name(path)[: -len(".py")] + ".ipynb"
        meta = {"notebook": name, "parameters": params, "output_dir": OUTPUT_DIR,
                "kernel": self.kernel_name, "timeout": self.timeout}
        files = self.included_files(path.parent)
        files[name] = nbformat.writes(nb).encode("utf-8") + b"\n"
        files[f"{RUNTIME_DIR}/notebook.json"] = json.dumps(meta, indent=1, sort_keys=True).encode() + b"\n"
        files[f"{RUNTIME_DIR}/run_notebook.py"] = SHIM.read_bytes()
        reqs = reqs_mod.ensure(self.resolve_requirements(path.parent), RUNTIME_REQUIREMENTS)
        stem = name[: -len(".ipynb")]
        return self._context(
            files,
            [PYTHON, "-u", f"{RUNTIME_DIR}/run_notebook.py"],
            requirements=reqs,
            outputs={"notebook": f"{OUTPUT_DIR}/{stem}.executed.ipynb"},
        )


def _check_parameters(params: Mapping[str, Any]) -> None:
    import keyword

    for k, v in params.items():
        if not (isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k)):
            raise ConfigError(f"notebook parameter name {k!r} is not a Python identifier", hint="use names like learning_rate")
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            raise ConfigError(f"notebook parameter {k!r} ({type(v).__name__}) is not JSON-serialisable",
                              hint="pass numbers, strings, booleans, None, lists or dicts") from None

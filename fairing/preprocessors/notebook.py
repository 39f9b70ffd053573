"""`notebook` preprocessor: turn a notebook's code cells into one plain Python script and run it.

The conversion is our own (about 100 lines) rather than nbconvert's PythonExporter: the exporter
rewrites magics into `get_ipython()` calls, which fail outside IPython, and we need an exact map
from script lines back to cells to report syntax errors where the user can find them. nbformat does
the reading and validation.

Rules: IPython line magics (`%x`), shell escapes (`!cmd`, `x = !cmd`) and help (`obj?`) are dropped
at any indentation, but only where a statement starts (never inside a string or a bracketed
expression); a dropped line that leaves a block empty becomes `pass`. Cells starting with a `%%`
cell magic are dropped whole, with a warning. If any cell is tagged `fairing:include`, only those
cells ship; cells tagged `fairing:exclude` never do. "cell N" in messages counts every cell from the
top of the notebook, markdown included.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..context import BuildContext
from ..errors import ConfigError
from .base import PYTHON, Preprocessor

INCLUDE_TAG = "fairing:include"
EXCLUDE_TAG = "fairing:exclude"


class NotebookWarning(UserWarning):
    """Something in the notebook was left out of the script."""


_HELP = re.compile(r"^\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")
_ASSIGN_MAGIC = re.compile(r"^\s*[\w.\[\]'\", ]+?\s*=\s*[%!]")
_PIP = re.compile(r"^\s*[%!]\s*(pip|conda|mamba)\s+install\b")


def _is_magic(line: str) -> bool:
    s = line.lstrip()
    if s.startswith("!="):
        return False
    return s.startswith(("%", "!")) or bool(_HELP.match(line)) or bool(_ASSIGN_MAGIC.match(line))


def _continues(prefix: list[str]) -> bool:
    """True if the text so far ends inside a string, a bracket or after a backslash, so the next
    physical line continues a statement rather than starting one."""
    src = "\n".join(prefix) + "\n"
    try:
        for _ in tokenize.generate_tokens(io.StringIO(src).readline):
            pass
    except tokenize.TokenError:
        return True  # "EOF in multi-line string/statement"
    except (SyntaxError, ValueError):
        return False
    return False


@dataclass
class Script:
    """A converted notebook: the script text and, for each script line, (cell number, line in cell)."""

    text: str
    lines: list[tuple[int, int] | None] = field(default_factory=list)  # index = script line - 1
    dropped_cells: list[tuple[int, str]] = field(default_factory=list)  # (cell number, "%%bash")
    dropped_lines: list[tuple[int, int, str]] = field(default_factory=list)  # (cell, line, text)
    cells: list[int] = field(default_factory=list)  # numbers of the cells that made it in

    def locate(self, lineno: int) -> tuple[int, int] | None:
        # A blank separator line (errors at EOF of a cell land there) maps to the line before it.
        for i in range(min(lineno, len(self.lines)) - 1, -1, -1):
            if self.lines[i] is not None:
                return self.lines[i]
        return None


def _clean_cell(source: str) -> tuple[list[str], list[int], list[int]]:
    """Drop magic lines from one cell. Returns (kept lines, their 1-based cell line numbers, dropped
    cell line numbers)."""
    raw = source.splitlines()
    sanitized: list[str] = []  # raw lines with dropped ones replaced by a `pass` placeholder
    placeholders: dict[int, int] = {}  # sanitized line number -> cell line number
    for n, line in enumerate(raw, 1):
        if _is_magic(line) and not _continues(sanitized):
            indent = line[: len(line) - len(line.lstrip())]
            sanitized.append(indent + "pass")
            placeholders[n] = n
        else:
            sanitized.append(line)
    keep_pass = _needed_placeholders("\n".join(sanitized), set(placeholders))
    kept, numbers, dropped = [], [], []
    for n, line in enumerate(sanitized, 1):
        if n in placeholders and n not in keep_pass:
            dropped.append(n)
            continue
        if n in placeholders:
            dropped.append(n)
        kept.append(line)
        numbers.append(n)
    return kept, numbers, dropped


def _needed_placeholders(src: str, placeholders: set[int]) -> set[int]:
    """Which placeholder `pass` lines must stay so that no block ends up empty."""
    if not placeholders:
        return set()
    try:
        tree = ast.parse(src)
    except SyntaxError:
        # The user's own code is broken; keep every indented placeholder and let compile() report it.
        lines = src.splitlines()
        return {n for n in placeholders if lines[n - 1][:1] in (" ", "\t")}
    keep: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module):
            continue
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if not (isinstance(body, list) and body and isinstance(body[0], ast.stmt)):
                continue
            own = [s for s in body if isinstance(s, ast.Pass) and s.lineno in placeholders]
            if len(own) == len(body):
                keep.add(own[0].lineno)
    return keep


def convert(nb, name: str = "notebook") -> Script:
    """Convert a v4 notebook node into a Script (no syntax check; see `check`)."""
    cells = nb.cells
    tagged = any(INCLUDE_TAG in (c.get("metadata", {}).get("tags") or []) for c in cells)
    out: list[str] = [f"# Converted by fairing from {name}; edit the notebook, not this file.", ""]
    where: list[tuple[int, int] | None] = [None, None]
    script = Script(text="")
    for number, cell in enumerate(cells, 1):
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags") or []
        if (tagged and INCLUDE_TAG not in tags) or EXCLUDE_TAG in tags:
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if not source.strip():
            continue
        first = source.lstrip().splitlines()[0]
        if first.startswith("%%"):
            script.dropped_cells.append((number, first.split()[0]))
            continue
        kept, numbers, dropped = _clean_cell(source)
        raw = source.splitlines()
        script.dropped_lines += [(number, n, raw[n - 1].strip()) for n in dropped]
        if not any(line.strip() for line in kept):
            continue
        script.cells.append(number)
        out.append(f"# cell {number}")
        where.append(None)
        out += kept
        where += [(number, n) for n in numbers]
        out.append("")
        where.append(None)
    script.text = "\n".join(out).rstrip("\n") + "\n"
    script.lines = where
    return script


def read(path: str | os.PathLike):
    """Read and validate a notebook; one clear ConfigError for anything that is not a notebook."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"notebook {path} does not exist", hint="check the path")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as e:
        raise ConfigError(f"notebook {path} is not UTF-8 text: {e.reason}", hint="save it again from Jupyter") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"notebook {path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
            hint="the file is damaged or not a notebook; restore it from Jupyter's checkpoint or version control",
        ) from None
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise ConfigError(f"{path} is JSON but not a Jupyter notebook (no 'cells' / 'nbformat')", hint="pass an .ipynb file")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat raises jsonschema errors and assorted others
        msg = str(getattr(e, "message", e)).splitlines()[0]
        raise ConfigError(f"notebook {path} is not a valid notebook: {msg}", hint="open and save it in Jupyter to repair it") from None
    return nb


def check(script: Script, name: str) -> None:
    """compile() the script and report a syntax error by cell and line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A name that is not a file: compile() must not read a line from disk for e.text.
            compile(script.text, f"<notebook {name}>", "exec", dont_inherit=True)
    except SyntaxError as e:
        lineno = e.lineno or 1
        loc = script.locate(lineno)
        where = f"cell {loc[0]}, line {loc[1]}" if loc else f"line {lineno}"
        lines = script.text.splitlines()
        text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        code = f": {text}" if text else ""
        raise ConfigError(
            f"notebook {name} has a syntax error in {where}: {e.msg}{code}",
            hint=f"fix that cell, or tag the cells to ship with {INCLUDE_TAG}",
        ) from None


def script_name(path: Path) -> str:
    return re.sub(r"[^\w.-]", "_", path.stem) + ".py"


class NotebookPreprocessor(Preprocessor):
    """Ship a notebook as a script. `prepare(path=None)`: without a path, the running notebook's path
    is found with `find_notebook_path()`."""

    kind = "notebook"

    def prepare(self, entry: str | os.PathLike | None = None) -> BuildContext:
        path = Path(entry) if entry is not None else find_notebook_path()
        nb = read(path)
        script = convert(nb, path.name)
        _warn(script, path.name)
        if not script.cells:
            raise ConfigError(
                f"notebook {path} has no code cells to run",
                hint=f"add code cells (cells tagged {EXCLUDE_TAG}, %% cell magics and, when any cell is tagged "
                f"{INCLUDE_TAG}, untagged cells are left out)",
            )
        check(script, path.name)
        name = script_name(path)
        files = self.included_files(path.parent)
        files[name] = script.text.encode("utf-8")
        return self._context(files, [PYTHON, "-u", name], requirements=self.resolve_requirements(path.parent))


def _warn(script: Script, name: str) -> None:
    if script.dropped_cells:
        listed = ", ".join(f"cell {n} ({magic})" for n, magic in script.dropped_cells)
        warnings.warn(f"notebook {name}: dropped cell-magic cells, they do not run outside IPython: {listed}",
                      NotebookWarning, stacklevel=3)
    pips = [f"cell {c}: {text}" for c, _, text in script.dropped_lines if _PIP.match(text)]
    if pips:
        warnings.warn(f"notebook {name}: dropped install commands ({'; '.join(pips)}); "
                      "list those packages in requirements instead", NotebookWarning, stacklevel=3)


# -- finding the running notebook ------------------------------------------------------------------

def find_notebook_path(path: str | os.PathLike | None = None) -> Path:
    """The path of the notebook this kernel runs, best effort, in this order: an explicit `path`;
    `__session__` / `__vsc_ipynb_file__` in the IPython user namespace (JupyterLab 4, VS Code);
    env JPY_SESSION_NAME (jupyter_server 2); papermill (env PAPERMILL_INPUT_PATH); the kernel's
    connection file matched against the running servers' /api/sessions."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"notebook {p} does not exist", hint="check the path")
        return p
    tried = []
    ns = _user_ns()
    for candidate, source in (
        (ns.get("__session__"), "__session__"),
        (ns.get("__vsc_ipynb_file__"), "__vsc_ipynb_file__"),
        (os.environ.get("JPY_SESSION_NAME"), "JPY_SESSION_NAME"),
        (os.environ.get("PAPERMILL_INPUT_PATH") or ns.get("PAPERMILL_INPUT_PATH"), "PAPERMILL_INPUT_PATH"),
    ):
        if candidate:
            found = _existing(str(candidate))
            if found is not None:
                return found
            tried.append(f"{source}={candidate}")
    found = _from_sessions_api()
    if found is not None:
        return found
    tried.append("jupyter server sessions")
    raise ConfigError(
        "cannot find the running notebook's path (tried " + ", ".join(tried) + ")",
        hint="pass the path explicitly, e.g. NotebookPreprocessor().prepare('train.ipynb')",
    )


def _existing(candidate: str) -> Path | None:
    """The notebook file a session name points at: absolute, or relative to the current directory
    or to a running Jupyter server's root (servers may report paths relative to their root)."""
    p = Path(candidate)
    if p.suffix != ".ipynb":
        return None
    if p.is_file():
        return p
    if not p.is_absolute():
        for server in running_servers():
            q = Path(server.get("root_dir") or server.get("notebook_dir") or ".") / p
            if q.is_file():
                return q
    return None


def _user_ns() -> dict:
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return dict(getattr(shell, "user_ns", {}) or {}) if shell is not None else {}


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        conn = get_connection_file()
    except Exception:  # not in a kernel
        return None
    m = re.match(r"kernel-(.+)\.json$", Path(conn).name)
    return m.group(1) if m else None


def running_servers() -> list[dict]:
    """Server info files written by jupyter_server (jpserver-*.json) and classic notebook
    (nbserver-*.json) in the Jupyter runtime directory."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return []
    servers = []
    for f in sorted(Path(jupyter_runtime_dir()).glob("*server-*.json")):
        if not f.name.startswith(("jpserver-", "nbserver-")):
            continue
        try:
            servers.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return servers


def _from_sessions_api(kernel_id: str | None = None) -> Path | None:
    kernel_id = kernel_id or _kernel_id()
    if not kernel_id:
        return None
    import requests

    for server in running_servers():
        url = server.get("url", "").rstrip("/") + "/api/sessions"
        try:
            r = requests.get(url, params={"token": server.get("token", "")}, timeout=2)
            r.raise_for_status()
            sessions = r.json()
        except (requests.RequestException, ValueError):
            continue
        for s in sessions:
            if (s.get("kernel") or {}).get("id") == kernel_id:
                rel = (s.get("notebook") or {}).get("path") or s.get("path")
                if not rel:
                    continue
                root = Path(server.get("root_dir") or server.get("notebook_dir") or ".")
                p = root / rel
                if p.is_file():
                    return p
    return None

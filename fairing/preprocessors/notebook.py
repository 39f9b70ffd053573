"""`notebook` preprocessor: turn a notebook's code cells into one plain Python script and run it.

The conversion is our own rather than nbconvert's PythonExporter: the exporter rewrites magics into
`get_ipython()` calls that need a kernel, and we need an exact map from script lines back to cells
to report syntax errors where the user can find them. nbformat does the reading and validation.

Rules (README "Preprocessors" lists them for users):
- IPython syntax is recognised only where a statement starts (never inside a string or a bracketed
  expression), at any indentation.
- `!cmd` runs through the shell (`{expr}` and `$name` expanded, as IPython does); `x = !cmd` gives
  the output lines as a list. `%cd`, `%env`, `%time STMT`, `%timeit STMT`, `%prun STMT` keep their
  effect; other line magics and help (`obj?`) are dropped (a block left empty gets `pass`).
- `!pip install X==1` / `%pip install X==1` become requirements of the image, as written.
- Cell magics: `%%time`, `%%timeit`, `%%prun`, `%%capture` keep their body (run once, in the
  notebook's namespace: `%%timeit` reports that one run, `%%prun` prints its profile); `%%writefile [-a] F`
  writes the file; `%%bash`, `%%sh`, `%%script CMD` (and `%%python3`, `%%perl`, ...) run the cell
  through that program and fail the run on a non-zero exit; `%%html`, `%%markdown`, `%%latex` display
  it. Other cell magics are dropped with a warning.
- A cell's last expression is shown as Jupyter would (its repr, unless None or ended with `;`).
- `display()`, `get_ipython()` and `IPython.display` work in any image: a small stand-in ships in
  `.fairing/nbshim` and prints a text form, unless the requirements include ipython (then the real
  one is used). The choice follows the requirements, not the machine, so a local process run prints
  what the image prints.
- If any cell is tagged `fairing:include`, only those cells ship; cells tagged `fairing:exclude`
  never do. "cell N" in messages counts every cell from the top, markdown included.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .. import requirements as reqs_mod
from ..context import BuildContext
from ..errors import ConfigError
from .base import PYTHON, RUNTIME_DIR, Preprocessor

INCLUDE_TAG = "fairing:include"
EXCLUDE_TAG = "fairing:exclude"
NBSHIM = Path(__file__).parent.parent / "image_runtime" / "nbshim"  # runs inside the image
NBSHIM_DIR = f"{RUNTIME_DIR}/nbshim"
IP = "_fairing_ip"  # the script's name for the runtime shell (fairing_nb.Shell)
PROF = "_fairing_prof"  # a %%prun cell's profiler

PRELUDE = [
    "import sys as _fairing_sys, os as _fairing_os",
    "# .fairing/nbshim: runtime for !cmd and cell magics, and (unless the requirements install IPython)",
    "# a stand-in IPython.display that prints a text form.",
    "_fairing_sys.path.insert(0, _fairing_os.path.join(_fairing_os.path.dirname(_fairing_os.path.abspath(__file__)),"
    " '.fairing', 'nbshim'))",
    "from fairing_nb import get_ipython",
    "from IPython.display import display",
    f"{IP} = get_ipython()",
]


class NotebookWarning(UserWarning):
    """Something in the notebook was left out of the script, or needs the user's attention."""


_HELP = re.compile(r"^\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")
_ASSIGN_MAGIC = re.compile(r"^\s*[\w.\[\]'\", ]+?\s*=\s*[%!]")
_ASSIGN = re.compile(r"^(\s*)([\w.\[\]'\", ]+?)\s*=\s*([%!])(.*)$")
_PIP = re.compile(r"^\s*[%!]\s*(?:\{sys\.executable\}\s+-m\s+|python3?\s+-m\s+)?pip3?\s+install\b(.*)$")
_CONDA = re.compile(r"^\s*[%!]\s*(conda|mamba)\s+install\b")
# pip flags that change nothing about which packages end up installed.
_PIP_HARMLESS = {"-q", "-qq", "-qqq", "--quiet", "-U", "--upgrade", "--user", "--no-cache-dir", "-v", "--verbose",
                 "--force-reinstall", "--no-warn-script-location", "--disable-pip-version-check", "--pre",
                 "--no-input", "--break-system-packages", "--ignore-installed", "-I"}
_PIP_HARMLESS_VALUE = {"--progress-bar", "--upgrade-strategy", "--root-user-action"}
_TIMEIT_OPTS = re.compile(r"^(?:\s*-(?:[nr]\s*\d+|p\s*\d+|[qotc]))*\s*")
SCRIPT_MAGICS = {"bash": "bash", "sh": "sh", "python": "python3", "python3": "python3", "python2": "python2",
                 "pypy": "pypy", "perl": "perl", "ruby": "ruby"}
DISPLAY_MAGICS = ("html", "markdown", "latex", "svg", "javascript", "js")
BODY_MAGICS = ("time", "timeit", "prun", "capture")
SHELL_ALIASES = ("ls", "cat", "cp", "mv", "rm", "rmdir", "mkdir", "ll", "lf", "lk", "ldir", "lx")


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
    dropped_cells: list[tuple[int, str]] = field(default_factory=list)  # (cell number, "%%sql")
    dropped_lines: list[tuple[int, int, str]] = field(default_factory=list)  # (cell, line, text)
    cells: list[int] = field(default_factory=list)  # numbers of the cells that made it in
    installs: list[tuple[int, str]] = field(default_factory=list)  # (cell, requirement) from pip lines
    conda: list[tuple[int, str]] = field(default_factory=list)  # (cell, line): conda installs, not run

    def locate(self, lineno: int) -> tuple[int, int] | None:
        # A blank separator line (errors at EOF of a cell land there) maps to the line before it.
        for i in range(min(lineno, len(self.lines)) - 1, -1, -1):
            if self.lines[i] is not None:
                return self.lines[i]
        return None


def _pip_requirements(args: str, where: str) -> list[str]:
    """The requirements a `pip install ARGS` line asks for, exactly as written."""
    try:
        tokens = shlex.split(args, comments=True)
    except ValueError as e:
        raise ConfigError(f"{where}: cannot read the pip line: {e}", hint="fix the quoting") from None
    reqs, i = [], 0
    while i < len(tokens):
        t = tokens[i]
        if t in _PIP_HARMLESS:
            pass
        elif t in _PIP_HARMLESS_VALUE:
            i += 1
        elif t.split("=", 1)[0] in _PIP_HARMLESS_VALUE:
            pass
        elif t.startswith("-"):
            raise ConfigError(f"{where}: pip option {t.split('=', 1)[0]!r} is not supported in a notebook install line",
                              hint="list plain requirements (name==version); configure package indexes in the "
                                   "builder, and pass requirement files with --requirements")
        elif "{" in t or "$" in t:
            raise ConfigError(f"{where}: the pip line uses a variable ({t}), which is only known when the notebook runs",
                              hint="write the requirement out, e.g. pandas==2.2.2")
        else:
            reqs.append(t)
        i += 1
    return reqs


def _line_magic(indent: str, name: str, rest: str) -> str | None:
    """Python for a `%name rest` line, or None to drop it."""
    rest = rest.strip()
    if name in ("time", "timeit", "prun") and rest:
        opts = ""
        if name == "timeit":
            rest = _TIMEIT_OPTS.sub("", rest, count=1)
        elif name == "prun":
            opts, rest = _prun_options(rest)
        try:
            body = ast.parse(rest).body
        except SyntaxError:
            body = []
        # A simple statement can share a line with the timer calls; a compound one cannot (it
        # then runs untimed, as written).
        if len(body) == 1 and not isinstance(body[0], (ast.For, ast.While, ast.If, ast.With, ast.Try,
                                                       ast.FunctionDef, ast.ClassDef)):
            if name == "prun":
                return f"{indent}{PROF} = {IP}.prun_start({opts!r}); {rest}; {PROF}.disable(); {IP}.prun_stop()"
            return f"{indent}{IP}.{name}_start(); {rest}; {IP}.{name}_stop()"
        return indent + rest
    if name == "cd":
        return f"{indent}{IP}.chdir({rest!r})"
    if name == "env" and rest:
        return f"{indent}{IP}.env({rest!r})"
    if name in ("system", "sx"):
        return f"{indent}{IP}.system({rest!r})"
    if name in SHELL_ALIASES:  # IPython's default aliases for shell commands
        return f"{indent}{IP}.system({(name + ' ' + rest).strip()!r})"
    if name == "pip":
        return f"{indent}{IP}.system({('python3 -m pip ' + rest)!r})"
    return None


def _prun_options(arg: str) -> tuple[str, str]:
    """(options, statement) of `%prun [-s KEY] [-l N] [-T F] [-D F] [-q] [-r] STMT`."""
    words, opts = arg.split(" "), []
    while words and words[0].startswith("-"):
        w = words.pop(0)
        opts.append(w)
        if w in ("-s", "-l", "-T", "-D") and words:
            opts.append(words.pop(0))
        while words and words[0] == "":
            words.pop(0)
    return " ".join(opts), " ".join(words).strip()


def _translate(line: str, where: str, installs: list[str], conda: list[str]) -> str | None:
    """Python for one IPython-syntax line (same indentation), or None to drop it."""
    indent = line[: len(line) - len(line.lstrip())]
    s = line.strip()
    if _HELP.match(line):
        return None
    m = _PIP.match(line)
    if m:
        installs.extend(_pip_requirements(m.group(1), where))
        return None
    if _CONDA.match(line):
        conda.append(s)
        return None
    if s.startswith("!!"):
        return f"{indent}{IP}.getoutput({s[2:].strip()!r})"
    if s.startswith("!"):
        return f"{indent}{IP}.system({s[1:].strip()!r})"
    if s.startswith("%") and not s.startswith("%%"):
        name, _, rest = s[1:].partition(" ")
        return _line_magic(indent, name, rest)
    m = _ASSIGN.match(line)
    if m:
        indent, target, kind, rest = m.groups()
        if kind == "!":
            return f"{indent}{target} = {IP}.getoutput({rest.strip()!r})"
        name, _, arg = rest.strip().partition(" ")
        if name in ("time", "timeit", "prun") and arg.strip():
            return f"{indent}{target} = {_TIMEIT_OPTS.sub('', arg.strip(), count=1)}"
        if name in ("sx", "system"):
            return f"{indent}{target} = {IP}.getoutput({arg.strip()!r})"
        return f"{indent}{target} = {IP}.run_line_magic({name!r}, {arg.strip()!r})"
    return None


@dataclass
class _Cell:
    kept: list[str]
    numbers: list[int]  # cell line number of each kept line
    dropped: list[int]
    installs: list[str]
    conda: list[str]


def _translate_cell(source: str, where: str, first_line: int = 1) -> _Cell:
    """Translate IPython syntax in one cell (or a cell magic's body starting at `first_line`)."""
    raw = source.splitlines()
    sanitized: list[str] = []  # raw lines, IPython lines translated or replaced by a `pass` placeholder
    placeholders: set[int] = set()  # sanitized line numbers (1-based) that are placeholders
    installs: list[str] = []
    conda: list[str] = []
    for n, line in enumerate(raw, 1):
        if _is_magic(line) and not _continues(sanitized):
            py = _translate(line, f"{where}, line {n + first_line - 1}", installs, conda)
            if py is None:
                indent = line[: len(line) - len(line.lstrip())]
                sanitized.append(indent + "pass")
                placeholders.add(n)
                continue
            sanitized.append(py)
        else:
            sanitized.append(line)
    keep_pass = _needed_placeholders("\n".join(sanitized), placeholders)
    kept, numbers, dropped = [], [], []
    for n, line in enumerate(sanitized, 1):
        if n in placeholders:
            dropped.append(n + first_line - 1)
            if n not in keep_pass:
                continue
        kept.append(line)
        numbers.append(n + first_line - 1)
    return _Cell(kept, numbers, dropped, installs, conda)


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


def _show_last_expression(lines: list[str], hook: str = "displayhook") -> list[str]:
    """Jupyter shows a cell's last expression: wrap it in the display hook (skipped for print()
    calls, which show nothing, and for a line ended with ';', which Jupyter keeps quiet)."""
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return lines
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return lines
    node = tree.body[-1].value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
        return lines
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            isinstance(node.func.value, ast.Name) and node.func.value.id == IP:
        return lines  # a translated !cmd: IPython shows nothing for it
    out = list(lines)
    end_line = out[node.end_lineno - 1].encode()
    tail = end_line[node.end_col_offset:].decode()
    if tail.split("#", 1)[0].strip().startswith(";"):
        return lines
    out[node.end_lineno - 1] = end_line[: node.end_col_offset].decode() + ")" + tail
    start_line = out[node.lineno - 1].encode()
    out[node.lineno - 1] = (start_line[: node.col_offset].decode() + f"{IP}.{hook}("
                            + start_line[node.col_offset:].decode())
    return out


def first_name(first: str) -> str:
    return first.strip()[2:].partition(" ")[0]


def _cell_magic(first: str, body: str, body_line: int, where: str):
    """(prologue, translated body or None, epilogue) for a cell starting with `first` (the `%%` line);
    None if the magic cannot run outside IPython."""
    name, _, arg = first[2:].strip().partition(" ")
    arg = arg.strip()
    if name in BODY_MAGICS:
        cell = _translate_cell(body, where, body_line)
        pro, epi = [], []
        if name == "time":
            pro, epi = [f"{IP}.time_start()"], [f"{IP}.time_stop()"]
        elif name == "capture":
            try:
                words = shlex.split(arg)
            except ValueError:
                words = arg.split()
            var = next((w for w in words if not w.startswith("-")), None)
            pro = [f"{IP}.capture_start({var!r}, stdout={'--no-stdout' not in words}, "
                   f"stderr={'--no-stderr' not in words})"]
            epi = [f"{IP}.capture_stop()"]
        elif name == "timeit":
            setup = _TIMEIT_OPTS.sub("", arg, count=1).strip()  # `%%timeit SETUP`: setup runs untimed
            pro, epi = [*([setup] if setup else []), f"{IP}.timeit_start()"], [f"{IP}.timeit_stop()"]
        elif name == "prun":
            pro, epi = [f"{PROF} = {IP}.prun_start({arg!r})"], [f"{PROF}.disable()", f"{IP}.prun_stop()"]
        return pro, cell, epi
    text = body + "\n" if body and not body.endswith("\n") else body
    if name == "writefile":
        words = arg.split()
        append = any(w in ("-a", "--append") for w in words)
        filename = " ".join(w for w in words if w not in ("-a", "--append"))
        if not filename:
            raise ConfigError(f"{where}: %%writefile needs a file name", hint="write %%writefile path/to/file")
        return [f"{IP}.writefile({filename!r}, {text!r}, append={append})"], None, []
    if name in SCRIPT_MAGICS or name == "script":
        words = arg.split()
        if name != "script":
            words = [SCRIPT_MAGICS[name], *words]
        if not words or any(w.startswith("--") for w in words):
            return None
        return [f"{IP}.script({words!r}, {text!r})"], None, []
    if name in DISPLAY_MAGICS:
        return [f"{IP}.display_cell({name!r}, {text!r})"], None, []
    return None


def convert(nb, name: str = "notebook") -> Script:
    """Convert a v4 notebook node into a Script (no syntax check; see `check`)."""
    cells = nb.cells
    tagged = any(INCLUDE_TAG in (c.get("metadata", {}).get("tags") or []) for c in cells)
    out: list[str] = [f"# Converted by fairing from {name}; edit the notebook, not this file.", *PRELUDE, ""]
    where: list[tuple[int, int] | None] = [None] * len(out)
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
        raw = source.splitlines()
        first_at = next(i for i, line in enumerate(raw) if line.strip())
        cell_where = f"notebook {name} cell {number}"
        if raw[first_at].lstrip().startswith("%%"):
            body_line = first_at + 2
            parts = _cell_magic(raw[first_at].strip(), "\n".join(raw[first_at + 1:]), body_line, cell_where)
            if parts is None:
                script.dropped_cells.append((number, raw[first_at].split()[0]))
                continue
            pro, body, epi = parts
            lines = [(line, (number, first_at + 1)) for line in pro]
            if body is not None:
                script.dropped_lines += [(number, n, raw[n - 1].strip()) for n in body.dropped]
                script.installs += [(number, r) for r in body.installs]
                script.conda += [(number, c) for c in body.conda]
                # %%time shows the value after the timings: time_stop() displays what `keep` stored.
                shown = _show_last_expression(body.kept, "keep" if first_name(raw[first_at]) == "time" else "displayhook")
                lines += list(zip(shown, ((number, n) for n in body.numbers)))
            lines += [(line, None) for line in epi]
        else:
            body = _translate_cell(source, cell_where)
            script.dropped_lines += [(number, n, raw[n - 1].strip()) for n in body.dropped]
            script.installs += [(number, r) for r in body.installs]
            script.conda += [(number, c) for c in body.conda]
            lines = list(zip(_show_last_expression(body.kept), ((number, n) for n in body.numbers)))
        if not any(line.strip() for line, _ in lines):
            continue
        script.cells.append(number)
        out.append(f"# cell {number}")
        where.append(None)
        for line, loc in lines:
            out.append(line)
            where.append(loc)
        out.append("")
        where.append(None)
    script.text = "\n".join(out).rstrip("\n") + "\n"
    script.lines = where
    return script


def read(path: str | os.PathLike):
    """Read and validate a notebook; one clear ConfigError for anything that is not a notebook.
    Cells without ids (notebooks written before nbformat 4.5 ids, or by hand) get them here, so
    nbformat's MissingIDFieldWarning never reaches the user."""
    import nbformat
    from nbformat.validator import normalize
    from nbformat.warnings import MissingIDFieldWarning

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
        with warnings.catch_warnings():
            # normalize() below adds the missing ids; nbformat warns about them while reading.
            warnings.filterwarnings("ignore", category=MissingIDFieldWarning)
            nb = nbformat.reads(text, as_version=4)
            _, normalized = normalize(nb)
            nb = nbformat.from_dict(normalized)
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


def shim_files(requirements) -> dict[str, Path]:
    """The runtime shipped next to a converted notebook: fairing_nb always, the IPython stand-in
    unless the requirements install the real IPython."""
    wants_ipython = any(reqs_mod.name_of(r) == "ipython" for r in requirements)
    files = {}
    for f in sorted(NBSHIM.rglob("*.py")):
        rel = f.relative_to(NBSHIM).as_posix()
        if wants_ipython and rel.startswith("IPython/"):
            continue
        files[f"{NBSHIM_DIR}/{rel}"] = f
    return files


class NotebookPreprocessor(Preprocessor):
    """Ship a notebook as a script. `prepare(path=None)`: without a path, the running notebook's path
    is found with `find_notebook_path()`. A requirements.txt next to the notebook is used when no
    requirements are given; `pip install` lines in the notebook are added to them."""

    kind = "notebook"

    def prepare(self, entry: str | os.PathLike | None = None) -> BuildContext:
        path = Path(entry) if entry is not None else find_notebook_path()
        nb = read(path)
        script = convert(nb, path.name)
        _warn(script, path.name)
        if not script.cells:
            raise ConfigError(
                f"notebook {path} has no code cells to run",
                hint=f"add code cells (cells tagged {EXCLUDE_TAG}, unsupported %% cell magics and, when any cell "
                f"is tagged {INCLUDE_TAG}, untagged cells are left out)",
            )
        check(script, path.name)
        reqs = notebook_requirements(script, path.name,
                                     self.resolve_requirements(path.parent, path.parent / "requirements.txt"))
        name = script_name(path)
        files = self.included_files(path.parent)
        files.update(shim_files(reqs))
        files[name] = script.text.encode("utf-8")
        return self._context(files, [PYTHON, "-u", name], requirements=reqs)


def notebook_requirements(script: Script, name: str, given) -> tuple[str, ...]:
    """The user's requirements plus the notebook's install lines (a pin the user gave wins);
    announced in one line, and unpinned ones named in one warning."""
    from ..messages import notice

    if not script.installs:
        return tuple(given)
    found = reqs_mod.resolve([r for _, r in script.installs])
    notice(f"notebook {name}: requirements from its install lines: {', '.join(found)}")
    unpinned = [r for r in found if not _pinned(r)]
    if unpinned:
        warnings.warn(f"notebook {name}: unpinned installs {', '.join(unpinned)}: the image gets whatever version "
                      "is newest when it is built; pin them (name==version) to make it reproducible",
                      NotebookWarning, stacklevel=3)
    return reqs_mod.ensure(tuple(given), found)


def installs_done_at_build(source: str) -> str:
    """A cell with its install lines (`%pip install`, `!pip install`) replaced by `pass` and a
    comment: for `full_notebook`, whose kernel would otherwise run pip again in the image."""
    out = []
    for line in source.split("\n"):
        if _PIP.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}pass  # fairing installed this when the image was built: {line.strip()}"
        out.append(line)
    return "\n".join(out)


def _pinned(req: str) -> bool:
    from packaging.requirements import Requirement

    r = Requirement(req)
    return r.url is not None or any(s.operator in ("==", "===") for s in r.specifier)


def _warn(script: Script, name: str) -> None:
    if script.dropped_cells:
        listed = ", ".join(f"cell {n} ({magic})" for n, magic in script.dropped_cells)
        warnings.warn(f"notebook {name}: dropped cell-magic cells, they do not run outside IPython: {listed}",
                      NotebookWarning, stacklevel=3)
    if script.conda:
        listed = "; ".join(f"cell {c}: {text}" for c, text in script.conda)
        warnings.warn(f"notebook {name}: conda installs are not run ({listed}); "
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

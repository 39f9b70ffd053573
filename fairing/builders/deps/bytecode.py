"""Bytecode for the dependency layers, so a pod does not compile what it imports at every start.

Wheels are installed without compiling (their bytes must be the same anywhere), so each dependency
layer gets a companion layer holding its modules' `__pycache__/*.pyc`. Measured on the heavy set
(numpy, pandas, scikit-learn, scipy): importing them takes 4.5-5 s without bytecode and under 2 s
with it, which is most of a prebuilt image's time to its first training line.

Bytecode is made by an interpreter of the image's Python X.Y found on this machine (this one, or
`pythonX.Y` on PATH). Its bytes depend on that interpreter and, through marshal's reference flags,
on the process state, so every group is compiled in a fresh `-I -S` process with a fixed hash seed:
the same interpreter version then gives the same bytes, whatever this process has imported. The
interpreter's full version is part of the layer's cache key and of its history line. The source
layers do not change at all, so they stay identical on every machine (and shared in the registry).

The pycs are "unchecked hash" pycs (PEP 552) at optimization level 0: valid whatever the files'
mtimes, never stat()ed against the source. Test directories (`tests/`, `test/`) are skipped:
nothing imports them at run time, and they are half of the heavy set's modules. What a wheel
compiles to is kept per wheel in the bytecode store (store.py), so it is compiled once per machine."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Mapping

from ... import settings
from ...errors import BuildError, ConfigError
from ...oci.layer import Member, Source

CHOICES = ("auto", "on", "off")
_SKIP_DIRS = frozenset({"tests", "test"})

OPTIMIZE = 0  # the level of a plain `python` (no -O): the .pyc name has no opt- tag
# Runs in the image's Python X.Y with -I -S: stdlib only. Reads [(path in image, source bytes)]
# and writes ([(pyc path in image, pyc bytes)], CPU seconds of this process), both pickled
# (protocol 4 is read by 3.4+).
_COMPILER = r"""
import importlib.util, pickle, sys, time
from importlib._bootstrap_external import _code_to_hash_pyc
out = []
for path, src in pickle.load(sys.stdin.buffer):
    try:
        code = compile(src, path, "exec", dont_inherit=True, optimize=%d)
    except (SyntaxError, ValueError):
        continue  # as compileall does: the module fails where it is imported, as it would anyway
    out.append((importlib.util.cache_from_source(path), _code_to_hash_pyc(code, importlib.util.source_hash(src), False)))
    del code
pickle.dump((out, time.process_time()), sys.stdout.buffer, protocol=4)
""" % OPTIMIZE
_PROBE = ("import sys, importlib.util; print('%d.%d.%d' % sys.version_info[:3], sys.implementation.cache_tag, "
          "importlib.util.MAGIC_NUMBER.hex())")


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.7": part of the bytecode layers' key
    cache_tag: str  # "cpython-311"
    magic: str = ""  # importlib.util.MAGIC_NUMBER as hex: the pyc format this interpreter reads


def setting(value) -> str:
    """`bytecode=` as given (True/False/"auto"/"on"/"off"), else $FAIRING_BYTECODE, else auto."""
    if value is None:
        value = settings.bytecode() or "auto"
    if value is True:
        return "on"
    if value is False:
        return "off"
    v = str(value).strip().lower()
    v = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(v, v)
    if v not in CHOICES:
        raise ConfigError(f"bytecode={value!r} is not one of auto, on, off",
                          hint="bytecode='auto' compiles the dependencies when a matching Python is on this machine")
    return v


_found: dict[str, Interpreter | None] = {}
_found_lock = threading.Lock()


def interpreter(python: str) -> Interpreter | None:
    """An interpreter of Python `python` ("3.11") on this machine, or None (remembered)."""
    with _found_lock:
        if python not in _found:
            _found[python] = _find(python)
        return _found[python]


def _find(python: str) -> Interpreter | None:
    candidates = []
    if "%d.%d" % sys.version_info[:2] == python and sys.executable:
        candidates.append(sys.executable)
    for name in (f"python{python}", "python3"):
        exe = shutil.which(name)
        if exe and exe not in candidates:
            candidates.append(exe)
    for exe in candidates:
        try:  # pyenv shims exist for versions that are not selected: ask the interpreter itself
            r = subprocess.run([exe, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        parts = r.stdout.split()
        if r.returncode == 0 and len(parts) == 3 and re.match(rf"^{re.escape(python)}\.\d+$", parts[0]):
            return Interpreter(exe, *parts)
    return None


def sources(entries: Mapping[str, Source]) -> list[tuple[str, bytes]]:
    """The modules of a dependency layer worth compiling: .py files under SITE_DIR, outside test
    directories and bin/, in path order (the order does not change the bytes, but keeps it plain)."""
    from .target import SITE_DIR

    site = SITE_DIR.strip("/") + "/"
    out = []
    for path in sorted(entries):
        src = entries[path]
        rel = path.strip("/")
        if not rel.endswith(".py") or not rel.startswith(site) or rel[len(site):].startswith("bin/"):
            continue
        if _SKIP_DIRS.intersection(rel.split("/")[:-1]):
            continue
        if isinstance(src, Member):
            with src.open() as f:
                data = f.read()
        elif isinstance(src, (bytes, bytearray)):
            data = bytes(src)
        else:
            continue
        out.append(("/" + rel, data))
    return out


def compile_all(interp: Interpreter, modules: list[tuple[str, bytes]], stats: dict | None = None) -> dict[str, bytes]:
    """{pyc path in the image: bytes} for `modules`, compiled by `interp` in a fresh process;
    `stats` (if given) gets the process's CPU seconds ("cpu") and the modules ("modules") added."""
    if not modules:
        return {}
    env = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    try:
        r = subprocess.run([interp.path, "-I", "-S", "-W", "ignore", "-c", _COMPILER], input=pickle.dumps(modules, protocol=4),
                           capture_output=True, env=env, timeout=1800)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"could not compile the dependencies with {interp.path}: {e}",
                         hint="pass bytecode=False (FAIRING_BYTECODE=off) to build without bytecode") from None
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"{interp.path} failed compiling the dependencies: {last}",
                         hint="pass bytecode=False (FAIRING_BYTECODE=off) to build without bytecode")
    out, cpu = pickle.loads(r.stdout)
    if stats is not None:
        stats["cpu"] = stats.get("cpu", 0.0) + cpu
        stats["modules"] = stats.get("modules", 0) + len(modules)
    return {path.lstrip("/"): data for path, data in out}

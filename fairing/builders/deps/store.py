"""The bytecode store: what each wheel compiles to, kept once per machine in
$FAIRING_CACHE/bytecode/, so a later build that installs the same wheel for the same interpreter
(another project, a pin change, a build with an emptied layer cache) puts its .pyc files in its
bytecode layer without compiling anything.

An entry is keyed by everything its bytes depend on: the wheel's sha256 (its files), how it is
installed (INSTALLER and SITE_DIR: the paths compiled into the code objects), the interpreter's
full version, cache tag and magic number, the optimization level and the pyc kind (unchecked
hash). It is a zip of the .pyc files, stored uncompressed (the layer compresses them), written to
a temp file and renamed into place; one that does not read back whole (not a zip, a bad CRC) is
compiled again.

Compiling: a wheel's modules are cut, in path order, into units of about UNIT source bytes, and
each unit is compiled in a fresh process (bytecode.compile_all). The units of every wheel of a
build share one pool of as many processes as there are cores, and start as soon as a wheel is
on disk, while the layers are being written. A unit's bytes depend only on its modules and the
interpreter, never on which process compiled it or how many ran, so a wheel gives the same entry
and the same layer anywhere."""
from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

from ...oci.cache import Cache, touch
from ...oci.layer import Source
from .bytecode import OPTIMIZE, Interpreter, compile_all, sources
from .target import SITE_DIR
from .wheels import INSTALLER

AREA = "bytecode"
UNIT = 2 << 20  # source bytes per compiling process: enough units to keep every core busy on one big wheel
FORMAT = 1  # bump when what an entry holds changes for the same key
_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: entries do not depend on when they were written


def key(wheel_sha256: str, interp: Interpreter) -> str:
    payload = {"wheel": wheel_sha256, "installer": INSTALLER, "site": SITE_DIR, "python": interp.version,
               "cache_tag": interp.cache_tag, "magic": interp.magic, "optimize": OPTIMIZE, "pyc": "unchecked-hash",
               "format": FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def entry_path(cache: Cache, k: str) -> Path:
    return cache.root / AREA / k[:2] / f"{k}.zip"


def load(cache: Cache, k: str) -> dict[str, bytes] | None:
    """{pyc path in the image: bytes} stored under `k`, or None (absent or damaged)."""
    p = entry_path(cache, k)
    try:
        with zipfile.ZipFile(p) as z:
            out = {i.filename: z.read(i) for i in z.infolist()}  # read() checks each CRC
    except FileNotFoundError:
        return None
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        return None  # damaged: compiled again and rewritten
    touch(p)
    return out


def save(cache: Cache, k: str, compiled: Mapping[str, bytes]) -> None:
    with cache._atomic(entry_path(cache, k)) as f:  # noqa: SLF001 - the cache's one atomic writer
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name in sorted(compiled):
                z.writestr(zipfile.ZipInfo(name, _DATE), compiled[name])


def units(modules: list[tuple[str, bytes]], size: int = UNIT) -> list[list[tuple[str, bytes]]]:
    """`modules` (in path order) cut into consecutive runs of about `size` source bytes."""
    out: list[list] = []
    run: list = []
    total = 0
    for m in modules:
        run.append(m)
        total += len(m[1])
        if total >= size:
            out.append(run)
            run, total = [], 0
    if run:
        out.append(run)
    return out


class Compiler:
    """Each wheel's bytecode, from the store or compiled on a pool of `jobs` fresh processes at a
    time. `stats` counts what was compiled (cpu seconds, modules, wheels) and what was reused."""

    def __init__(self, interp: Interpreter, cache: Cache, jobs: int):
        self.interp, self.cache = interp, cache
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fairing-compile")
        self.stats: dict = {"cpu": 0.0, "modules": 0, "compiled": 0, "reused": 0}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def wheel(self, wheel_sha256: str, entries: Mapping[str, Source]) -> "Pending":
        """Start on one wheel's installed files (read now: call it while the wheel is open)."""
        k = key(wheel_sha256, self.interp)
        stored = load(self.cache, k)
        if stored is not None:
            with self._lock:
                self.stats["reused"] += 1
            return Pending(self, k, stored, [])
        return Pending(self, k, None, [self.pool.submit(self._compile, u) for u in units(sources(entries))])

    def _compile(self, unit: list) -> dict[str, bytes]:
        stats: dict = {}
        out = compile_all(self.interp, unit, stats)
        with self._lock:
            self.stats["cpu"] += stats.get("cpu", 0.0)
            self.stats["modules"] += stats.get("modules", 0)
        return out


class Pending:
    """One wheel's bytecode: result() waits for its units and stores what was compiled."""

    def __init__(self, compiler: Compiler, k: str, stored: dict | None, futures: list[Future]):
        self.compiler, self.key, self.stored, self.futures = compiler, k, stored, futures

    def result(self) -> dict[str, bytes]:
        if self.stored is not None:
            return self.stored
        out: dict[str, bytes] = {}
        for f in self.futures:
            out.update(f.result())
        save(self.compiler.cache, self.key, out)  # a wheel with nothing to compile is stored too
        if self.futures:
            with self.compiler._lock:  # noqa: SLF001
                self.compiler.stats["compiled"] += 1
        self.stored = out
        return out

    def cancel(self) -> None:
        """Drop the units not started yet (the layer they were for is not being made)."""
        for f in self.futures:
            f.cancel()

"""Making a dependency group's layers: its install layer (cache.build_layer) and, with an
interpreter, its bytecode layer, on one pool of workers() layer threads per build, each
layer_key made at most once.

Both the groups a resolved build needs (layers.py) and the ones begun before resolution answered
(speculate.py) go through the build's one Maker: a speculative layer takes one of the same
threads rather than adding more, and a resolved group whose layers are already being made waits
for that job instead of starting another. A speculative job tells nobody of what it makes (the
append builder's on_layer starts an upload) until a resolved group claims it; one nobody claims
is stopped at its next file, and what it finished stays in the content-addressed cache only."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Mapping

from ...oci.cache import Cache, CachedLayer
from ...oci.layer import Compression, Member, Source, workers
from .bytecode import Interpreter
from .groups import NO_MODULES, Group, bytecode_key, layer_key
from .resolve import Wheel
from .store import Compiler
from .target import SITE_DIR
from .wheels import installed

timings_lock = threading.Lock()


class Abandoned(Exception):
    """A job stopped because nobody needs its layers any more (or the build failed)."""


def _stoppable(entries: Mapping[str, Source], stop: threading.Event) -> dict[str, Source]:
    """`entries` whose wheel members refuse to open once `stop` is set: a layer being written
    stops at its next file (write_layer then drops its temp file)."""
    def guarded(m: Member) -> Member:
        def open_():
            if stop.is_set():
                raise Abandoned()
            return m.open()
        return Member(open_, m.size, m.executable)

    return {p: guarded(s) if isinstance(s, Member) else s for p, s in entries.items()}


class Job:
    """One group's layers being made. `future` gives (layer, bytecode layer or NO_MODULES)."""

    def __init__(self, group: Group, speculative: bool, on_layer: Callable[[CachedLayer], None] | None,
                 cached: tuple[CachedLayer, ...] = ()):
        self.group, self.speculative = group, speculative
        self.claimed = not speculative
        self.stop = threading.Event()
        self.future: Future | None = None
        self._lock = threading.Lock()
        self._made: list[tuple[CachedLayer, float]] = []  # each layer made, and when
        self._cached = cached  # its layer found in the cache (speculative jobs: told on claim)
        self._send = on_layer

    def made(self, layer: CachedLayer) -> None:
        with self._lock:
            self._made.append((layer, time.perf_counter()))
            send = self._send if self.claimed else None
        if send:
            send(layer)

    def claim(self, on_layer: Callable[[CachedLayer], None]) -> None:
        """A resolved group needs exactly these layers: pass on what was made, and what will be."""
        with self._lock:
            self.claimed, self._send = True, on_layer
            known = [*self._cached, *(layer for layer, _ in self._made)]
        for layer in known:
            on_layer(layer)

    def made_by(self, when: float) -> int:
        """How many of its layers were made before `when` (perf_counter)."""
        with self._lock:
            return sum(1 for _, t in self._made if t <= when)


class Maker:
    """The layer threads of one build. Use as a context manager: leaving it waits for every job,
    and stops them first when the block raised, so no layer thread outlives the build."""

    def __init__(self, cache: Cache, compression: Compression, interp: Interpreter | None, timings: dict):
        self.cache, self.compression, self.interp, self.timings = cache, compression, interp, timings
        self.pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="fairing-layer")
        self.jobs: dict[str, Job] = {}  # by layer_key: the group's wheels by sha256, so its bytes
        self._lock = threading.Lock()
        self._compiler: Compiler | None = None
        self._closed = False

    def __enter__(self) -> "Maker":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(abort=exc_type is not None)

    @property
    def compile_stats(self) -> dict | None:
        return self._compiler.stats if self._compiler else None

    def compiler(self) -> Compiler:
        with self._lock:
            if self._compiler is None:
                self._compiler = Compiler(self.interp, self.cache, workers())
            return self._compiler

    def job(self, g: Group) -> Job | None:
        """The job already making `g`'s layers (the same wheel files), if any."""
        with self._lock:
            return self.jobs.get(layer_key(g, self.compression))

    def start(self, g: Group, local: Callable[[Wheel], Path], layer: CachedLayer | None, code, *,
              on_layer: Callable[[CachedLayer], None] | None = None, speculative: bool = False) -> Job:
        """Make what `g` lacks (`layer` None: its install layer; `code` None: its bytecode layer),
        reading each wheel from `local(wheel)` (which may wait for its download). A job already
        making the same layer_key is returned instead of a second one."""
        key = layer_key(g, self.compression)
        with self._lock:
            if self._closed:
                raise Abandoned()
            job = self.jobs.get(key)
            if job is None:
                # What the cache holds of a speculative group is told when a resolved one claims it
                # (the caller tells its own otherwise).
                cached = tuple(x for x in (layer, code) if speculative and x is not None and x is not NO_MODULES)
                job = self.jobs[key] = Job(g, speculative, on_layer, cached)
                job.future = self.pool.submit(self._make, job, local, layer, code)
        return job

    def abandon_unclaimed(self) -> int:
        """Stop the speculative jobs no resolved group claimed; how many there were."""
        with self._lock:
            unclaimed = [j for j in self.jobs.values() if not j.claimed]
        for j in unclaimed:
            j.stop.set()
            j.future.cancel()
        return len(unclaimed)

    def speculation(self, resolved_at: float) -> dict[str, int]:
        """Counts for the build's phases: speculative groups used, their layers made before
        resolution answered (`resolved_at`), and speculative groups not used."""
        with self._lock:
            spec = [j for j in self.jobs.values() if j.speculative]
        used = [j for j in spec if j.claimed]
        return {"speculated": len(used), "speculated_early": sum(j.made_by(resolved_at) for j in used),
                "speculated_unused": len(spec) - len(used)}

    def close(self, abort: bool = False) -> None:
        with self._lock:
            self._closed = True
            jobs = list(self.jobs.values())
        if abort:
            for j in jobs:
                j.stop.set()
        self.abandon_unclaimed()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._compiler:
            self._compiler.close()

    def _make(self, job: Job, local: Callable[[Wheel], Path], layer: CachedLayer | None, code) -> tuple[CachedLayer, object]:
        g, cache, compression, timings = job.group, self.cache, self.compression, self.timings
        files = {w.sha256: local(w) for w in g.wheels}
        t1 = time.perf_counter()
        per_wheel = []
        try:
            with ExitStack() as open_wheels:
                entries: dict = {}
                for w in g.wheels:  # a later wheel's file wins, as it would with pip (its .pyc too)
                    mine = _stoppable(open_wheels.enter_context(installed(files[w.sha256], SITE_DIR.lstrip("/"))), job.stop)
                    entries.update(mine)
                    if code is None:
                        per_wheel.append(self.compiler().wheel(w.sha256, mine))
                with timings_lock:
                    timings["install"] = timings.get("install", 0.0) + time.perf_counter() - t1
                if layer is None:
                    # Unzipping happens here, as the tar is written (counted as tar time).
                    layer = cache.build_layer(entries, compression=compression, timings=timings)
                    job.made(layer)
                    cache.put_key("deplayer", layer_key(g, compression), {
                        "diff_id": layer.diff_id, "wheels": [w.filename for w in g.wheels]})
            if code is None:
                compiled: dict = {}
                for one in per_wheel:
                    if job.stop.is_set():
                        raise Abandoned()
                    compiled.update(one.result())
                code = cache.build_layer(compiled, compression=compression, timings=timings) if compiled else NO_MODULES
                if code is not NO_MODULES:
                    job.made(code)
                cache.put_key("pyclayer", bytecode_key(g, compression, self.interp), {
                    "diff_id": getattr(code, "diff_id", ""), "empty": code is NO_MODULES, "python": self.interp.version})
            return layer, code
        except BaseException:
            for one in per_wheel:
                one.cancel()
            raise

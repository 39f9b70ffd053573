"""Per-package dependency layers: the resolved wheels grouped (groups.py), each group's layers
from the cache or made now, on all cores (making.py).

Each layer is keyed by the sha256s of its wheels (plus the install layout, mtime and
compression) and cached by DiffID: a layer whose wheels did not change is neither downloaded,
unpacked, tarred nor compressed again, and the registry already has its blob (push HEADs first).
Layers that must be made are made side by side on all cores.

Given an interpreter of the image's Python (bytecode.py), each layer with modules also gets a
companion layer of their bytecode, keyed like it plus that interpreter's version. Its .pyc files
come per wheel from the bytecode store (store.py), compiled only for wheels it does not hold yet,
on all cores, starting as each wheel is on disk and while the layers are being written.

A group whose layers speculation began before resolution answered (speculate.py) is one with the
same layer_key: the same wheel files by sha256, so the same bytes. It waits for that job."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ...oci.cache import Cache, CachedLayer
from ...oci.layer import GZIP, Compression
from .bytecode import Interpreter
from .groups import MAX_LAYERS, NO_MODULES, OWN_LAYER, SMALL_GROUPS, Group, bytecode_key, cached_bytecode, cached_layer, group, layer_key
from .index import Access
from .making import Maker
from .resolve import Wheel
from .wheels import download, start_download

__all__ = ["MAX_LAYERS", "OWN_LAYER", "SMALL_GROUPS", "DepLayer", "Group", "bytecode_key", "cached_bytecode", "cached_layer",
           "dependency_layers", "group", "layer_key"]


@dataclass(frozen=True)
class DepLayer:
    group: Group
    layer: CachedLayer
    built: bool  # made now (False: from the cache)
    installed: tuple[str, ...] = ()  # name==version in the layer, when pip made it (no wheel list)
    bytecode: CachedLayer | None = None  # the companion layer of .pyc files (bytecode.py)

    @property
    def description(self) -> str:
        return ", ".join(f"{w.name}=={w.version}" for w in self.group.wheels)


def dependency_layers(
    wheels: Sequence[Wheel],
    *,
    cache: Cache,
    compression: Compression = GZIP,
    progress: Callable[[str], None] | None = None,
    timings: dict | None = None,
    on_sizes: Callable[[list[Wheel]], None] | None = None,
    interp: Interpreter | None = None,
    access: Access | None = None,
    on_layer: Callable[[CachedLayer], None] | None = None,
    maker: Maker | None = None,
) -> list[DepLayer]:
    """The layers for `wheels`, in image order: from the cache, or made now (in parallel); with
    `interp`, each with its bytecode layer. `on_layer(layer)` as each is made or found cached
    (from the layer threads: the append builder starts its upload there). `maker`: the build's
    layer threads, with what speculation began on them (else threads of this call's own)."""
    if maker is None:
        with Maker(cache, compression, interp, timings if timings is not None else {}) as own:
            return dependency_layers(wheels, cache=cache, compression=compression, progress=progress, timings=own.timings,
                                     on_sizes=on_sizes, interp=interp, access=access, on_layer=on_layer, maker=own)
    on_layer = on_layer or (lambda _layer: None)
    timings = timings if timings is not None else {}
    files: dict = {}
    if any(w.size is None for w in wheels):
        # pip's report has no sizes, and grouping needs them: download first (once; the
        # resolution is then remembered with the sizes).
        t0 = time.perf_counter()
        files = download(wheels, cache, progress=progress, access=access)
        timings["download"] = timings.get("download", 0.0) + time.perf_counter() - t0
        wheels = [replace(w, size=files[w.sha256].stat().st_size) for w in wheels]
        if on_sizes:
            on_sizes(wheels)
    groups = group(wheels)
    # Begun before resolution answered, for exactly these wheel files: claimed (so its layers
    # go to on_layer), and every other speculative job stopped.
    jobs = {g.name: job for g in groups if (job := maker.job(g)) is not None}
    for job in jobs.values():
        job.claim(on_layer)
    maker.abandon_unclaimed()
    fresh = [g for g in groups if g.name not in jobs]
    have = {g.name: cached_layer(g, cache, compression) for g in fresh}
    pyc = {g.name: cached_bytecode(g, cache, compression, interp) if interp else NO_MODULES for g in fresh}
    todo = [g for g in groups if g.name in jobs or have[g.name] is None or pyc[g.name] is None]
    for known in [*have.values(), *pyc.values()]:
        if known is not None and known is not NO_MODULES:
            on_layer(known)
    if todo:
        if progress:
            progress(f"making {len(todo)} of {len(groups)} dependency layers ({', '.join(g.name for g in todo)})"
                     + (f"; {len(jobs)} begun while resolving" if jobs else ""))
        t0 = time.perf_counter()
        # Each layer starts as soon as its wheels are on disk (checked or downloaded on the
        # download pool), and its modules' compiling starts before its tar is written.
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="fairing-download") as fetching:
            new = [g for g in todo if g.name not in jobs]
            pending = start_download([w for g in new for w in g.wheels if w.sha256 not in files], cache, fetching,
                                     progress=progress, access=access)
            fetched: list[float] = []  # when each wheel was on disk
            for f in pending.values():
                f.add_done_callback(lambda _f: fetched.append(time.perf_counter()))

            def local(w: Wheel):
                return files.get(w.sha256) or pending[w.sha256].result()

            # Biggest first, so the longest layer starts at once and the small ones fill the gaps.
            for g in sorted(new, key=lambda g: -sum(w.size or 0 for w in g.wheels)):
                jobs[g.name] = maker.start(g, local, have[g.name], pyc[g.name], on_layer=on_layer)
            for g in todo:
                have[g.name], pyc[g.name] = jobs[g.name].future.result()
            if fetched:
                timings["download"] = timings.get("download", 0.0) + max(fetched) - t0
        timings["layers"] = timings.get("layers", 0.0) + time.perf_counter() - t0
        st = maker.compile_stats
        if st:
            timings["compile"] = timings.get("compile", 0.0) + st["cpu"]
            if progress:
                progress(f"bytecode: {st['modules']} modules of {st['compiled']} wheel(s) compiled "
                         f"({st['cpu']:.2f} CPU-s), {st['reused']} wheel(s) from the bytecode store")
    made = {g.name for g in todo}
    return [DepLayer(g, have[g.name], g.name in made, bytecode=None if pyc[g.name] is NO_MODULES else pyc[g.name])
            for g in groups]

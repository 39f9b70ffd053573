"""Per-package dependency layers.

The resolved wheels are split into at most MAX_LAYERS layers: every wheel of OWN_LAYER bytes or
more gets a layer of its own (the biggest ones, if there are too many), the small rest shares
SMALL_GROUPS layers, a wheel's group picked by a hash of its name, so adding or changing one
small package changes one small layer. All of it depends only on the resolved wheel files, so the
same requirements give the same layers, in the same order, with the same digests, anywhere.

Each layer is keyed by the sha256s of its wheels (plus the install layout, mtime and
compression) and cached by DiffID: a layer whose wheels did not change is neither downloaded,
unpacked, tarred nor compressed again, and the registry already has its blob (push HEADs first).
Layers that must be made are made side by side on all cores.

Given an interpreter of the image's Python (bytecode.py), each layer with modules also gets a
companion layer of their bytecode, keyed like it plus that interpreter's version. Its .pyc files
come per wheel from the bytecode store (store.py), compiled only for wheels it does not hold yet,
on all cores, starting as each wheel is on disk and while the layers are being written."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ...oci.cache import Cache, CachedLayer
from ...oci.layer import GZIP, Compression, source_date_epoch, workers
from .bytecode import Interpreter
from .index import Access
from .resolve import Wheel
from .store import FORMAT as STORE_FORMAT
from .store import Compiler
from .target import SITE_DIR
from .wheels import INSTALLER, download, installed, start_download

MAX_LAYERS = 20
SMALL_GROUPS = 4
OWN_LAYER = 1 << 20  # wheel bytes from which a package gets its own layer
_timings_lock = threading.Lock()


@dataclass(frozen=True)
class Group:
    name: str  # "numpy" or "small-2"
    wheels: tuple[Wheel, ...]


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


def group(wheels: Sequence[Wheel], *, max_layers: int = MAX_LAYERS, small_groups: int = SMALL_GROUPS, own_layer: int = OWN_LAYER) -> list[Group]:
    """The deterministic split described above: big packages by name, then the small groups."""
    by_name = sorted(wheels, key=lambda w: w.name)
    big = sorted((w for w in by_name if (w.size or 0) >= own_layer), key=lambda w: (-(w.size or 0), w.name))
    own = sorted(big[: max(0, max_layers - small_groups)], key=lambda w: w.name)
    owned = {w.name for w in own}
    buckets: dict[int, list[Wheel]] = {}
    for w in by_name:
        if w.name not in owned:
            b = int.from_bytes(hashlib.sha256(w.name.encode()).digest()[:4], "big") % small_groups
            buckets.setdefault(b, []).append(w)
    return [Group(w.name, (w,)) for w in own] + [Group(f"small-{b}", tuple(buckets[b])) for b in sorted(buckets)]


def layer_key(g: Group, compression: Compression) -> str:
    payload = {"wheels": sorted(w.sha256 for w in g.wheels), "site": SITE_DIR, "installer": INSTALLER,
               "mtime": source_date_epoch(), "compression": compression.id}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def cached_layer(g: Group, cache: Cache, compression: Compression) -> CachedLayer | None:
    known = cache.get_key("deplayer", layer_key(g, compression))
    return cache.get_layer(known.get("diff_id", ""), compression) if known else None


def bytecode_key(g: Group, compression: Compression, interp: Interpreter) -> str:
    payload = {"layer": layer_key(g, compression), "python": interp.version, "cache_tag": interp.cache_tag,
               "magic": interp.magic, "store": STORE_FORMAT, "v": 2}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


_NO_MODULES = object()  # a group with nothing to compile: known, and no layer


def cached_bytecode(g: Group, cache: Cache, compression: Compression, interp: Interpreter):
    """The group's bytecode layer from the cache, _NO_MODULES, or None (to be made)."""
    known = cache.get_key("pyclayer", bytecode_key(g, compression, interp))
    if not known:
        return None
    if known.get("empty"):
        return _NO_MODULES
    return cache.get_layer(known.get("diff_id", ""), compression)


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
) -> list[DepLayer]:
    """The layers for `wheels`, in image order: from the cache, or made now (in parallel); with
    `interp`, each with its bytecode layer. `on_layer(layer)` as each is made or found cached
    (from the layer threads: the append builder starts its upload there)."""
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
    have = {g.name: cached_layer(g, cache, compression) for g in groups}
    pyc = {g.name: cached_bytecode(g, cache, compression, interp) if interp else _NO_MODULES for g in groups}
    todo = [g for g in groups if have[g.name] is None or pyc[g.name] is None]
    for known in [*have.values(), *pyc.values()]:
        if known is not None and known is not _NO_MODULES:
            on_layer(known)
    if todo:
        if progress:
            progress(f"making {len(todo)} of {len(groups)} dependency layers ({', '.join(g.name for g in todo)})")
        t0 = time.perf_counter()
        with ExitStack() as pools:
            # Each layer starts as soon as its wheels are on disk (checked or downloaded on the
            # download pool), and its modules' compiling starts before its tar is written.
            fetching = pools.enter_context(ThreadPoolExecutor(max_workers=4, thread_name_prefix="fairing-download"))
            pending = start_download([w for g in todo for w in g.wheels if w.sha256 not in files], cache, fetching,
                                     progress=progress, access=access)
            fetched: list[float] = []  # when each wheel was on disk
            for f in pending.values():
                f.add_done_callback(lambda _f: fetched.append(time.perf_counter()))
            compiler = Compiler(interp, cache, workers()) if interp and any(pyc[g.name] is None for g in todo) else None
            if compiler:
                pools.callback(compiler.close)

            def make(g: Group) -> tuple[CachedLayer, object]:
                local = {w.sha256: files.get(w.sha256) or pending[w.sha256].result() for w in g.wheels}
                t1 = time.perf_counter()
                layer, code = have[g.name], pyc[g.name]
                with ExitStack() as open_wheels:
                    entries: dict = {}
                    per_wheel = []
                    for w in g.wheels:  # a later wheel's file wins, as it would with pip (its .pyc too)
                        mine = open_wheels.enter_context(installed(local[w.sha256], SITE_DIR.lstrip("/")))
                        entries.update(mine)
                        if code is None:
                            per_wheel.append(compiler.wheel(w.sha256, mine))
                    with _timings_lock:
                        timings["install"] = timings.get("install", 0.0) + time.perf_counter() - t1
                    if layer is None:
                        # Unzipping happens here, as the tar is written (counted as tar time).
                        layer = cache.build_layer(entries, compression=compression, timings=timings)
                        on_layer(layer)
                        cache.put_key("deplayer", layer_key(g, compression), {
                            "diff_id": layer.diff_id, "wheels": [w.filename for w in g.wheels]})
                if code is None:
                    compiled: dict = {}
                    for one in per_wheel:
                        compiled.update(one.result())
                    code = cache.build_layer(compiled, compression=compression, timings=timings) if compiled else _NO_MODULES
                    if code is not _NO_MODULES:
                        on_layer(code)
                    cache.put_key("pyclayer", bytecode_key(g, compression, interp), {
                        "diff_id": getattr(code, "diff_id", ""), "empty": code is _NO_MODULES, "python": interp.version})
                return layer, code

            # Biggest first, so the longest layer starts at once and the small ones fill the gaps.
            order = sorted(todo, key=lambda g: -sum(w.size or 0 for w in g.wheels))
            layer_pool = pools.enter_context(ThreadPoolExecutor(max_workers=max(1, min(workers(), len(order)))))
            for g, (layer, code) in zip(order, layer_pool.map(make, order)):
                have[g.name], pyc[g.name] = layer, code
            if fetched:
                timings["download"] = timings.get("download", 0.0) + max(fetched) - t0
        timings["layers"] = timings.get("layers", 0.0) + time.perf_counter() - t0
        if compiler:
            st = compiler.stats
            timings["compile"] = timings.get("compile", 0.0) + st["cpu"]
            if progress:
                progress(f"bytecode: {st['modules']} modules of {st['compiled']} wheel(s) compiled "
                         f"({st['cpu']:.2f} CPU-s), {st['reused']} wheel(s) from the bytecode store")
    made = {g.name for g in todo}
    return [DepLayer(g, have[g.name], g.name in made, bytecode=None if pyc[g.name] is _NO_MODULES else pyc[g.name])
            for g in groups]

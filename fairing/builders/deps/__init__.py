"""The dependency layers: requirements installed on the host for the base image's Python and CPU
architecture, without running anything in the image, as one layer per package (or small group).

    resolve.py  requirements -> exact wheel files (uv, else pip), cached by the requirement set
    wheels.py   the wheel cache: download (parallel, sha256-checked) and unpack, once per wheel
    layers.py   wheels -> at most 20 layers (groups.py), each cached by the wheels it holds, made
                in parallel (making.py)
    speculate.py  the layers of pinned wheels already in the wheel store, begun while resolving
    bytecode.py the .pyc companion layers, compiled by a matching Python in a clean process
    pip.py      the fallback for requirements that are not plain wheels: pip --target, one layer
    target.py   the image's Python, its platform tags, SITE_DIR

The packages go to SITE_DIR (/opt/fairing/site-packages), which the image's config puts first on
PYTHONPATH (and its bin/ first on PATH). A separate directory, not the base's site-packages,
because we never look inside the base's layers; PYTHONPATH makes the pinned versions win over
anything the base already has."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from ...oci.cache import Cache, CachedLayer
from ...oci.layer import GZIP, Compression
from . import index, speculate
from .layers import DepLayer, Group, cached_layer, dependency_layers, group
from .making import Maker
from .pip import dependency_layer, installed_packages, pip_command
from .resolve import Wheel, remember, resolve
from ..platforms import platform_tags  # one list for every builder
from .target import SITE_DIR, deps_key, image_python

__all__ = ["SITE_DIR", "DepLayer", "Group", "Wheel", "deps_key", "dependency_layer", "dependency_layers",
           "group", "image_python", "install_layers", "installed_packages", "pip_command", "planned_layers", "platform_tags", "resolve"]


def install_layers(
    requirements: Sequence[str],
    *,
    python: str,
    tags: Sequence[str],
    cache: Cache,
    compression: Compression = GZIP,
    progress: Callable[[str], None] | None = None,
    timings: dict | None = None,
    interp=None,
    ca_file: str | None = None,
    on_layer: Callable[[CachedLayer], None] | None = None,
) -> list[DepLayer]:
    """Requirements -> dependency layers (image order). Per package when every requirement
    resolves to wheel files, each with a bytecode layer when `interp` (a bytecode.Interpreter) is
    given; otherwise one layer made by pip (the old way, without bytecode). `on_layer` is called
    with each per-package layer as soon as it is made or found in the cache (any thread)."""
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    access = index.access(cache.root, ca_file)  # pip's index settings, read once per build
    # One set of layer threads for the whole build: the speculative layers begun while resolving
    # and the rest after it (leaving the block waits for them, stopping them if it raised).
    with Maker(cache, compression, interp, timings) as maker:
        guess = speculate.start(requirements, python, tags, cache, maker, progress)
        try:
            wheels, how = resolve(requirements, python, tags, cache, access)
        except BaseException:
            if guess:
                guess.stop()
            raise
        resolved_at = time.perf_counter()
        timings["resolve"] = timings.get("resolve", 0.0) + resolved_at - t0
        if guess:
            guess.join()  # every speculative job is on the maker now
            timings["speculate"] = timings.get("speculate", 0.0) + guess.seconds
        if progress and how != "cache":
            progress(f"resolved {len(requirements)} requirement(s) to {len(wheels or ())} wheel(s) with {how} for Python {python} ({tags[0]})")
        if wheels is None:
            maker.abandon_unclaimed()
            t1 = time.perf_counter()
            layer, built = dependency_layer(requirements, python=python, tags=tags, cache=cache, progress=progress,
                                            compression=compression, timings=timings, env=access.env())
            timings["install"] = timings.get("install", 0.0) + time.perf_counter() - t1
            return [DepLayer(Group("dependencies", ()), layer, built,
                             installed=installed_packages(requirements, python, tags, cache))]
        out = dependency_layers(wheels, cache=cache, compression=compression, progress=progress, timings=timings,
                                on_sizes=lambda sized: remember(cache, requirements, python, tags, sized), interp=interp,
                                access=access, on_layer=on_layer, maker=maker)
        if guess:
            counts = maker.speculation(resolved_at)
            timings.update(counts)
            if progress and guess.started:
                progress(f"speculation: the layers of {counts['speculated']} of {guess.started} pinned wheel(s) from the store used, "
                         f"{counts['speculated_early']} layer(s) made before resolution answered "
                         f"(hashing {guess.seconds:.2f} s)")
        return out


def planned_layers(requirements: Sequence[str], python: str, tags: Sequence[str], cache: Cache,
                   compression: Compression = GZIP) -> list[dict] | None:
    """For a dry run, with no network: the layers a build would have, if this requirement set was
    resolved before on this machine (else None)."""
    from .target import deps_key

    known = cache.get_key("resolved", deps_key(requirements, python, tags))
    if not known or known.get("wheels") is None or any(w.get("size") is None for w in known["wheels"]):
        return None
    groups = group([Wheel(**w) for w in known["wheels"]])
    return [{"name": g.name, "packages": [f"{w.name}=={w.version}" for w in g.wheels],
             "cached": cached_layer(g, cache, compression) is not None} for g in groups]

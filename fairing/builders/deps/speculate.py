"""Speculative dependency layers: the layers of exactly pinned wheels already in the wheel store,
begun while resolution is still running.

A cold build spends its first ~0.3 s resolving (uv asks the index) before it knows which wheel
files it installs, and the layers phase after that is CPU-bound. A requirement `name==version`
(no markers, extras or URL) whose wheel for the target's Python and platform is already in the
wheel store names its wheel before anyone resolves, so such wheels of OWN_LAYER bytes or more
(group() gives each a layer of its own, up to the 16 biggest) have their layers made from the
build's start, on the build's own layer threads (making.Maker). Small wheels are not guessed: their
group depends on the whole resolved set.

Only what is known before resolution is used: the requirements, the store's file names, and each
file's sha256, hashed here (remembered per process, so checking the wheel before installing it
reads nothing again). When resolution answers, a speculative job counts only if a resolved group
has the same layer_key, i.e. exactly the same wheel files by sha256, hence the same bytes
(layers.py); any other is stopped and never reaches the image or the registry (what it finished
stays in the content-addressed cache, where it is harmless)."""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from ...oci.cache import Cache
from .groups import NO_MODULES, OWN_LAYER, SMALL_GROUPS, Group, MAX_LAYERS, cached_bytecode, cached_layer
from .making import Maker
from .resolve import Wheel
from .target import deps_key

log = logging.getLogger(__name__)
_MANYLINUX = re.compile(r"^manylinux_2_(\d+)_(\w+)$")
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def pins(requirements: Sequence[str]) -> dict[str, str]:
    """{canonical name: version} of the requirements that name one exact version: `name==version`
    with no markers, extras, URL or wildcard."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    out = {}
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        specs = list(req.specifier)
        if req.url or req.extras or req.marker or len(specs) != 1:
            continue
        spec = specs[0]
        if spec.operator == "==" and "*" not in spec.version:
            out[canonicalize_name(req.name)] = spec.version
    return out


def supported(python: str, tags: Sequence[str]) -> list:
    """The wheel tags a resolver targeting CPython `python` ("3.11") on the platform `tags` (as
    platform_tags gives them) accepts, most preferred first: every manylinux up to the newest in
    `tags` (with their legacy aliases), then pure-Python ones."""
    from packaging import tags as wheel_tags

    platforms: list[str] = []
    found = [m for m in map(_MANYLINUX.match, tags) if m]
    if found:
        arch, top = found[0].group(2), max(int(m.group(1)) for m in found)
        for n in range(top, 4, -1):
            platforms.append(f"manylinux_2_{n}_{arch}")
            if n in _LEGACY:
                platforms.append(f"{_LEGACY[n]}_{arch}")
    else:
        platforms = list(tags)
    major, minor = (int(x) for x in python.split(".")[:2])
    return [*wheel_tags.cpython_tags((major, minor), platforms=platforms),
            *wheel_tags.compatible_tags((major, minor), f"cp{major}{minor}", platforms=platforms)]


def candidates(requirements: Sequence[str], python: str, tags: Sequence[str], cache: Cache) -> list[tuple[str, str, Path]]:
    """(name, version, store file) for each pinned requirement whose wheel for the target is in
    the wheel store, big enough to get a layer of its own, biggest first. Where the store has
    several that fit, the one with the most preferred tag (resolution checks it)."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    pinned = pins(requirements)
    if not pinned:
        return []
    try:
        names = [p.name for p in (cache.root / "wheels").iterdir() if p.name.endswith(".whl")]
    except OSError:
        return []
    rank = {t: i for i, t in enumerate(supported(python, tags))}
    best: dict[str, tuple[int, str, Path]] = {}
    for filename in names:
        name = canonicalize_name(filename.split("-", 1)[0])
        if name not in pinned:
            continue
        try:
            _, version, _, file_tags = parse_wheel_filename(filename)
            if version != Version(pinned[name]):
                continue
        except (InvalidWheelFilename, InvalidVersion):
            continue
        fits = [rank[t] for t in file_tags if t in rank]
        if fits and (name not in best or min(fits) < best[name][0]):
            best[name] = (min(fits), str(version), cache.root / "wheels" / filename)
    out = []
    for name, (_, version, path) in best.items():
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size >= OWN_LAYER:
            out.append((size, name, version, path))
    out.sort(key=lambda c: (-c[0], c[1]))
    return [(name, version, path) for _, name, version, path in out[: MAX_LAYERS - SMALL_GROUPS]]


class Speculation:
    """Hashes the candidates (biggest first) on a thread of its own and starts each one's layers
    on the build's Maker as soon as its sha256 is known. join() before reading `maker.jobs`."""

    def __init__(self, found: list[tuple[str, str, Path]], cache: Cache, maker: Maker):
        self.found, self.cache, self.maker = found, cache, maker
        self.seconds = 0.0  # hashing the candidates: speculation's own cost
        self.started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fairing-speculate", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        maker, compression, interp = self.maker, self.maker.compression, self.maker.interp
        for name, version, path in self.found:
            if self._stop.is_set():
                return
            try:
                t0 = time.perf_counter()
                sha = self.cache.digest(path).split(":", 1)[1]
                self.seconds += time.perf_counter() - t0
                g = Group(name, (Wheel(name, version, path.name, path.as_uri(), sha, path.stat().st_size),))
                layer = cached_layer(g, self.cache, compression)
                code = cached_bytecode(g, self.cache, compression, interp) if interp else NO_MODULES
                if layer is None or code is None:
                    maker.start(g, lambda _w, p=path: p, layer, code, speculative=True)
                    self.started += 1
            except Exception as e:  # noqa: BLE001 - a guess that cannot be made is no error: resolution decides
                log.debug("not speculating on %s: %s", path.name, e)


def start(requirements: Sequence[str], python: str, tags: Sequence[str], cache: Cache, maker: Maker,
          progress: Callable[[str], None] | None = None) -> Speculation | None:
    """Begin the layers of the pinned wheels in the store, unless resolution is cached (then it
    answers at once) or there are none."""
    known = cache.get_key("resolved", deps_key(requirements, python, tags))
    if known and known.get("wheels") is not None:
        return None
    try:
        found = candidates(requirements, python, tags, cache)
    except Exception as e:  # noqa: BLE001 - no guess is no error: the build goes on without one
        log.debug("not speculating: %s", e)
        return None
    if not found:
        return None
    if progress:
        progress(f"while resolving: making the layers of {len(found)} pinned wheel(s) from the wheel store "
                 f"({', '.join(f'{n}=={v}' for n, v, _ in found)})")
    return Speculation(found, cache, maker)

"""Which wheels share a layer, and the keys a group's layers are cached by.

The resolved wheels are split into at most MAX_LAYERS layers: every wheel of OWN_LAYER bytes or
more gets a layer of its own (the biggest ones, if there are too many), the small rest shares
SMALL_GROUPS layers, a wheel's group picked by a hash of its name, so adding or changing one
small package changes one small layer. All of it depends only on the resolved wheel files, so the
same requirements give the same layers, in the same order, with the same digests, anywhere.

A group's layer is keyed by the sha256s of its wheels (plus the install layout, mtime and
compression), its bytecode layer by that key plus the interpreter: two groups with the same key
make the same bytes, whatever they are called."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

from ...oci.cache import Cache, CachedLayer
from ...oci.layer import Compression, source_date_epoch
from .bytecode import Interpreter
from .resolve import Wheel
from .store import FORMAT as STORE_FORMAT
from .target import SITE_DIR
from .wheels import INSTALLER

MAX_LAYERS = 20
SMALL_GROUPS = 4
OWN_LAYER = 1 << 20  # wheel bytes from which a package gets its own layer


@dataclass(frozen=True)
class Group:
    name: str  # "numpy" or "small-2"
    wheels: tuple[Wheel, ...]


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


NO_MODULES = object()  # a group with nothing to compile: known, and no layer


def cached_bytecode(g: Group, cache: Cache, compression: Compression, interp: Interpreter):
    """The group's bytecode layer from the cache, NO_MODULES, or None (to be made)."""
    known = cache.get_key("pyclayer", bytecode_key(g, compression, interp))
    if not known:
        return None
    if known.get("empty"):
        return NO_MODULES
    return cache.get_layer(known.get("diff_id", ""), compression)

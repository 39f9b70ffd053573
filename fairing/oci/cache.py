"""Local content cache under $FAIRING_CACHE (default ~/.cache/fairing).

    layers/<diffid-hex>.tar.gz + .json   layers we built, keyed by DiffID (uncompressed sha256) and
    layers/<codec>/<diffid-hex>.*        compression settings (the default gzip at the top level)
    blobs/sha256/<hex>                   blobs fetched from registries (base layers for a layout)
    keys/<kind>/<key>.json               small indexes, e.g. dependency-set hash -> resolved wheels
    wheels/<file>.whl                    downloaded wheels (the file name says name, version,
                                         Python and platform), checked against their sha256;
                                         their installed form is their layer (keys/deplayer)
    bytecode/<xx>/<key>.zip              what a wheel compiles to for one interpreter (the .pyc
                                         files of its bytecode layer; builders/deps/store.py)

`fair cache info` sums these up and `fair cache prune` removes the least recently used entries
(every hit refreshes its mtime). Other things under the same root (rig state, tool binaries)
are not cache entries and are never touched.

Every file is written to a temp file in the same directory and renamed into place, so a crash or
a full disk never leaves a half-written entry; an entry whose digest does not match is rebuilt."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from .. import settings
from ..errors import BuildError
from .layer import GZIP, Compression, LayerInfo, Source, write_layer

AREAS = ("layers", "blobs", "wheels", "bytecode", "keys")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    return settings.cache_dir()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class CachedLayer:
    path: Path
    digest: str
    diff_id: str
    size: int


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process
_verified_lock = threading.Lock()


def _verify(path: Path, digest: str, size: int) -> bool:
    """True if the file at `path` has this size and sha256; hashing is remembered per process."""
    try:
        return path.stat().st_size == size and _digest(path) == digest
    except FileNotFoundError:
        return False


def _digest(path: Path) -> str:
    """The sha256 of the file at `path`, hashed once per process while its size and mtime stay."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        known = _verified.get(key)
    if known is None:
        known = sha256_file(path)
        with _verified_lock:
            _verified[key] = known
    return known


def _unchanged(path: Path, size: int, mtime_ns) -> bool:
    """True if `path` still has the size and mtime it had when we wrote and hashed it."""
    try:
        st = path.stat()
    except OSError:
        return False
    return mtime_ns is not None and st.st_size == size and st.st_mtime_ns == mtime_ns


class Cache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)

    # -- atomic writing -------------------------------------------------------------------------
    @contextmanager
    def _atomic(self, dest: Path) -> Iterator:
        """Yield a temp file next to `dest`; rename it over `dest` only if the block succeeds."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=dest.suffix)
        except OSError as e:
            raise self._io_error(e, dest) from None
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
            os.replace(tmp, dest)
        except OSError as e:
            _unlink(tmp)
            raise self._io_error(e, dest) from None
        except BaseException:
            _unlink(tmp)
            raise

    def _io_error(self, e: OSError, dest: Path) -> BuildError:
        if e.errno == errno.ENOSPC:
            return BuildError(f"no space left on device while writing {dest}", hint=f"free some disk space, or point FAIRING_CACHE at a larger disk (cache: {self.root})")
        return BuildError(f"cannot write the layer cache at {dest}: {e.strerror or e}", hint="check permissions, or set FAIRING_CACHE to a writable directory")

    def write_json(self, path: Path, value: Mapping) -> None:
        with self._atomic(path) as f:
            f.write(json.dumps(value, sort_keys=True).encode())

    # -- layers, keyed by DiffID ----------------------------------------------------------------
    def _layer_paths(self, diff_id: str, comp: Compression = GZIP) -> tuple[Path, Path]:
        hexd = diff_id.split(":", 1)[1]
        d = self.root / "layers"
        if comp != GZIP:
            d = d / comp.id
        return d / f"{hexd}{comp.suffix}", d / f"{hexd}.json"

    def get_layer(self, diff_id: str, compression: Compression = GZIP) -> CachedLayer | None:
        """The cached layer with this DiffID, or None if absent or corrupt (a corrupt one is removed)."""
        if not diff_id or ":" not in diff_id:
            return None
        blob, meta = self._layer_paths(diff_id, compression)
        try:
            info = json.loads(meta.read_text())
            layer = CachedLayer(blob, info["digest"], info["diff_id"], int(info["size"]))
            if info.get("compression") != compression.id:  # older fairing: other settings
                raise ValueError("made with other settings")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if layer.diff_id == diff_id and (_unchanged(blob, layer.size, info.get("mtime_ns")) or _verify(blob, layer.digest, layer.size)):
            touch(meta)
            return layer
        _unlink(blob)
        _unlink(meta)
        return None

    def build_layer(self, entries: Mapping[str, Source], *, mtime: int | None = None,
                    compression: Compression = GZIP, timings: dict | None = None) -> CachedLayer:
        """Write a layer from `entries` into the cache. If a valid layer with the same DiffID is
        already cached, keep that one (and its digest) and drop the new bytes. `timings` (if
        given) gets the tar and compress seconds added."""
        tmp_dir = self.root / "layers"
        scratch = tmp_dir / f".build-{os.getpid()}-{threading.get_ident()}{compression.suffix}"
        with self._atomic(scratch) as f:
            info: LayerInfo = write_layer(entries, f, mtime=mtime, compression=compression)
        if timings is not None:
            with _verified_lock:
                timings["tar"] = timings.get("tar", 0.0) + info.tar_seconds
                timings["compress"] = timings.get("compress", 0.0) + info.compress_seconds
        try:
            existing = self.get_layer(info.diff_id, compression)
            if existing:
                return existing
            blob, meta = self._layer_paths(info.diff_id, compression)
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch, blob)
            # The file's mtime as written: a later process that finds the same size and mtime
            # trusts it without re-hashing (a no-op build then reads no layer bytes at all).
            self.write_json(meta, {"digest": info.digest, "diff_id": info.diff_id, "size": info.size, "compression": compression.id,
                                   "mtime_ns": blob.stat().st_mtime_ns})
        except OSError as e:
            raise self._io_error(e, scratch) from None
        finally:
            _unlink(scratch)
        with _verified_lock:  # we just hashed it while writing
            st = blob.stat()
            _verified[(str(blob), st.st_size, st.st_mtime_ns)] = info.digest
        return CachedLayer(blob, info.digest, info.diff_id, info.size)

    # -- blobs fetched from elsewhere, keyed by digest ------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.root / "blobs" / algo / hexd

    def get_blob(self, digest: str, size: int) -> Path | None:
        p = self.blob_path(digest)
        if _verify(p, digest, size):
            return p
        _unlink(p)
        return None

    def put_blob(self, digest: str, size: int, write: Callable[[object], None]) -> Path:
        """Store a blob by calling `write(fileobj)`; the result must hash to `digest`."""
        p = self.blob_path(digest)
        with self._atomic(p) as f:
            write(f)
        if not _verify(p, digest, size):
            _unlink(p)
            raise BuildError(f"blob {digest} did not match its digest after download", hint="retry; if it persists the registry's storage may be corrupt")
        return p

    # -- other verified files (downloaded wheels) -----------------------------------------------
    def verified(self, path: Path, digest: str, size: int) -> bool:
        """True if `path` holds `size` bytes hashing to `digest` (remembered per process)."""
        return _verify(path, digest, size)

    def digest(self, path: Path) -> str:
        """"sha256:..." of the file at `path` (remembered per process: a later verified() of the
        same unchanged file reads nothing)."""
        return _digest(path)

    def put_file(self, path: Path, digest: str, write: Callable[[object], None]) -> Path:
        """Store a file at `path` by calling `write(fileobj)`; it must hash to `digest`."""
        with self._atomic(path) as f:
            write(f)
        if not _verify(path, digest, path.stat().st_size):
            _unlink(path)
            raise BuildError(f"{path.name} did not match its sha256 after download", hint="retry; if it persists the package index or a proxy altered it")
        return path

    # -- small indexes --------------------------------------------------------------------------
    def get_key(self, kind: str, key: str) -> dict | None:
        path = self.root / "keys" / kind / f"{key}.json"
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        touch(path)
        return value

    def put_key(self, kind: str, key: str, value: Mapping) -> None:
        self.write_json(self.root / "keys" / kind / f"{key}.json", value)

    @contextmanager
    def scratch_dir(self, prefix: str) -> Iterator[Path]:
        """A temp directory inside the cache (same disk as the entries), always removed."""
        import shutil

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            d = Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=self.root))
        except OSError as e:
            raise self._io_error(e, self.root) from None
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)


def touch(p) -> None:
    """Mark a cache entry as used now (prune removes the least recently used first)."""
    try:
        os.utime(p)
    except OSError:
        pass


# -- info and prune -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    area: str
    path: Path
    size: int
    used: float  # mtime: the last time a build used it


def entries(root: Path) -> list[Entry]:
    """Every cache entry under `root` (only the AREAS; a layer and its .json count as one)."""
    out: list[Entry] = []
    for area in AREAS:
        base = root / area
        if not base.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                p = Path(dirpath) / name
                if area == "layers" and name.endswith(".json"):
                    continue  # counted with its blob
                try:
                    st = p.stat()
                except OSError:
                    continue
                used = st.st_mtime
                if area == "layers":
                    meta = p.with_name(name.split(".", 1)[0] + ".json")
                    try:
                        used = max(used, meta.stat().st_mtime)
                    except OSError:
                        pass
                out.append(Entry(area, p, st.st_size, used))
    return out


def info(root: Path) -> dict:
    """{area: {"entries": n, "bytes": b}} plus "total"."""
    summary: dict = {a: {"entries": 0, "bytes": 0} for a in AREAS}
    for e in entries(root):
        summary[e.area]["entries"] += 1
        summary[e.area]["bytes"] += e.size
    summary["total"] = {"entries": sum(v["entries"] for v in summary.values()), "bytes": sum(v["bytes"] for v in summary.values())}
    return summary


def prune(root: Path, *, older_than: float | None = None, max_size: int | None = None, now: float | None = None,
          dry_run: bool = False) -> tuple[int, int]:
    """Remove entries unused for `older_than` seconds, then the least recently used until the
    cache is at most `max_size` bytes. Returns (entries removed, bytes freed); with `dry_run`
    what would be removed, removing nothing."""
    import time

    now = time.time() if now is None else now
    items = sorted(entries(root), key=lambda e: e.used)
    doomed: list[Entry] = []
    if older_than is not None:
        doomed = [e for e in items if now - e.used > older_than]
    if max_size is not None:
        left = [e for e in items if e not in doomed]
        total = sum(e.size for e in left)
        for e in left:
            if total <= max_size:
                break
            doomed.append(e)
            total -= e.size
    freed = sum(e.size for e in doomed)
    if dry_run:
        return len(doomed), freed
    for e in doomed:
        _unlink(e.path)
        if e.area == "layers":
            _unlink(e.path.with_name(e.path.name.split(".", 1)[0] + ".json"))
    return len(doomed), freed


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """"500M", "2GiB", "10g", "1000000" -> bytes."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        from ..errors import ConfigError

        raise ConfigError(f"--max-size {text!r} is not a size", hint="use a number with an optional unit, e.g. 500M, 2G or 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_age(text: str) -> float:
    """"7d", "12h", "30m", "90s", "2w" -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        from ..errors import ConfigError

        raise ConfigError(f"--older-than {text!r} is not an age", hint="use a number and a unit: s, m, h, d or w, e.g. 7d or 12h")
    return float(m.group(1)) * _AGES[m.group(2)]


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def info_lines(root: Path, summary: dict) -> list[str]:
    """`fair cache info` as text."""
    what = {"wheels": "downloaded wheels", "layers": "built layers (incl. installed packages)",
            "blobs": "fetched blobs", "bytecode": "compiled wheels (.pyc files)", "keys": "indexes"}
    lines = [f"cache: {root}"]
    for area in AREAS:
        v = summary[area]
        lines.append(f"  {area:<9} {v['entries']:>6} entries  {human(v['bytes']):>10}  {what[area]}")
    lines.append(f"  {'total':<9} {summary['total']['entries']:>6} entries  {human(summary['total']['bytes']):>10}")
    return lines


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass

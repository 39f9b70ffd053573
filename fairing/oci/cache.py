"""Local content cache under $FAIRING_CACHE (default ~/.cache/fairing).

    layers/<diffid-hex>.tar.gz + .json   layers we built, keyed by DiffID (uncompressed sha256), so
                                         a different compressor elsewhere never changes what we push
    blobs/sha256/<hex>                   blobs fetched from registries (base layers for a layout)
    keys/<name>.json                     small indexes, e.g. dependency-set hash -> DiffID

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

from ..errors import BuildError
from .layer import LayerInfo, Source, write_layer


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    env = os.environ.get("FAIRING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fairing"


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
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != size:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _verified_lock:
        if _verified.get(key) == digest:
            return True
    ok = sha256_file(path) == digest
    if ok:
        with _verified_lock:
            _verified[key] = digest
    return ok


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
    def _layer_paths(self, diff_id: str) -> tuple[Path, Path]:
        hexd = diff_id.split(":", 1)[1]
        d = self.root / "layers"
        return d / f"{hexd}.tar.gz", d / f"{hexd}.json"

    def get_layer(self, diff_id: str) -> CachedLayer | None:
        """The cached layer with this DiffID, or None if absent or corrupt (a corrupt one is removed)."""
        blob, meta = self._layer_paths(diff_id)
        try:
            info = json.loads(meta.read_text())
            layer = CachedLayer(blob, info["digest"], info["diff_id"], int(info["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if layer.diff_id == diff_id and _verify(blob, layer.digest, layer.size):
            return layer
        _unlink(blob)
        _unlink(meta)
        return None

    def build_layer(self, entries: Mapping[str, Source], *, mtime: int | None = None) -> CachedLayer:
        """Write a layer from `entries` into the cache. If a valid layer with the same DiffID is
        already cached, keep that one (and its digest) and drop the new bytes."""
        tmp_dir = self.root / "layers"
        scratch = tmp_dir / f".build-{os.getpid()}-{threading.get_ident()}.tar.gz"
        with self._atomic(scratch) as f:
            info: LayerInfo = write_layer(entries, f, mtime=mtime)
        try:
            existing = self.get_layer(info.diff_id)
            if existing:
                return existing
            blob, meta = self._layer_paths(info.diff_id)
            os.replace(scratch, blob)
            self.write_json(meta, {"digest": info.digest, "diff_id": info.diff_id, "size": info.size})
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

    # -- small indexes --------------------------------------------------------------------------
    def get_key(self, kind: str, key: str) -> dict | None:
        try:
            return json.loads((self.root / "keys" / kind / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

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


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass

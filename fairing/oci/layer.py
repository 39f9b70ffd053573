"""Deterministic layer tarballs. `write_layer` is the ONE place that decides tar entry order,
owners, modes, mtimes and compression, so the same files give the same digest on any machine at
any time.

Compression is parallel but its bytes do not depend on the number of threads: the tar stream is
cut into fixed BLOCK-sized pieces, each compressed on its own (a gzip block primed with the last
32 KiB of the previous piece as its dictionary, ended with a sync flush, as pigz does; a zstd
piece is one frame), and the pieces are written in order. Only zlib is used for gzip: its output
at a given level is the same across zlib 1.2.x/1.3 (ISA-L's differs by CPU and version; see
bench/README.md)."""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import struct
import tarfile
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Union

from .. import settings
from ..errors import ConfigError



@dataclass(frozen=True)
class Member:
    """A file read from elsewhere (a wheel's zip member) straight into the tar: no copy on disk."""

    open: Callable[[], BinaryIO]
    size: int
    executable: bool = False


# An entry is file bytes, a path on disk (regular file, symlink, or directory = empty dir), a
# Member, or None for a directory.
Source = Union[bytes, Path, Member, None]

FILE_MODE, EXEC_MODE, DIR_MODE = 0o644, 0o755, 0o755
BLOCK = 1 << 20  # uncompressed bytes per independently compressed piece (part of the digest)
_WINDOW = 32 << 10  # deflate's window: the dictionary each gzip piece starts with


@dataclass(frozen=True)
class Compression:
    """How layer bytes are compressed. Every field is part of the digest.

    gzip level 1 by measurement (bench/README.md): on the heavy ML set zlib level 1 is ~2.4x
    faster than level 6 for ~15% more bytes, and compression, not upload, is where a cold build
    waits. zstd is opt-in only: some runtimes cannot pull `+zstd` layers."""

    name: str = "gzip"  # "gzip" or "zstd"
    level: int = 1
    block: int = BLOCK

    @property
    def id(self) -> str:
        """Short name used in cache paths: layers made with other settings never mix."""
        return f"{'gz' if self.name == 'gzip' else 'zst'}{self.level}b{self.block >> 10}k"

    @property
    def suffix(self) -> str:
        return ".tar.gz" if self.name == "gzip" else ".tar.zst"


GZIP = Compression()
ZSTD = Compression("zstd", 3)
COMPRESSIONS = {"gzip": GZIP, "zstd": ZSTD}


def compression(name: str | None) -> Compression:
    """The Compression called `name` ("gzip", the default, or "zstd"); None reads
    $FAIRING_LAYER_COMPRESSION."""
    name = name or settings.layer_compression()
    if not name:
        return GZIP
    if name not in COMPRESSIONS:
        raise ConfigError(f"unknown layer compression {name!r}", hint="use gzip (default, every runtime) or zstd (opt-in, smaller, needs containerd 1.5+/Podman)")
    if name == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise ConfigError("zstd layers need the zstandard package", hint="pip install zstandard, or use the default gzip compression") from None
    return COMPRESSIONS[name]


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # sha256 of the compressed stream (what the registry stores)
    diff_id: str  # sha256 of the uncompressed tar (what the image config lists)
    size: int  # compressed size in bytes
    # Where the time went (not part of the value), CPU seconds: tar = reading (unzipping) files,
    # tar headers and hashing, in the writing thread; compress = summed over the pool's threads.
    tar_seconds: float = field(default=0.0, compare=False)
    compress_seconds: float = field(default=0.0, compare=False)


def source_date_epoch() -> int:
    """The timestamp stamped on every entry and on the config: $SOURCE_DATE_EPOCH, else 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer", hint="set it to seconds since 1970, e.g. `git log -1 --format=%ct`") from None
    if value < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r} is negative", hint="set it to seconds since 1970")
    return value


def clean_path(path: str) -> str:
    """Normalise an in-image path to the relative POSIX form used in tar ("app/main.py")."""
    p = posixpath.normpath("/" + path.replace("\\", "/")).lstrip("/")
    if not p or p == "." or any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise ConfigError(f"invalid path in image: {path!r}", hint="paths must stay inside the image and not use '..'")
    return p


def tree(root: Path, prefix: str) -> dict[str, Path]:
    """Every file, symlink and empty directory under `root`, keyed by `prefix/<relative path>`."""
    out: dict[str, Path] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel = d.relative_to(root).as_posix()
        base = prefix if rel == "." else f"{prefix}/{rel}"
        if not dirnames and not filenames:
            out[base] = d
        for name in dirnames:
            if (d / name).is_symlink():  # os.walk does not descend into these; keep the link
                out[f"{base}/{name}"] = d / name
        for name in filenames:
            out[f"{base}/{name}"] = d / name
    return out




# -- parallel, deterministic compression ----------------------------------------------------------
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def workers() -> int:
    """Compression threads: every core this process may use ($FAIRING_JOBS overrides)."""
    forced = settings.jobs()
    if forced:
        return forced
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _compress_pool() -> ThreadPoolExecutor:
    """One pool shared by every layer being written, so layers built side by side still use
    exactly the machine's cores (zlib and zstd release the GIL while they work)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="fairing-compress")
        return _pool


def _gzip_piece(data: bytes, zdict: bytes, level: int, last: bool) -> tuple[bytes, float]:
    t0 = time.thread_time()
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict) if zdict else \
        zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    out = c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return out, time.thread_time() - t0


def _zstd_piece(data: bytes, zdict: bytes, level: int, last: bool) -> tuple[bytes, float]:
    import zstandard

    t0 = time.thread_time()
    if not data and not last:
        return b"", 0.0
    # One frame per piece, single-threaded, sizes written: frames concatenate into a valid stream.
    out = zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True).compress(data)
    return out, time.thread_time() - t0


def _gzip_header(level: int) -> bytes:
    # magic, deflate, no flags, MTIME 0, XFL (4 = fastest, 2 = best, else 0), OS 255 (unknown).
    xfl = 4 if level == 1 else 2 if level == 9 else 0
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255])


class _BlockWriter(io.RawIOBase):
    """The file object tarfile writes to: hashes the raw tar (DiffID), cuts it into pieces,
    compresses them on the shared pool, and writes the results to `sink` in order."""

    def __init__(self, sink: BinaryIO, comp: Compression):
        self.sink, self.comp = sink, comp
        self.raw_sha, self.raw_size, self.crc = hashlib.sha256(), 0, 0
        self.out_sha, self.out_size = hashlib.sha256(), 0
        self.buf = bytearray()
        self.tail = b""  # last window of the previous piece
        self.pending: deque = deque()
        self.limit = 2 * workers()  # pieces in flight: bounds memory to a few MiB
        self.piece = _gzip_piece if comp.name == "gzip" else _zstd_piece
        self.compress_seconds = 0.0
        if comp.name == "gzip":
            self._emit(_gzip_header(comp.level))

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw_size  # tarfile's "w" mode asks where the archive starts

    def write(self, b) -> int:
        n = len(b)
        self.raw_sha.update(b)
        self.raw_size += n
        if self.comp.name == "gzip":
            self.crc = zlib.crc32(b, self.crc)
        self.buf += b
        block = self.comp.block
        if len(self.buf) >= block:
            with memoryview(self.buf) as view:  # one copy per piece, not two
                pieces = [bytes(view[i:i + block]) for i in range(0, len(self.buf) - block + 1, block)]
            del self.buf[: len(pieces) * block]
            for data in pieces:
                self._submit(data, last=False)
        return n

    def _submit(self, data: bytes, last: bool) -> None:
        zdict = self.tail if self.comp.name == "gzip" else b""
        self.tail = data[-_WINDOW:] if len(data) >= _WINDOW else (self.tail + data)[-_WINDOW:]
        self.pending.append(_compress_pool().submit(self.piece, data, zdict, self.comp.level, last))
        while len(self.pending) > self.limit:
            self._drain_one()

    def _drain_one(self) -> None:
        out, secs = self.pending.popleft().result()
        self.compress_seconds += secs
        self._emit(out)

    def _emit(self, data: bytes) -> None:
        if data:
            self.out_sha.update(data)
            self.out_size += len(data)
            self.sink.write(data)

    def finish(self) -> None:
        self._submit(bytes(self.buf), last=True)
        self.buf = bytearray()
        while self.pending:
            self._drain_one()
        if self.comp.name == "gzip":
            self._emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.raw_size & 0xFFFFFFFF))

    def abandon(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()


def write_layer(entries: Mapping[str, Source], out: BinaryIO, *, mtime: int | None = None,
                compression: Compression = GZIP) -> LayerInfo:
    """Write `entries` ({in-image path: source}) as a compressed tar to `out`, deterministically:
    entries sorted by path with every parent directory explicit, uid/gid 0 with empty owner names,
    one fixed mtime, modes 0644 (0755 for executables and directories), gzip header without name
    or time, pieces as described above. Returns the compressed digest, the diff_id and the size."""
    t0 = time.thread_time()  # CPU time of this thread: the machine's load does not inflate it
    mtime = source_date_epoch() if mtime is None else mtime
    items: dict[str, Source | None] = {}
    for path, src in entries.items():
        p = clean_path(path)
        items[p] = src
        parent = posixpath.dirname(p)
        while parent and parent not in items:
            items[parent] = None  # an implicit parent directory
            parent = posixpath.dirname(parent)

    raw = _BlockWriter(out, compression)
    try:
        # copybufsize: each file is copied in 1 MiB reads, not tarfile's 16 KiB (fewer zip reads
        # for installed wheels: ~7% of the tar time). Mode "w" writes straight into `raw`; the
        # stream mode "w|" re-buffered every write in bytes objects (~2.5 copies per byte). The
        # bytes written are the same either way (the end is padded to tar's 10 KiB record in both).
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20) as tar:
            for p in sorted(items):
                _add(tar, p, items[p], mtime)
        raw.finish()
    except BaseException:
        raw.abandon()
        raise
    return LayerInfo(digest=f"sha256:{raw.out_sha.hexdigest()}", diff_id=f"sha256:{raw.raw_sha.hexdigest()}", size=raw.out_size,
                     tar_seconds=time.thread_time() - t0, compress_seconds=raw.compress_seconds)


def _add(tar: tarfile.TarFile, p: str, src: Source | None, mtime: int) -> None:
    info = tarfile.TarInfo(p)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    if src is None:
        info.type, info.mode = tarfile.DIRTYPE, DIR_MODE
        tar.addfile(info)
    elif isinstance(src, (bytes, bytearray)):
        info.mode, info.size = FILE_MODE, len(src)
        tar.addfile(info, io.BytesIO(src))
    elif isinstance(src, Member):
        info.mode, info.size = (EXEC_MODE if src.executable else FILE_MODE), src.size
        with src.open() as f:
            tar.addfile(info, f)
    else:
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, os.readlink(src)
            tar.addfile(info)
        elif stat.S_ISDIR(st.st_mode):
            info.type, info.mode = tarfile.DIRTYPE, DIR_MODE
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            info.mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
            info.size = st.st_size
            with open(src, "rb") as f:
                tar.addfile(info, f)
        else:
            raise ConfigError(f"cannot put {src} in an image: not a regular file, directory or symlink", hint="remove it from the build context")

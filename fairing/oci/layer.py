"""Deterministic layer tarballs. `write_layer` is the ONE place that decides tar entry order,
owners, modes and mtimes, so the same files give the same digest on any machine at any time."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping, Union

from ..errors import ConfigError

# An entry is file bytes, a path on disk (regular file, symlink, or directory = empty dir), or
# None for a directory.
Source = Union[bytes, Path, None]

GZIP_LEVEL = 6  # part of the digest: changing it changes every layer digest
FILE_MODE, EXEC_MODE, DIR_MODE = 0o644, 0o755, 0o755


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # sha256 of the gzip stream (what the registry stores)
    diff_id: str  # sha256 of the uncompressed tar (what the image config lists)
    size: int  # compressed size in bytes


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


class _Hasher(io.RawIOBase):
    """Write-through stream that counts and hashes what passes through it."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)


def write_layer(entries: Mapping[str, Source], out: BinaryIO, *, mtime: int | None = None) -> LayerInfo:
    """Write `entries` ({in-image path: source}) as a gzip'd tar to `out`, deterministically:
    entries sorted by path with every parent directory explicit, uid/gid 0 with empty owner names,
    one fixed mtime, modes 0644 (0755 for executables and directories), gzip header without name
    or time. Returns the compressed digest, the diff_id and the compressed size."""
    mtime = source_date_epoch() if mtime is None else mtime
    items: dict[str, Source | None] = {}
    for path, src in entries.items():
        p = clean_path(path)
        items[p] = src
        parent = posixpath.dirname(p)
        while parent and parent not in items:
            items[parent] = None  # an implicit parent directory
            parent = posixpath.dirname(parent)

    compressed = _Hasher(out)
    gz = gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL)
    raw = _Hasher(gz)
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(items):
            src = items[p]
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
    gz.close()
    return LayerInfo(digest=f"sha256:{compressed.sha.hexdigest()}", diff_id=f"sha256:{raw.sha.hexdigest()}", size=compressed.size)

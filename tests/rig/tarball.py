"""Tar handling for the rig: one deterministic writer and one safe reader.

Writer: sorted entries, fixed mtime, numeric owners without names, hard links detected in walk
order, device nodes left out (the runtime provides /dev) — same input tree, same bytes.
Reader: every member is checked before anything is written; an entry whose name, hard-link
target or relative symlink target escapes the root, or that would be written *through* a
symlink, is refused with UnsafeTarError. Absolute symlink targets are legal in a root
filesystem (they resolve inside the container), and cannot be followed on extraction because
no member is ever written below a symlink.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import IO, Iterable

from .state import RigError

EPOCH = 946684800  # 2000-01-01: a fixed mtime so the bytes do not depend on when we built


class UnsafeTarError(RigError):
    """A tar member would land outside the extraction root."""


# --- writer --------------------------------------------------------------------------------------
def _walk_sorted_sub(path: Path, rel: str) -> Iterable[tuple[Path, str]]:
    for e in sorted(os.scandir(path), key=lambda e: e.name):
        yield Path(e.path), f"{rel}{e.name}"
        if e.is_dir(follow_symlinks=False):
            yield from _walk_sorted_sub(Path(e.path), f"{rel}{e.name}/")


def walk(root: Path) -> Iterable[tuple[Path, str]]:
    """(path, archive name) for every entry under root, depth-first in byte order of names."""
    return _walk_sorted_sub(Path(root), "")


def write_tree(root: Path, out: IO[bytes], *, skip_devices: bool = True) -> int:
    """Write `root` as a deterministic tar stream to `out`; returns the number of entries."""
    count = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arc in walk(root):
            st = os.lstat(path)
            if skip_devices and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                                 or stat.S_ISSOCK(st.st_mode)):
                continue
            info = tar.gettarinfo(str(path), arcname=arc)  # detects hard links by inode
            info.mtime = EPOCH
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            count += 1
    return count


# --- reader --------------------------------------------------------------------------------------
def _normal(name: str) -> str | None:
    """Normalised relative path inside the root, or None if it escapes or is absolute."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return None
    norm = posixpath.normpath(name)
    if norm == ".":
        return norm
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def check_members(members: Iterable[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """Validate a whole archive up front; returns the members in order."""
    seen: set[str] = set()
    symlinks: set[str] = set()
    out = []
    for m in members:
        name = _normal(m.name)
        if name is None:
            raise UnsafeTarError(f"tar entry {m.name!r} escapes the root (absolute or '..')")
        # A member below an earlier symlink would be written wherever the symlink points.
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in symlinks:
                raise UnsafeTarError(
                    f"tar entry {m.name!r} would be written through symlink {'/'.join(parts[:i])!r}")
        if m.islnk():
            target = _normal(m.linkname)
            if target is None or target not in seen:
                raise UnsafeTarError(
                    f"tar hard link {m.name!r} -> {m.linkname!r} points outside the archive")
        elif m.issym() and not m.linkname.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if resolved == ".." or resolved.startswith("../"):
                raise UnsafeTarError(
                    f"tar symlink {m.name!r} -> {m.linkname!r} escapes the root")
        elif m.isdev():
            raise UnsafeTarError(f"tar entry {m.name!r} is a device node")
        if m.issym():
            symlinks.add(name)
        else:
            symlinks.discard(name)
        seen.add(name)
        out.append(m)
    return out


def check_tar(path: Path) -> int:
    """Validate an archive on disk without extracting; returns the member count."""
    with tarfile.open(path) as tar:
        return len(check_members(tar))


def safe_extract(tar_path: Path, dest: Path) -> list[str]:
    """Extract after validating every member; returns the extracted names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        members = check_members(tar)
        for m in members:
            target = dest / _normal(m.name)
            # Belt and braces: refuse if anything on disk below dest is already a symlink.
            cur = dest
            for part in Path(_normal(m.name)).parts[:-1]:
                cur = cur / part
                if cur.is_symlink():
                    raise UnsafeTarError(f"{cur} is a symlink; refusing to extract {m.name!r}")
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            # The stdlib 'tar' filter re-checks names and strips setuid bits on top of our checks.
            extra = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
            tar.extract(m, dest, set_attrs=not m.issym(), **extra)
    return [m.name for m in members]

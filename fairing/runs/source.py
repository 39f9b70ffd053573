"""Identity of what ran: the code layer's digest and file hashes, and the git state around it."""
from __future__ import annotations

from ..image_runtime import SHIM_FILES

import hashlib
import subprocess
from pathlib import Path
from typing import Any


class _Null:
    """A sink that keeps nothing: the layer writer hashes as it writes."""

    def write(self, b) -> int:
        return len(b)


def code_layer_entries(ctx) -> dict:
    """The entries of the code layer the append builder writes for `ctx` (files under workdir)."""
    workdir = ctx.workdir.strip("/")
    entries: dict[str, Any] = {f"{workdir}/{dst}" if workdir else dst: src for dst, src in ctx.files.items()}
    if workdir:
        entries.setdefault(workdir, None)
    return entries


def source_digest(ctx) -> str:
    """The code layer's digest (sha256:...): the same bytes the append builder pushes, so the
    same code gives the same digest on any machine and with any builder."""
    from ..oci.layer import write_layer

    return write_layer(code_layer_entries(ctx), _Null()).digest


# The outputs shim's files, in the context's .fairing/ dir.
_SHIM = {f".fairing/{n}" for n in SHIM_FILES}


def file_hashes(ctx) -> dict[str, str]:
    """{path in the code layer: sha256 of its bytes} (what `fair runs diff` compares)."""
    out = {}
    for dst, src in sorted(ctx.files.items()):
        if dst in _SHIM:
            continue  # fairing's own outputs shim, the same in every run: not the user's code
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        out[dst] = hashlib.sha256(data).hexdigest()
    return out


def _git(cwd: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state(where: Any = None) -> dict | None:
    """{commit, branch, dirty} of the repository holding `where` (a path; else the current
    directory), or None outside a repository or without git."""
    p = Path(str(where)) if where is not None and not callable(where) else Path.cwd()
    p = p if p.is_dir() else p.parent
    if not p.exists():
        return None
    commit = _git(p, "rev-parse", "HEAD")
    if not commit:
        return None
    branch = _git(p, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(p, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "branch": None if branch == "HEAD" else branch,
            "dirty": bool(status) if status is not None else None}

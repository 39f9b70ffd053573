"""The Builder interface every builder implements, plus the few helpers they share.

Kept tiny and stable on purpose: the append, docker and cluster builders all subclass it."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..context import BuildContext, BuiltImage


class Builder:
    """Turns a BuildContext into an image pinned by digest.

    `target` is `registry/repo[:tag]` (or, for builders that support it, `oci:DIR[:tag]`).
    A target without a tag gets the context hash as its tag (see `default_tag`)."""

    name = "builder"

    def build(self, ctx: BuildContext, target: str) -> BuiltImage:  # pragma: no cover - interface
        raise NotImplementedError

    def plan(self, ctx: BuildContext, target: str) -> dict[str, Any]:
        """What `build` would do, without writing anything anywhere (for --dry-run)."""
        return {"builder": self.name, "target": target, "context_hash": context_hash(ctx)}


def context_hash(ctx: BuildContext, length: int = 12) -> str:
    """A short content hash of everything that ends up in the image (file bytes, paths, entrypoint,
    requirements, env, workdir). Same context -> same hash on any machine; file mtimes don't count."""
    h = hashlib.sha256()

    def put(*parts: str | bytes) -> None:
        for p in parts:
            b = p.encode() if isinstance(p, str) else p
            h.update(len(b).to_bytes(8, "big") + b)

    put("workdir", ctx.workdir, "entrypoint", *ctx.entrypoint, "requirements", *ctx.requirements)
    put("env", *(f"{k}={v}" for k, v in sorted(ctx.env.items())))
    for dst, src in sorted(ctx.files.items()):
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        executable = not isinstance(src, bytes) and os.access(src, os.X_OK)
        put("file", dst, "x" if executable else "-", hashlib.sha256(data).digest())
    return h.hexdigest()[:length]


def default_image_name(registry: str, name: str, ctx: BuildContext | None = None) -> str:
    """`<registry>/fairing-<name>:<content-hash>`: the image name used when the user gives only a
    registry. `name` is reduced to a valid repository component."""
    repo = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "job"
    ref = f"{registry.rstrip('/')}/fairing-{repo}"
    return f"{ref}:{context_hash(ctx)}" if ctx is not None else ref


def split_tag(target: str) -> tuple[str, str | None]:
    """`host:5000/repo:tag` -> ("host:5000/repo", "tag"); a port is never mistaken for a tag."""
    if "@" in target:
        return target.split("@", 1)[0], None
    slash = target.rfind("/")
    colon = target.rfind(":")
    if colon > slash:
        return target[:colon], target[colon + 1:]
    return target, None

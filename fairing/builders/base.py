"""The Builder interface every builder implements, plus the few helpers they share.

Kept small and stable on purpose: the append, docker and cluster builders all subclass it."""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..context import BuildContext, BuiltImage
from ..oci.reference import split_tag  # noqa: F401 - importable from here, where config.py finds it

if TYPE_CHECKING:
    from ..publish.pick import Needs
    from ..publish.target import Target


class Builder:
    """Builds a BuildContext into an image value (ko's build, beside publish):

        target(target, ctx) -> Target      the target string parsed once (publish.target), tagged
                                           with the context hash when it has no tag
        image(ctx, target)  -> image       an image value: layers + config (append), an image in
                                           an engine (docker), or one the build pushed (cluster)
        publish_needs()     -> Needs       what the publisher may use (clients, engine, fetch)
        published(built, s) -> BuiltImage  the builder's last word on what was published (stats)

    Publishing is not the builder's: fairing.publish.pick picks the publisher for the image value
    and the target (the pipeline calls it). `publish(image, target)` and `build(ctx, target)` are
    that same choice, for callers that use a builder on its own.

    Builders make images, not workloads: the pod template that runs an image is the deployers'."""

    name = "builder"
    accepts: tuple[str, ...] = ("registry",)  # the target kinds publish() can send to

    @classmethod
    def accepts_for(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The target kinds a builder made with `options` can publish to (the plan parses the
        target with them before any builder exists)."""
        return cls.accepts

    def target(self, target: "str | Target", ctx: BuildContext | None = None) -> "Target":
        from ..publish.target import parse

        t = parse(target, builder=self.name, accepts=self.accepts)
        return t.tagged(context_hash(ctx)) if ctx is not None else t

    def image(self, ctx: BuildContext, target: "Target"):  # pragma: no cover - interface
        raise NotImplementedError

    def publish_needs(self) -> "Needs":
        from ..publish.pick import Needs

        return Needs()

    def published(self, built: BuiltImage, seconds: float) -> BuiltImage:
        """Called with what was published and how long publishing took."""
        return built

    def publish(self, image, target: "str | Target") -> BuiltImage:
        """Send `image` to `target`, by the publisher fairing.publish.pick chooses."""
        from ..publish.pick import publish

        t = self.target(target)
        t0 = time.monotonic()
        return self.published(publish(image, t, self.publish_needs()), time.monotonic() - t0)

    def build(self, ctx: BuildContext, target: "str | Target") -> BuiltImage:
        """image() then publish(), timed (what the pipeline does, for a builder used on its own)."""
        t0 = time.monotonic()
        t = self.target(target, ctx)
        built = self.publish(self.image(ctx, t), t)
        return replace(built, context=ctx, stats=replace(built.stats, seconds=time.monotonic() - t0))

    def plan(self, ctx: BuildContext, target: "str | Target") -> dict[str, Any]:
        """What `build` would do, without writing anything anywhere (for --dry-run)."""
        return {"builder": self.name, "target": str(self.target(target, ctx)), "context_hash": context_hash(ctx)}


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
    for dst, src in sorted(ctx.model_files.items()):
        put("model", dst, _file_sha256(src))
    if ctx.model_layer is not None:
        put("model-layer", ctx.model_layer.digest)
    return h.hexdigest()[:length]


def default_image_name(registry: str, name: str, ctx: BuildContext | None = None) -> str:
    """`<registry>/fairing-<name>:<content-hash>`: the image name used when the user gives only a
    registry. `name` is reduced to a valid repository component."""
    repo = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "job"
    ref = f"{registry.rstrip('/')}/fairing-{repo}"
    return f"{ref}:{context_hash(ctx)}" if ctx is not None else ref


def _file_sha256(src) -> bytes:
    """A model file's sha256, streamed (model files can be gigabytes)."""
    if isinstance(src, bytes):
        return hashlib.sha256(src).digest()
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()

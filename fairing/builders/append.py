"""The append builder (default): no Docker engine, nothing run in the image.

It reads the base image's manifest and config (never its layers, unless writing an OCI layout),
appends a dependency layer (pip wheels built on the host, see deps.py) and a code layer, sets
Env/WorkingDir/Entrypoint, and pushes only the blobs the registry lacks. Both layers and the
config are reproducible, so the same inputs give the same digest anywhere, any time."""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable

from ..context import BuildContext, BuildStats, BuiltImage, pod_template
from ..errors import ConfigError
from ..oci import layout, reference
from ..oci.cache import Cache
from ..oci.image import OCI_MANIFEST, Image, Layer, timestamp
from ..oci.layer import source_date_epoch
from .base import Builder, context_hash
from .deps import SITE_DIR, dependency_layer, deps_key, image_python, platform_tags

log = logging.getLogger(__name__)


def _redact(requirement: str) -> str:
    """Hide user:password in URL requirements (git+https://user:tok@host/...)."""
    return re.sub(r"://[^/@\s]+@", "://***@", requirement)


class AppendBuilder(Builder):
    """Build by appending layers to `base_image` (a registry reference or `oci:DIR[:tag]`).

    Options: `platform` picks the image from a multi-platform base ("linux/amd64"),
    `python_version` overrides the base's Python for wheel selection, `insecure` names registries
    reachable over plain HTTP (loopback hosts always are), `ca_file` is a CA bundle for TLS,
    `cache_dir` overrides $FAIRING_CACHE, `progress` is a callable receiving one-line messages,
    `glibc` the base's glibc for manylinux tags, `jobs` parallel uploads, `retries` per request."""

    name = "append"

    def __init__(
        self,
        base_image: str,
        *,
        platform: str = "linux/amd64",
        python_version: str | None = None,
        insecure=(),
        cache_dir=None,
        progress: Callable[[str], None] | None = None,
        ca_file: str | None = None,
        glibc: str | None = None,
        jobs: int = 4,
        retries: int = 5,
        **kw: Any,
    ):
        if not base_image:
            raise ConfigError("the append builder needs a base image", hint="pass base_image='registry/repo:tag'")
        if layout.is_layout(base_image):
            layout.parse_target(base_image)
        else:
            reference.parse(base_image)  # fail early on a bad reference
        if len(platform.split("/")) not in (2, 3):
            raise ConfigError(f"invalid platform {platform!r}", hint="use os/arch[/variant], e.g. linux/amd64")
        self.base_image = base_image
        self.platform = platform
        self.python_version = python_version
        self.insecure = (insecure,) if isinstance(insecure, str) else tuple(insecure or ())
        self.ca_file = ca_file
        self.glibc = glibc
        self.jobs = jobs
        self.retries = retries
        self.cache = Cache(cache_dir)
        self.progress = progress
        if kw:
            log.debug("append builder ignores options %s", sorted(kw))
        self._clients: dict = {}
        self._base_memo: dict[str, Image] = {}

    # -- helpers --------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)
        else:
            log.info("%s", msg)

    def _client(self, registry: str):
        from ..oci.registry import client_for

        if registry not in self._clients:
            self._clients[registry] = client_for(registry, insecure=self.insecure, ca_file=self.ca_file, retries=self.retries)
        return self._clients[registry]

    def _target(self, ctx: BuildContext, target: str):
        """(layout dir or None, Reference or None, tag)."""
        if not target:
            raise ConfigError("no image target given", hint="pass target='registry/repo[:tag]' or 'oci:DIR[:tag]'")
        if layout.is_layout(target):
            path, tag = layout.parse_target(target)
            return path, None, tag or context_hash(ctx)
        ref = reference.parse(target)
        if ref.digest:
            raise ConfigError(f"cannot push to a digest ({target})", hint="give a tag or no tag: the digest is computed from the content")
        tag = ref.tag or context_hash(ctx)
        return None, ref.with_tag(tag), tag

    def _load_base(self) -> Image:
        if layout.is_layout(self.base_image):
            path, tag = layout.parse_target(self.base_image)
            return layout.read_layout(path, tag, self.platform)
        ref = reference.parse(self.base_image)
        client = self._client(ref.registry)
        # Pin the tag to a digest once per build (one HEAD), then reuse what we fetched for it.
        pinned = ref.digest or client.manifest_digest(ref.repository, ref.identifier) or ref.identifier
        key = f"{pinned}|{self.platform}"
        if key not in self._base_memo:
            self._say(f"reading base image {self.base_image}")
            manifest, _, config = client.resolve(ref.repository, pinned, self.platform)
            base = Image.from_manifest(manifest, config, source=ref.name)
            if base.media_type == OCI_MANIFEST:
                base = base.with_annotations({"org.opencontainers.image.base.name": str(ref), "org.opencontainers.image.base.digest": pinned})
            self._base_memo[key] = base
        return self._base_memo[key]

    # -- the interface --------------------------------------------------------------------------
    def plan(self, ctx: BuildContext, target: str) -> dict[str, Any]:
        """What `build` would do. Touches no network and writes nothing."""
        out_dir, ref, tag = self._target(ctx, target)
        layers = []
        if ctx.requirements:
            dep = {"name": "dependencies", "path": SITE_DIR, "requirements": [_redact(r) for r in ctx.requirements]}
            if self.python_version:
                tags = platform_tags({"architecture": self.platform.split("/")[1]}, self.glibc)
                key = deps_key(ctx.requirements, image_python({}, self.python_version), tags)
                known = self.cache.get_key("deps", key)
                dep.update(key=key, cached=bool(known and self.cache.get_layer(known.get("diff_id", ""))))
            layers.append(dep)
        layers.append({"name": "code", "path": ctx.workdir, "files": len(ctx.files), "bytes": ctx.size()})
        env = dict(ctx.env)
        if ctx.requirements:
            env["PYTHONPATH"] = f"{SITE_DIR}:$PYTHONPATH"
        return {
            "builder": self.name,
            "base": self.base_image,
            "platform": self.platform,
            "target": f"oci:{out_dir}" if out_dir else ref.name,
            "tag": tag,
            "layers": layers,
            "config": {"WorkingDir": ctx.workdir, "Entrypoint": list(ctx.entrypoint), "Cmd": None, "Env": env},
        }

    def image(self, ctx: BuildContext) -> Image:
        """The image value for `ctx` (layers built into the local cache, nothing pushed)."""
        base = self._load_base()
        created = timestamp(source_date_epoch())
        img = base
        env = dict(ctx.env)
        prepend = {}
        if ctx.requirements:
            cfg = base.config
            python = image_python(cfg, self.python_version)
            tags = platform_tags(cfg, self.glibc)
            if ctx.python and ctx.python != python:
                # Pickles made by one Python may not load in another; the runtime check says so
                # too, but this is the earliest point we know both versions.
                log.warning("the context was made with Python %s but the base image has Python %s", ctx.python, python)
            cached, built = dependency_layer(list(ctx.requirements), python=python, tags=tags, cache=self.cache, progress=self._say)
            self._say(f"dependency layer {cached.digest[7:19]} ({cached.size} bytes, {'built' if built else 'cached'})")
            img = img.append(
                Layer(cached.digest, cached.size, base.layer_media_type, cached.diff_id, path=cached.path),
                created_by=f"fairing: pip install --target {SITE_DIR} ({len(ctx.requirements)} requirements, Python {python})",
                created=created,
            )
            prepend = {"PYTHONPATH": SITE_DIR, "PATH": f"{SITE_DIR}/bin"}
        workdir = ctx.workdir.strip("/")
        entries: dict = {f"{workdir}/{dst}" if workdir else dst: src for dst, src in ctx.files.items()}
        if workdir:
            entries.setdefault(workdir, None)  # the working directory exists even with no files
        code = self.cache.build_layer(entries)
        img = img.append(
            Layer(code.digest, code.size, base.layer_media_type, code.diff_id, path=code.path),
            created_by=f"fairing: copy {len(ctx.files)} files to {ctx.workdir} ({ctx.kind})",
            created=created,
        )
        return img.with_config(
            env=env, prepend_env=prepend, workdir=ctx.workdir, entrypoint=list(ctx.entrypoint), clear_cmd=True, created=created,
        )

    def build(self, ctx: BuildContext, target: str) -> BuiltImage:
        t0 = time.monotonic()
        out_dir, ref, tag = self._target(ctx, target)
        img = self.image(ctx)
        if out_dir is not None:
            from ..oci.registry import fetch_to_cache

            self._say(f"writing OCI layout {out_dir}:{tag}")
            img = img.to_oci()  # layouts hold OCI manifests; same layers, so blobs are shared
            digest, stats = layout.write_layout(out_dir, img, tag, fetch_to_cache(self.cache, self._client))
            image_ref = f"oci:{out_dir}@{digest}"
        else:
            from ..oci.registry import fetch_to_cache, push

            self._say(f"pushing {ref}")
            digest, stats = push(img, ref, self._client(ref.registry), fetch=fetch_to_cache(self.cache, self._client), jobs=self.jobs, progress=self._say)
            image_ref = f"{ref.name}@{digest}"
        self._say(f"built {image_ref} ({stats.layers_uploaded} layers uploaded, {stats.layers_skipped} skipped, {stats.bytes_uploaded} bytes)")
        return BuiltImage(
            ref=image_ref,
            digest=digest,
            tag=tag,
            pod_template=pod_template(image_ref, ctx),
            stats=BuildStats(
                seconds=time.monotonic() - t0,
                layers_uploaded=stats.layers_uploaded,
                layers_skipped=stats.layers_skipped,
                bytes_uploaded=stats.bytes_uploaded,
            ),
            context=ctx,
        )

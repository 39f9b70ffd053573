"""The append builder (default): no Docker engine, nothing run in the image.

It reads the base image's manifest and config (never its layers, unless writing an OCI layout),
appends the dependency layers (one per package or small group, wheels installed on the host, see
deps/) and a code layer, sets
Env/WorkingDir/Entrypoint, and pushes only the blobs the registry lacks. Both layers and the
config are reproducible, so the same inputs give the same digest anywhere, any time."""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..context import BuildContext, BuiltImage
from ..errors import BuildError, ConfigError
from ..oci import layout, reference
from ..oci.cache import Cache
from ..oci.image import OCI_LAYER_ZSTD, OCI_MANIFEST, Image, Layer, timestamp, uncompressed_layer_type
from ..oci.layer import compression as layer_compression
from ..oci.layer import source_date_epoch
from ..publish.target import LAYOUT, REGISTRY
from .base import Builder
from .deps import SITE_DIR, deps_key, image_python, install_layers, planned_layers
from .deps.bytecode import interpreter
from .deps.bytecode import setting as bytecode_setting
from .platforms import platform_tags

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
    `glibc` the base's glibc for manylinux tags, `jobs` parallel uploads, `retries` per request,
    `compression` "gzip" (default) or "zstd" (opt-in: smaller layers some runtimes cannot pull),
    `bytecode` "auto" (default: when this machine has the image's Python X.Y), True or False: the
    dependencies' .pyc files in companion layers, so pods do not compile what they import."""

    name = "append"
    accepts = (REGISTRY, LAYOUT)

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
        compression: str | None = None,
        bytecode: bool | str | None = None,
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
        self.compression = layer_compression(compression)
        self.bytecode = bytecode_setting(bytecode)
        self.phases: dict[str, float] = {}  # where the last build's time went (BuildStats.phases)
        self.progress = progress
        if kw:
            log.debug("append builder ignores options %s", sorted(kw))
        self._base_memo: dict[str, Image] = {}

    # -- helpers --------------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)
        else:
            log.info("%s", msg)

    def _client(self, registry: str):
        """The process-wide client for `registry` (its ping, tokens and what it knows are shared
        by every build in this process for a short while: see oci.registry.CACHE_TTL)."""
        from ..oci.registry import client_for

        return client_for(registry, insecure=self.insecure, ca_file=self.ca_file, retries=self.retries)

    def _load_base(self) -> Image:
        if layout.is_layout(self.base_image):
            path, tag = layout.parse_target(self.base_image)
            return layout.read_layout(path, tag, self.platform)
        ref = reference.parse(self.base_image)
        client = self._client(ref.registry)
        # Pin the tag to a digest (one HEAD, remembered for a short while), then reuse what we
        # fetched for that digest.
        pinned = client.pin(ref.repository, ref.identifier) or ref.identifier
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
    def plan(self, ctx: BuildContext, target) -> dict[str, Any]:
        """What `build` would do. Touches no network and writes nothing."""
        t = self.target(target, ctx)
        layers = []
        if ctx.requirements:
            dep = {"name": "dependencies", "path": SITE_DIR, "requirements": [_redact(r) for r in ctx.requirements],
                   "bytecode": self.bytecode}
            if self.python_version:
                tags = platform_tags({"architecture": self.platform.split("/")[1]}, self.glibc)
                python = image_python({}, self.python_version)
                known = planned_layers(ctx.requirements, python, tags, self.cache, self.compression)
                dep.update(key=deps_key(ctx.requirements, python, tags), cached=bool(known) and all(x["cached"] for x in known))
                if known:
                    dep["layers"] = known
            layers.append(dep)
        if ctx.model_files:
            layers.append({"name": "model", "path": ctx.workdir, "files": len(ctx.model_files),
                           "bytes": sum(len(s) if isinstance(s, bytes) else Path(s).stat().st_size
                                        for s in ctx.model_files.values())})
        if ctx.model_layer:
            ml = ctx.model_layer
            layers.append({"name": "model", "path": "/models", "files": ml.files, "bytes": ml.bytes,
                           "digest": ml.digest, "mounted_from": ml.source})
        layers.append({"name": "code", "path": ctx.workdir, "files": len(ctx.files), "bytes": ctx.size()})
        env = dict(ctx.env)
        if ctx.requirements:
            env["PYTHONPATH"] = f"{SITE_DIR}:$PYTHONPATH"
        return {
            "builder": self.name,
            "base": self.base_image,
            "platform": self.platform,
            "target": t.name,
            "tag": t.tag,
            "layers": layers,
            "config": {"WorkingDir": ctx.workdir, "Entrypoint": list(ctx.entrypoint), "Cmd": None, "Env": env},
        }

    def image(self, ctx: BuildContext, target=None) -> Image:
        """The image value for `ctx`: layers built into the local cache. With a registry target,
        each layer is also sent as soon as it is made (the upload overlaps the rest of the build);
        the manifest, which makes it an image, is only pushed by publishing. A build that fails
        stops those sends and pushes no manifest."""
        self.phases = {}
        self._resolved: tuple[str, ...] = ()  # the requirements as resolved (run records show them)
        self._stop_pusher()
        try:
            return self._image(ctx, target)
        except BaseException:
            self._stop_pusher()
            raise

    def _stop_pusher(self) -> None:
        pusher, self._pusher = getattr(self, "_pusher", None), None
        if pusher is not None:
            pusher.close()

    def _start_pusher(self, target):
        """A Pusher for a registry target, else None. Its client is the one publishing uses (one
        ping, one token)."""
        if target is None or getattr(target, "kind", None) != REGISTRY:
            return None
        from ..oci.registry import Pusher, fetch_to_cache

        ref = target.ref
        self._pusher = Pusher(ref, self._client(ref.registry), fetch=fetch_to_cache(self.cache, self._client),
                              jobs=self.jobs, progress=self._say)
        return self._pusher

    def _image(self, ctx: BuildContext, target) -> Image:
        base = self._load_base()
        if self.compression.name == "zstd":
            base = base.to_oci()  # Docker manifests have no zstd layer type
        pusher = self._start_pusher(target)
        layer_type = OCI_LAYER_ZSTD if self.compression.name == "zstd" else base.layer_media_type

        def send(made) -> None:
            """A layer just made (or found in the cache): on its way to the registry now."""
            if pusher is not None:
                pusher.send(Layer(made.digest, made.size, layer_type, made.diff_id, path=made.path))

        if pusher is not None:
            for layer in base.layers:  # HEAD (or mount, or fetch) the base's layers meanwhile
                pusher.send(layer)
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
            deps = install_layers(list(ctx.requirements), python=python, tags=tags, cache=self.cache,
                                  compression=self.compression, progress=self._say, timings=self.phases,
                                  interp=self._interpreter(python), ca_file=self.ca_file, on_layer=send)
            made = [d for d in deps if d.built]
            # Kept for build() to put on the BuiltImage (from the wheels, or what pip installed).
            self._resolved = tuple(sorted({*(f"{w.name}=={w.version}" for d in deps for w in d.group.wheels),
                                           *(r for d in deps for r in d.installed)}, key=str.lower))
            pycs = [d.bytecode for d in deps if d.bytecode]
            self._say(f"{len(deps)} dependency layers ({len(made)} made, {len(deps) - len(made)} cached, "
                      f"{sum(d.layer.size for d in deps)} bytes)"
                      + (f" + {len(pycs)} bytecode layers ({sum(c.size for c in pycs)} bytes)" if pycs else ""))
            for d in deps:
                img = img.append(
                    Layer(d.layer.digest, d.layer.size, layer_type, d.layer.diff_id, path=d.layer.path),
                    created_by=f"fairing: install {d.description or d.group.name} into {SITE_DIR} (Python {python})",
                    created=created,
                )
                if d.bytecode:
                    img = img.append(
                        Layer(d.bytecode.digest, d.bytecode.size, layer_type, d.bytecode.diff_id, path=d.bytecode.path),
                        created_by=f"fairing: bytecode of {d.group.name} (compiled by Python {self._interp.version})",
                        created=created,
                    )
            prepend = {"PYTHONPATH": SITE_DIR, "PATH": f"{SITE_DIR}/bin"}
        workdir = ctx.workdir.strip("/")
        if ctx.model_files:
            # The model's files: a layer of their own, made once per set of files (the cache keeps
            # it by content) and skipped at push when the repository has it, however the code changes.
            model = self.cache.build_layer({f"{workdir}/{dst}" if workdir else dst: src
                                            for dst, src in ctx.model_files.items()},
                                           compression=self.compression, timings=self.phases)
            send(model)
            img = img.append(
                Layer(model.digest, model.size, layer_type, model.diff_id, path=model.path),
                created_by=f"fairing: copy {len(ctx.model_files)} model files to {ctx.workdir}"
                           + (f" ({ctx.env['FAIRING_MODEL_VERSION']})" if ctx.env.get("FAIRING_MODEL_VERSION") else ""),
                created=created,
            )
        if ctx.model_layer:
            # The version's layer as it was registered (files under /models): the push mounts it
            # from the model registry's repository; it is an uncompressed tar, so its digest is
            # its diff_id, and its bytes never come through this machine.
            ml = ctx.model_layer
            img = img.append(
                Layer(ml.digest, ml.size, uncompressed_layer_type(img.media_type), ml.digest, source=ml.source),
                created_by=f"fairing: mount the model layer of {ctx.env.get('FAIRING_MODEL_VERSION') or 'the model'}"
                           f" ({ml.files} files at /models) from {ml.source}",
                created=created,
            )
        entries: dict = {f"{workdir}/{dst}" if workdir else dst: src for dst, src in ctx.files.items()}
        if workdir:
            entries.setdefault(workdir, None)  # the working directory exists even with no files
        code = self.cache.build_layer(entries, compression=self.compression, timings=self.phases)
        img = img.append(
            Layer(code.digest, code.size, layer_type, code.diff_id, path=code.path),
            created_by=f"fairing: copy {len(ctx.files)} files to {ctx.workdir} ({ctx.kind})",
            created=created,
        )
        return img.with_config(
            env=env, prepend_env=prepend, workdir=ctx.workdir, entrypoint=list(ctx.entrypoint), clear_cmd=True, created=created,
        )

    def _interpreter(self, python: str):
        """The interpreter that compiles the dependencies' bytecode for Python `python`, or None."""
        self._interp = None
        if self.bytecode == "off":
            return None
        self._interp = interpreter(python)
        if self._interp is None:
            if self.bytecode == "on":
                raise BuildError(f"bytecode=on needs Python {python} (the base image's) on this machine, and none was found",
                                 hint=f"install python{python} so `python{python}` is on PATH, or pass bytecode=False")
            self._say(f"no Python {python} on this machine: dependency layers without bytecode "
                      f"(pods compile on import; install python{python} for faster starts)")
        return self._interp

    def publish_needs(self):
        """A registry or an OCI layout target: the clients this build used (shared ping and
        token), base layers fetched through the cache; only missing blobs move."""
        from ..oci.registry import fetch_to_cache
        from ..publish.pick import Needs

        pusher, self._pusher = getattr(self, "_pusher", None), None  # the publisher finishes or closes it
        self._handed = pusher  # published() reads its send time
        return Needs(clients=self._client, fetch=fetch_to_cache(self.cache, self._client), jobs=self.jobs,
                     say=self._say, pusher=pusher)

    def published(self, built: BuiltImage, seconds: float) -> BuiltImage:
        self.phases["upload"] = seconds  # after the image was complete (layers sent during the build not counted)
        handed, self._handed = getattr(self, "_handed", None), None
        if handed is not None:
            self.phases["sending"] = handed.seconds  # every blob send, during the build or after, summed over threads
        s = built.stats
        self._say(f"built {built.ref} ({s.layers_uploaded} layers uploaded, {s.layers_skipped} skipped, {s.bytes_uploaded} bytes)")
        self._say("time: " + ", ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in self.phases.items()))
        return replace(built, stats=replace(s, phases=dict(self.phases)),
                       resolved_requirements=getattr(self, "_resolved", ()))

"""Immutable image values (after go-containerregistry's v1.Image + mutate.Append): a manifest
plus a config. `append` and `with_config` return new values; pushing is someone else's verb."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import BuildError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"  # opt-in only: not every runtime pulls it

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ALL_MANIFEST_TYPES = MANIFEST_TYPES + INDEX_TYPES
_CONFIG_FOR = {DOCKER_MANIFEST: DOCKER_CONFIG, OCI_MANIFEST: OCI_CONFIG}
_LAYER_FOR = {DOCKER_MANIFEST: DOCKER_LAYER, OCI_MANIFEST: OCI_LAYER}
_UNCOMPRESSED_FOR = {DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar",
                     OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar"}
_DOCKER_TO_OCI_LAYER = {
    DOCKER_LAYER: OCI_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


def uncompressed_layer_type(manifest_type: str) -> str:
    """The media type of an uncompressed tar layer in a manifest of `manifest_type`."""
    return _UNCOMPRESSED_FOR[manifest_type]


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical_json(value: Any) -> bytes:
    """Stable bytes for a JSON value: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def timestamp(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Layer:
    """A layer descriptor, plus where its bytes are: a local file (`path`) or a repository
    (`source`, "registry/repo") it can be mounted or fetched from."""

    digest: str
    size: int
    media_type: str
    diff_id: str | None = None
    path: Path | None = None
    source: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # other descriptor fields (urls, annotations), kept as-is

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        d.update(dict(self.extra))
        return d


@dataclass(frozen=True)
class Image:
    media_type: str  # the manifest's media type (Docker v2 schema 2 or OCI)
    config_bytes: bytes
    layers: tuple[Layer, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()  # manifest annotations (OCI only)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping, config_bytes: bytes, *, source: str | None = None, blob_dir: Path | None = None) -> "Image":
        """An image from a fetched manifest and config. Layer bytes live in `source` (a repo) or
        in `blob_dir` (an OCI layout's blobs/sha256)."""
        media_type = manifest.get("mediaType") or OCI_MANIFEST
        if media_type not in MANIFEST_TYPES:
            raise BuildError(f"unsupported manifest type {media_type!r}", hint="use a base image in Docker v2 schema 2 or OCI format")
        config = json.loads(config_bytes)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        descs = manifest.get("layers") or []
        if len(diff_ids) != len(descs):
            raise BuildError(f"base image is inconsistent: {len(descs)} layers but {len(diff_ids)} diff_ids in its config", hint="rebuild or re-push the base image")
        layers = []
        for d, diff_id in zip(descs, diff_ids):
            extra = tuple((k, v) for k, v in d.items() if k not in ("mediaType", "size", "digest"))
            path = blob_dir / d["digest"].split(":", 1)[1] if blob_dir else None
            layers.append(Layer(d["digest"], int(d["size"]), d["mediaType"], diff_id, path=path, source=source, extra=extra))
        return cls(media_type, bytes(config_bytes), tuple(layers), tuple(sorted((manifest.get("annotations") or {}).items())))

    # -- reading ------------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """A fresh copy of the config: mutating it does not change this image."""
        return json.loads(self.config_bytes)

    @property
    def config_media_type(self) -> str:
        return _CONFIG_FOR[self.media_type]

    @property
    def layer_media_type(self) -> str:
        """Media type for appended layers: match the base's format (Docker or OCI)."""
        return _LAYER_FOR[self.media_type]

    @property
    def config_digest(self) -> str:
        return sha256(self.config_bytes)

    def manifest(self) -> dict:
        m: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": self.config_media_type, "size": len(self.config_bytes), "digest": self.config_digest},
            "layers": [layer.descriptor() for layer in self.layers],
        }
        if self.annotations and self.media_type == OCI_MANIFEST:
            m["annotations"] = dict(self.annotations)
        return m

    def manifest_bytes(self) -> bytes:
        if "manifest" not in self._cache:
            self._cache["manifest"] = json.dumps(self.manifest(), separators=(",", ":")).encode()
        return self._cache["manifest"]

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes())

    # -- mutating (returns new values) ----------------------------------------------------------
    def append(self, layer: Layer, *, created_by: str, comment: str | None = None, created: str | None = None) -> "Image":
        """A new image with `layer` on top, its DiffID in rootfs and a matching history entry."""
        if not layer.diff_id:
            raise ValueError("an appended layer needs its diff_id")
        cfg = self.config
        rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs.setdefault("diff_ids", []).append(layer.diff_id)
        entry = {"created": created or cfg.get("created") or timestamp(0), "created_by": created_by}
        if comment:
            entry["comment"] = comment
        cfg.setdefault("history", []).append(entry)
        return replace(self, config_bytes=canonical_json(cfg), layers=self.layers + (layer,), _cache={})

    def with_config(
        self,
        *,
        env: Mapping[str, str] | None = None,
        prepend_env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        entrypoint: list[str] | None = None,
        cmd: list[str] | None = None,
        clear_cmd: bool = False,
        labels: Mapping[str, str] | None = None,
        created: str | None = None,
    ) -> "Image":
        """A new image with container settings changed. `env` sets variables (replacing same-named
        ones); then `prepend_env` puts a value in front of a PATH-like variable (":"-joined), the
        one `env` set or the base's."""
        cfg = self.config
        c = cfg.setdefault("config", {}) or {}
        cfg["config"] = c
        current = dict(_split_env(c.get("Env") or []))
        for k, v in (env or {}).items():
            current[k] = v
        # After `env`: a PYTHONPATH the user sets must not drop the dependency layers' directory.
        for k, v in (prepend_env or {}).items():
            current[k] = f"{v}:{current[k]}" if current.get(k) else v
        if env or prepend_env:
            c["Env"] = [f"{k}={v}" for k, v in current.items()]
        if workdir is not None:
            c["WorkingDir"] = workdir
        if entrypoint is not None:
            c["Entrypoint"] = list(entrypoint)
        if clear_cmd:
            c.pop("Cmd", None)
        if cmd is not None:
            c["Cmd"] = list(cmd)
        if labels:
            c["Labels"] = {**(c.get("Labels") or {}), **labels}
        if created is not None:
            cfg["created"] = created
        return replace(self, config_bytes=canonical_json(cfg), _cache={})

    def to_oci(self) -> "Image":
        """The same image with OCI media types (layer bytes and config are unchanged). OCI
        layouts need this: tools reading them (skopeo, podman) skip Docker-typed manifests."""
        if self.media_type == OCI_MANIFEST:
            return self
        layers = tuple(replace(x, media_type=_DOCKER_TO_OCI_LAYER.get(x.media_type, x.media_type)) for x in self.layers)
        return replace(self, media_type=OCI_MANIFEST, layers=layers, _cache={})

    def with_annotations(self, annotations: Mapping[str, str]) -> "Image":
        return replace(self, annotations=tuple(sorted({**dict(self.annotations), **annotations}.items())), _cache={})


def _split_env(items: list[str]):
    for item in items:
        k, _, v = item.partition("=")
        yield k, v


def env_of(config: Mapping) -> dict[str, str]:
    """The Env of an image config as a dict."""
    return dict(_split_env(((config.get("config") or {}).get("Env")) or []))

"""OCI image layout directories (`oci:DIR[:tag]`): a build target that needs no registry, and a
place a base image can come from. A layout must be complete, so base layers are copied in."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import BuildError, ConfigError
from .image import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, Image, Layer, sha256
from .registry import PushStats, select_platform

REF_NAME = "org.opencontainers.image.ref.name"
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


def is_layout(target: str) -> bool:
    return target.startswith("oci:")


def parse_target(target: str) -> tuple[Path, str | None]:
    """`oci:DIR[:tag]` -> (DIR, tag). A final `:x` is a tag only if it cannot be part of a path."""
    rest = target[4:] if target.startswith("oci:") else target
    path, tag = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail and _TAG_RE.match(tail):
        path, tag = head, tail
    if not path:
        raise ConfigError(f"no directory in layout target {target!r}", hint="use oci:DIR[:tag], e.g. oci:./out:v1")
    return Path(path), tag


def _blob(root: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return root / "blobs" / algo / hexd


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _place(src: Path, dest: Path) -> None:
    """Put `src`'s bytes at `dest`: hard link when possible (same disk), else an atomic copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_layout(root: Path, image: Image, tag: str | None, fetch: Callable[[Layer], Path]) -> tuple[str, PushStats]:
    """Write `image` into the layout at `root` (created if needed) and point `tag` at it in
    index.json. Blobs go in first and index.json last, so a crash leaves the old index intact."""
    stats = PushStats()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "oci-layout").exists():
            _write_atomic(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for layer in image.layers:
            dest = _blob(root, layer.digest)
            if dest.exists() and dest.stat().st_size == layer.size:
                stats.add(skipped=1)
                continue
            _place(layer.path if layer.path and layer.path.exists() else fetch(layer), dest)
            stats.add(uploaded=1, nbytes=layer.size)
        for data in (image.config_bytes, image.manifest_bytes()):
            dest = _blob(root, sha256(data))
            if not dest.exists():
                _write_atomic(dest, data)
                stats.add(nbytes=len(data))
        index_path = root / "index.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        desc = {"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest_bytes())}
        entries = index.get("manifests") or []
        if tag:
            desc["annotations"] = {REF_NAME: tag}
            entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) != tag]
        elif any(m.get("digest") == image.digest for m in entries):
            desc = None
        if desc:
            entries.append(desc)
        index["manifests"] = entries
        _write_atomic(index_path, json.dumps(index, indent=2).encode())
    except OSError as e:
        raise BuildError(f"cannot write the OCI layout at {root}: {e.strerror or e}", hint="check the directory is writable and the disk has space") from None
    return image.digest, stats


def read_layout(root: Path, tag: str | None, platform: str) -> Image:
    """The image tagged `tag` in the layout at `root` (the only one, if no tag and only one)."""
    name = f"oci:{root}" + (f":{tag}" if tag else "")
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{root} is not an OCI image layout (no index.json)", hint="build into it first with target='oci:DIR', or `skopeo copy ... oci:DIR:tag`") from None
    entries = index.get("manifests") or []
    if tag:
        entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == tag]
    if len(entries) != 1:
        tags = sorted(t for m in index.get("manifests") or [] if (t := (m.get("annotations") or {}).get(REF_NAME)))
        raise ConfigError(f"{name}: {'no' if not entries else 'more than one'} image {'with that tag' if tag else 'without a tag'}", hint=f"pick one of the tags: {', '.join(tags) or 'none'}")
    desc = entries[0]
    raw = _read_verified(root, desc["digest"])
    manifest = json.loads(raw)
    media_type = manifest.get("mediaType") or desc.get("mediaType")
    if media_type in INDEX_TYPES:
        desc = select_platform(manifest, platform, name)
        manifest = json.loads(_read_verified(root, desc["digest"]))
        media_type = manifest.get("mediaType") or desc.get("mediaType")
    if media_type not in MANIFEST_TYPES:
        raise BuildError(f"{name} has unsupported manifest type {media_type!r}", hint="use a Docker v2 schema 2 or OCI image")
    manifest["mediaType"] = media_type
    config = _read_verified(root, manifest["config"]["digest"])
    return Image.from_manifest(manifest, config, blob_dir=root / "blobs" / "sha256")


def _read_verified(root: Path, digest: str) -> bytes:
    try:
        data = _blob(root, digest).read_bytes()
    except FileNotFoundError:
        raise BuildError(f"OCI layout {root} is missing blob {digest}", hint="the layout is incomplete; write it again") from None
    if sha256(data) != digest:
        raise BuildError(f"blob {digest} in OCI layout {root} does not match its digest", hint="the layout is corrupt; write it again")
    return data


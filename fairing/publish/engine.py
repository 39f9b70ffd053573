"""Publishing an image that an engine (Docker, or Podman's Docker-compatible API) built: keep it
in the engine, pinned by its image ID, or have the engine push it to a registry (with the local
login as X-Registry-Auth) and pin it by the pushed digest."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..context import BuildStats, BuiltImage
from ..errors import BuildError
from ..oci.reference import Reference
from .target import ENGINE, REGISTRY, Target

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class EngineImage:
    """An image in an engine: its image ID and the name it is tagged with there."""

    id: str
    name: Reference


class EnginePublisher:
    """`client` is a connected docker.APIClient (the caller closes it); `output` receives the
    engine's progress lines."""

    kinds = (ENGINE, REGISTRY)

    def __init__(self, client: Any, output: Callable[[str], None]):
        self.client, self.output = client, output

    def publish(self, image: EngineImage, target: Target) -> BuiltImage:
        if target.kind == ENGINE:  # the image stays in the engine, pinned by its full image ID
            image_id = image.id if image.id.startswith("sha256:") else self.client.inspect_image(str(image.name))["Id"]
            return BuiltImage(ref=image_id, digest=image_id, tag=target.tag)
        from ..oci.auth import engine_auth, find_credentials

        ref = image.name
        creds = find_credentials(ref.registry, ref.repository).credentials
        events = self.client.push(ref.name, tag=ref.tag, stream=True, decode=True,
                                  auth_config=engine_auth(ref.registry, creds) if creds else None)
        digest, stats = parse_push_stream(events, self.output, str(ref))
        digest = digest or registry_digest(ref)
        return BuiltImage(ref=f"{ref.name}@{digest}", digest=digest, tag=ref.tag, stats=stats)


def registry_digest(ref: Reference) -> str:
    """Ask the registry which manifest the tag now names (for engines that don't say), with the
    same client and credentials as the append builder."""
    from ..oci.registry import client_for

    digest = client_for(ref.registry).manifest_digest(ref.repository, ref.tag)
    if not digest:
        raise BuildError(f"pushed {ref} but the registry does not list it",
                         hint="check the registry answers HEAD /v2/<name>/manifests/<tag>")
    return digest


def parse_push_stream(events: Iterable[dict], emit: Callable[[str], None], target: str) -> tuple[str | None, BuildStats]:
    """Follow a /push stream; return (pushed manifest digest if the engine told it, stats)."""
    digest = None
    progress: dict[str, int] = {}
    pushed: set[str] = set()
    skipped: set[str] = set()
    for ev in events:
        if ev.get("error") or ev.get("errorDetail"):
            detail = ev.get("errorDetail") or {}
            msg = " ".join(str(detail.get("message") or ev.get("error")).split())
            hint = "check the registry is reachable and that you may push to it (docker login <registry>)"
            if re.search(r"unauthori[sz]ed|authentication required|denied|401|403", msg, re.I):
                hint = f"log in first: docker login {target.split('/', 1)[0]}"
            raise BuildError(f"push of {target} failed: {msg[:300]}", hint=hint)
        status = str(ev.get("status") or "")
        layer = str(ev.get("id") or "")
        if status:
            emit(f"{layer}: {status}" if layer else status)
        if status.startswith("Pushed") and layer:
            pushed.add(layer)
        elif "already exists" in status and layer:
            skipped.add(layer)
        if status.startswith("Pushing") and layer:
            cur = (ev.get("progressDetail") or {}).get("current")
            if isinstance(cur, int):
                progress[layer] = max(progress.get(layer, 0), cur)
        aux = ev.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
        elif not digest and "digest:" in status:
            m = _DIGEST.search(status)
            digest = m.group(1) if m else None
    stats = BuildStats(layers_uploaded=len(pushed), layers_skipped=len(skipped - pushed),
                       bytes_uploaded=sum(progress.get(layer, 0) for layer in pushed))
    return digest, stats

"""The one place that picks how an image value is published (ko's publisher choice): by what the
builder made and where the target points.

    EngineImage (docker builder)     -> EnginePublisher: kept in the engine, or pushed by it
    Pushed (cluster builder)         -> RegistryPublisher: the build pushed; only pinned
    Image + oci:DIR target           -> LayoutPublisher
    Image + registry target          -> RegistryPublisher: missing blobs, then the manifest

A builder says what its publisher may use (`Builder.publish_needs`): registry clients, a way to
fetch base layers, an engine connection. It never picks the publisher itself."""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..context import BuiltImage
from .target import LAYOUT, Target


@dataclass(frozen=True)
class Needs:
    """What a builder lends its publisher. `clients(registry)` gives a registry client (shared
    with the build: one ping, one token); `fetch(layer)` gets a base layer into a local file;
    `engine(target)` opens the builder's engine connection; `say` receives progress lines;
    `pusher`: an oci.registry.Pusher the build already sends the image's layers with, as they are
    made (the registry publisher finishes it when it is for the same repository, else closes it)."""

    clients: Callable[[str], Any] | None = None
    fetch: Callable[[Any], Path] | None = None
    jobs: int = 4
    engine: Callable[[Target], AbstractContextManager] | None = None
    say: Callable[[str], None] | None = None
    pusher: Any = None


def publish(image: Any, target: Target, needs: Needs) -> BuiltImage:
    """Send `image` to `target` with the publisher its kind calls for; pinned by digest."""
    from .engine import EngineImage, EnginePublisher
    from .registry import Pushed, RegistryPublisher

    if isinstance(image, EngineImage):
        with needs.engine(target) as client:
            return EnginePublisher(client, needs.say).publish(image, target)
    if isinstance(image, Pushed):
        return RegistryPublisher(clients=None).publish(image, target)
    if target.kind == LAYOUT:
        from .layout import LayoutPublisher

        return LayoutPublisher(needs.fetch, progress=needs.say).publish(image, target)
    return RegistryPublisher(needs.clients, needs.fetch, jobs=needs.jobs, progress=needs.say,
                             pusher=needs.pusher).publish(image, target)

"""Publishing to a registry: push an image value's missing blobs and its manifest, and pin the
result by digest. An image some other mechanism already pushed (the cluster builder's kaniko pod)
is only pinned."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..context import BuildStats, BuiltImage
from ..oci.image import Image, Layer
from .target import REGISTRY, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pushed:
    """An image already in the target registry (pushed by the build itself), known by digest."""

    digest: str


class RegistryPublisher:
    """`clients(registry)` gives the registry client to use (shared with whoever read the base
    image, so the ping, token and connections are reused); `fetch(layer)` gets a layer that is
    neither local nor mountable into a local file."""

    kind = REGISTRY

    def __init__(self, clients: Callable, fetch: Callable[[Layer], Path] | None = None, *, jobs: int = 4,
                 progress: Callable[[str], None] | None = None, pusher=None):
        self.clients, self.fetch, self.jobs, self.pusher = clients, fetch, jobs, pusher
        self.say = progress or (lambda msg: log.info("%s", msg))

    def publish(self, image: "Image | Pushed", target: Target) -> BuiltImage:
        ref = target.ref
        early = self.pusher if self.pusher is not None and self.pusher.target == ref else None
        if self.pusher is not None and early is None:
            self.pusher.close()  # started for another target: its blobs are not this image's
        if isinstance(image, Pushed):
            return BuiltImage(ref=f"{ref.name}@{image.digest}", digest=image.digest, tag=target.tag)
        from ..oci.registry import push

        self.say(f"pushing {ref}")
        digest, stats = push(image, ref, self.clients(ref.registry), fetch=self.fetch, jobs=self.jobs, progress=self.say,
                             pusher=early)
        return BuiltImage(ref=f"{ref.name}@{digest}", digest=digest, tag=target.tag,
                          stats=BuildStats(layers_uploaded=stats.layers_uploaded, layers_skipped=stats.layers_skipped,
                                           bytes_uploaded=stats.bytes_uploaded))

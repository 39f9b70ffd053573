"""Publishing to an OCI image layout directory (`oci:DIR[:tag]`): no registry needed. A layout
must be complete, so base layers that are only in a registry are fetched into it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..context import BuildStats, BuiltImage
from ..oci.image import Image, Layer
from .target import LAYOUT, Target

log = logging.getLogger(__name__)


class LayoutPublisher:
    kind = LAYOUT

    def __init__(self, fetch: Callable[[Layer], Path], *, progress: Callable[[str], None] | None = None):
        self.fetch = fetch
        self.say = progress or (lambda msg: log.info("%s", msg))

    def publish(self, image: Image, target: Target) -> BuiltImage:
        from ..oci import layout

        self.say(f"writing OCI layout {target.path}:{target.tag}")
        image = image.to_oci()  # layouts hold OCI manifests; same layers, so blobs are shared
        digest, stats = layout.write_layout(target.path, image, target.tag, self.fetch)
        return BuiltImage(ref=f"oci:{target.path}@{digest}", digest=digest, tag=target.tag,
                          stats=BuildStats(layers_uploaded=stats.layers_uploaded, layers_skipped=stats.layers_skipped,
                                           bytes_uploaded=stats.bytes_uploaded))

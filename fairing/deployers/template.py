"""The pod template that runs an image: one container named "main" running the build context's
entrypoint in its workdir, with its env, labelled as fairing's. Deployers start from it. It lives
with the deployers because only they run images: builders and publishers make image values, and
the values themselves (fairing.context) derive nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .labels import MANAGED

if TYPE_CHECKING:
    from ..context import BuildContext, BuiltImage


def pod_template(image_ref: str, ctx: "BuildContext", container: str = "main") -> dict:
    """The pod template that runs `image_ref` as `ctx` says: one container named `container`
    (never containers[0])."""
    return {
        "metadata": {"labels": dict(MANAGED)},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": container,
                    "image": image_ref,
                    "command": list(ctx.entrypoint),
                    "workingDir": ctx.workdir,
                    "env": [{"name": k, "value": v} for k, v in sorted(ctx.env.items())],
                }
            ],
        },
    }


def template_of(image: "BuiltImage") -> Mapping[str, Any]:
    """The template `image` runs with: the one handed in with it (a rerun's, a caller's), else the
    one its context makes, else none ({})."""
    if image.pod_template:
        return image.pod_template
    if image.context is not None:
        return pod_template(image.ref, image.context)
    return {}

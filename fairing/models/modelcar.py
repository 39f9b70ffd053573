"""A KServe modelcar of a model version: an OCI image whose /models holds the version's files.

KServe (enableModelcar) serves `storageUri: oci://IMAGE` by running IMAGE as a sidecar of the
predictor pod (`sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`, and an init
container checking that /models is not empty), so the runtime reads the files in place: no storage
initializer, no copy, and the pod's image pull is the model's download, pinned by digest.

The image is the serving plan's base image (it has `sh`, which KServe's commands need) plus one
layer of the files under /models: the version's own layer, written when it was registered into a
registry store and mounted from there when the modelcar goes to the same registry (nothing fetched,
nothing uploaded); else made here by the append builder from the fetched files. On each path the
layer is the same one for the same files (deterministic tar writers), so a modelcar of a version
already pushed uploads nothing but a manifest, and the base's layers are mounted, never re-uploaded.
No entrypoint: KServe gives the command."""
from __future__ import annotations

from typing import Any

MODELS_DIR = "/models"  # where KServe's modelcar sidecar looks


def context(m: Any, target: Any = None):
    """The build context of the modelcar of `m` (a fairing.models.serve.ModelFiles) pushed to
    `target`: the version's registered layer (its files under /models) mounted when the target is
    on the registry the version is in, so nothing is fetched or uploaded; else its files, fetched
    here, made into that layer."""
    from ..context import BuildContext
    from .serve import fetch, layer_for

    env = {"FAIRING_MODEL_VERSION": m.resolved, "FAIRING_MODEL_DIGEST": m.digest}
    layer = layer_for(m, target)
    if layer is not None:
        return BuildContext(files={}, entrypoint=(), workdir=MODELS_DIR, kind="modelcar", env=env, model_layer=layer)
    fetch(m)
    return BuildContext(files={}, entrypoint=(), workdir=MODELS_DIR, kind="modelcar", env=env,
                        model_files={f["path"]: str(m.dir / f["path"]) for f in m.files})


def target_for(serving_target: Any) -> str:
    """Where the modelcar goes: beside the serving image, `<its repository>-modelcar` (the context
    hash is the tag, as for every image fairing names)."""
    from ..errors import ConfigError
    from ..publish.target import REGISTRY

    if serving_target is None or serving_target.kind != REGISTRY:
        raise ConfigError("a modelcar is pushed to a registry, and this plan has no registry target",
                          hint="pass --registry HOST/REPO (the cluster pulls the modelcar from there)")
    return f"{serving_target.ref.name}-modelcar"


def build(builder: Any, serving_target: Any, m: Any) -> Any:
    """Build and push the modelcar of `m` with `builder` (the serving plan's append builder);
    returns the BuiltImage (ref pinned by digest)."""
    from ..errors import ConfigError

    if getattr(builder, "name", None) != "append":
        raise ConfigError(f"a modelcar is made by the append builder, not {getattr(builder, 'name', builder)!r}",
                          hint="drop --builder (append is the default) or serve without --modelcar")
    from ..publish.target import parse

    target = target_for(serving_target)
    return builder.build(context(m, parse(target)), target)

"""Fairing images as Kubeflow Pipelines v2 components.

    import fairing.kfp
    train_op = fairing.kfp.component(train, registry="127.0.0.1:5000/team")   # builds, pins by digest

    from kfp import dsl
    @dsl.pipeline(name="fit")
    def fit(lr: float = 0.1):
        train_op(epochs=3, lr=lr)

`export(entry, path)` writes the component YAML (what `fair export kfp` does). Inputs come from
the function's signature (or `params=["epochs:int=3"]` for a script); outputs are `result` (the
return value as JSON), `metrics` and the `outputs` artifact: the files the code writes to
`$FAIRING_OUTPUT_DIR`, typed `system.Artifact`, or `system.Model` / `system.Dataset` with
`outputs_type="model"` / `"dataset"` (`--outputs-type`). The `kfp` package is needed only by `component()`: `pip install 'fairing[kfp]'` then
`pip install --no-deps kfp==2.17.3` (kfp pins kubernetes<31, older than the client fairing needs)."""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

__all__ = ["component", "export", "build_spec"]


def _load_entry(entry: Any) -> Any:
    """`file.py:function` -> the function (imported from the file); anything else as given."""
    if not isinstance(entry, str) or ":" not in entry or not entry.split(":", 1)[0].endswith(".py"):
        return entry
    import importlib.util
    import sys

    path, _, attr = entry.partition(":")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path} does not exist", hint="pass FILE.py:FUNCTION or a script")
    mod_name = p.stem
    spec = importlib.util.spec_from_file_location(mod_name, p)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(p.resolve().parent))
    try:
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise ConfigError(f"cannot import {path}: {type(e).__name__}: {e}", hint="run it with python first") from None
    finally:
        sys.path.pop(0)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{path} has no function {attr!r}", hint=f"define `def {attr}(...)` in {path}")
    return fn


def _name_of(entry: Any) -> str:
    if callable(entry):
        return getattr(entry, "__name__", "component").replace("_", "-")
    return Path(str(entry)).stem.replace("_", "-") or "component"


def build_spec(entry: Any, *, params: Sequence[str] = (), name: str | None = None, description: str | None = None,
               outputs_type: str = "artifact", settings: Any = None, progress: Any = None,
               **overrides: Any) -> dict:
    """Build (or reuse: same content, same digest) the image for `entry` and return the component
    document. `outputs_type` ("artifact", "model" or "dataset") types the `outputs` artifact;
    `overrides` are settings (registry, base_image, requirements, builder, ...)."""
    from .. import pipeline
    from .. import settings as settings_mod
    from ..preprocessors.base import PYTHON, RUNTIME_DIR
    from ..progress import Progress
    from ..request import Request, Stage
    from .spec import SHIM_NAME, component_spec, inputs_of_function, output_type, parse_params

    output_type(outputs_type)  # a typo fails before the build
    entry = _load_entry(entry)
    s = settings or settings_mod.load()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        s = s.with_overrides(overrides)
    if not s.registry:
        raise ConfigError("a pipeline component needs a registry the pipeline's cluster can pull from",
                          hint="pass --registry HOST[:PORT]/PATH (or registry= / the registry setting)")
    is_fn = callable(entry) and not isinstance(entry, (str, os.PathLike))
    if is_fn:
        if params:
            raise ConfigError("--param is for scripts; a function's inputs are its parameters",
                              hint="drop --param, or change the function's signature")
        inputs = inputs_of_function(entry)
        pre = Stage("function")
    else:
        if not Path(str(entry)).exists():
            raise ConfigError(f"{entry} does not exist", hint="pass FILE.py:FUNCTION, a .py script or a directory")
        inputs = parse_params(params)
        pre = Stage("python")
    p = pipeline.plan(Request(entry, s, preprocessor=pre, build_only=True))
    shim = (Path(__file__).parent / SHIM_NAME).read_bytes()
    # The shim is also the image's entrypoint (a launcher): kfp.local's DockerRunner gives the
    # component's command as arguments, where KFP on a cluster replaces the entrypoint with it.
    launcher = (PYTHON, "-u", f"{RUNTIME_DIR}/{SHIM_NAME}", "--image-default")
    image, run = pipeline.build_recorded(p, progress or Progress(enabled=False), command="export",
                                         extra_files={f"{RUNTIME_DIR}/{SHIM_NAME}": shim}, launcher=launcher)
    ctx = image.context
    doc = component_spec(name=name or _name_of(entry), image=image.ref, inputs=inputs,
                         mode="function" if is_fn else "script", workdir=ctx.workdir,
                         command=json.loads(ctx.entrypoint[-1]), outputs_type=outputs_type,
                         description=description or (inspect.getdoc(entry) or "").split("\n")[0] or None
                         if is_fn else description)
    doc.setdefault("metadata", {})["annotations"] = {"fairing.dev/run-id": run.id,
                                                     "fairing.dev/source-digest": run.doc["source"]["digest"]}
    return doc


def export(entry: Any, path: str | os.PathLike, **kw: Any) -> dict:
    """Build the image and write the component YAML to `path`; returns the document."""
    import yaml

    doc = build_spec(entry, **kw)
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    return doc


def component(entry: Any, **kw: Any):
    """A KFP component (kfp's own YamlComponent) for `entry`, usable inside a @dsl.pipeline."""
    try:
        from kfp import components
    except ImportError:
        raise ConfigError("the kfp package is not installed",
                          hint="pip install 'fairing[kfp]' && pip install --no-deps kfp==2.17.3 "
                               "(kfp pins an older kubernetes client than fairing needs)") from None
    import yaml

    return components.load_component_from_text(yaml.safe_dump(build_spec(entry, **kw), sort_keys=False))

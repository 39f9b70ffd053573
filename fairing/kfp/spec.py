"""The KFP component document (the component YAML format kfp's load_component_from_file reads):
inputs from a function's signature or declared params, outputs `result`, `metrics` and the
`outputs` artifact, and a container pinned by digest that runs fairing's component shim
(run_component.py) in the image. No kfp import here: writing the YAML needs none.

`outputs` is what the code writes to `$FAIRING_OUTPUT_DIR`: the shim points that variable at the
artifact's local path (KFP's `{outputPath: outputs}`), so the files land where KFP uploads them
from and downstream steps take them as `Input[Model]` / `Input[Artifact]` / `Input[Dataset]`.
It is always declared, so a step's interface does not depend on what one run wrote (a run that
writes nothing leaves an empty directory); its type says what it holds (OUTPUT_TYPES). The shim
also gets KFP's executor input and writes the executor output naming the artifact, as kfp's own
Python components do: kfp.local reports (and passes downstream) only artifacts named there."""
from __future__ import annotations

import inspect
import json
import re
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError

SHIM_NAME = "run_component.py"
TYPES = {int: "Integer", float: "Float", bool: "Boolean", str: "String", dict: "JsonObject", list: "JsonArray"}
TYPE_NAMES = {"int": "Integer", "integer": "Integer", "float": "Float", "bool": "Boolean", "boolean": "Boolean",
              "str": "String", "string": "String", "dict": "JsonObject", "json": "JsonObject", "list": "JsonArray"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# --outputs-type -> the v1 component type of `outputs` (kfp reads them as system.Artifact, ...)
OUTPUT_TYPES = {"artifact": "Artifact", "model": "Model", "dataset": "Dataset"}
OUTPUTS = "outputs"


def _type_of(annotation: Any, default: Any) -> str:
    if isinstance(annotation, str):
        return TYPE_NAMES.get(annotation.lower(), "String")
    if annotation in TYPES:
        return TYPES[annotation]
    origin = getattr(annotation, "__origin__", None)
    if origin in TYPES:
        return TYPES[origin]
    if default is not inspect.Parameter.empty and default is not None and type(default) in TYPES:
        return TYPES[type(default)]
    return "String"


def _default_text(value: Any, kind: str) -> str:
    if kind in ("JsonObject", "JsonArray"):
        return json.dumps(value)
    if kind == "Boolean":
        return "true" if value else "false"
    return str(value)


def inputs_of_function(fn: Callable) -> list[dict]:
    """One input per parameter of `fn` (not *args/**kwargs), typed from its annotation or default."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise ConfigError(f"{fn.__name__}'s parameter {p.name!r} is positional-only; pipeline inputs are passed by name",
                              hint="make it a regular parameter")
        kind = _type_of(p.annotation, p.default)
        spec: dict[str, Any] = {"name": p.name, "type": kind}
        if p.default is not inspect.Parameter.empty:
            if p.default is None:
                spec["optional"] = True
            else:
                spec["default"] = _default_text(p.default, kind)
        out.append(spec)
    return out


def parse_params(params: Sequence[str]) -> list[dict]:
    """`--param` declarations for scripts: NAME, NAME=DEFAULT, NAME:TYPE or NAME:TYPE=DEFAULT."""
    out = []
    for raw in params:
        head, eq, default = raw.partition("=")
        name, colon, kind = head.partition(":")
        name = name.strip()
        if not NAME.match(name):
            raise ConfigError(f"invalid --param {raw!r}: {name!r} is not a parameter name",
                              hint="use NAME, NAME=DEFAULT or NAME:TYPE=DEFAULT, e.g. --param epochs:int=3")
        if colon:
            if kind.strip().lower() not in TYPE_NAMES:
                raise ConfigError(f"invalid --param {raw!r}: unknown type {kind!r}",
                                  hint="types: int, float, bool, str, dict, list")
            t = TYPE_NAMES[kind.strip().lower()]
        elif eq:
            t = _guess(default)
        else:
            t = "String"
        spec: dict[str, Any] = {"name": name, "type": t}
        if eq:
            spec["default"] = default
        out.append(spec)
    return out


def _guess(text: str) -> str:
    for kind, conv in (("Integer", int), ("Float", float)):
        try:
            conv(text)
            return kind
        except ValueError:
            pass
    return "Boolean" if text.lower() in ("true", "false") else "String"


def output_type(kind: str) -> str:
    """`artifact` / `model` / `dataset` -> the component type of the `outputs` artifact."""
    t = OUTPUT_TYPES.get(str(kind).strip().lower())
    if t is None:
        raise ConfigError(f"unknown outputs type {kind!r}", hint="use --outputs-type " + " | ".join(OUTPUT_TYPES))
    return t


def component_spec(*, name: str, image: str, inputs: Sequence[Mapping[str, Any]], mode: str,
                   workdir: str, command: Sequence[str] = (), description: str | None = None,
                   outputs_type: str = "artifact") -> dict:
    """The component document. `image` must be pinned by digest (registry/repo@sha256:...)."""
    if "@sha256:" not in image or image.startswith("oci:"):
        raise ConfigError(f"a pipeline component needs an image in a registry pinned by digest, not {image!r}",
                          hint="build with --registry HOST[:PORT]/PATH")
    kind = output_type(outputs_type)
    types = {i["name"]: i["type"] for i in inputs}
    shim = f"{workdir.rstrip('/')}/.fairing/{SHIM_NAME}"
    args: list[Any] = ["--mode", mode, "--types", json.dumps(types, sort_keys=True),
                       "--result", {"outputPath": "result"}, "--metrics", {"outputPath": "metrics"},
                       "--outputs", {"outputPath": OUTPUTS}, "--executor-input", {"executorInput": None}]
    if mode == "script":
        args += ["--exec", json.dumps(list(command))]
    args.append("--")
    for i in inputs:
        args += [f"--{i['name']}", {"inputValue": i["name"]}]
    doc: dict[str, Any] = {"name": name}
    if description:
        doc["description"] = description
    doc["inputs"] = [dict(i) for i in inputs]
    doc["outputs"] = [{"name": "result", "type": "String", "description": "the return value as JSON (scripts: the last line printed)"},
                      {"name": "metrics", "type": "JsonObject", "description": "name=value metrics from the log"},
                      {"name": OUTPUTS, "type": kind, "description": "the files the code wrote to $FAIRING_OUTPUT_DIR"}]
    doc["implementation"] = {"container": {"image": image, "command": ["python3", "-u", shim], "args": args}}
    return doc

"""A pod template read as what to run locally: the "main" container's command, env and resources,
after the shared pod mutators. Used by the process runner and both container runners."""
from __future__ import annotations

from typing import Any, Sequence

from ...errors import ConfigError
from .. import pod as podlib


def main_container(template: dict, mutators: Sequence = ()) -> tuple[dict, dict]:
    """(template with the mutators applied, its "main" container)."""
    t = podlib.apply(template or {}, mutators)
    return t, podlib.find_container(t, podlib.MAIN)


def argv(container: dict) -> list[str]:
    return list(container.get("command") or []) + list(container.get("args") or [])


def env(container: dict) -> dict[str, str]:
    """Plain env values; a Secret/ConfigMap reference cannot be read here, so it is an error."""
    out = {}
    for e in container.get("env", []) or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            raise ConfigError(f"env {e['name']} comes from a Secret/ConfigMap, which a local run cannot read",
                              hint="pass the value with --env K=V for local runs")
    return out


def cpu_to_nano(v: Any) -> int:
    v = str(v)
    return int(float(v[:-1]) * 1e6) if v.endswith("m") else int(float(v) * 1e9)


def mem_to_bytes(v: Any) -> int:
    v = str(v)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}
    for u in sorted(units, key=len, reverse=True):
        if v.endswith(u):
            return int(float(v[: -len(u)]) * units[u])
    return int(float(v))


def engine_limits(container: dict) -> dict[str, int]:
    """The container's resources as engine create() arguments (the larger of request and limit)."""
    res = container.get("resources", {}) or {}
    limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    kw: dict[str, int] = {}
    if limits.get("cpu"):
        kw["nano_cpus"] = cpu_to_nano(limits["cpu"])
    if limits.get("memory"):
        kw["mem_limit"] = mem_to_bytes(limits["memory"])
    return kw


def create_args(container: dict, env_values: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for engine.containers.start(create=...)."""
    return {"entrypoint": list(container.get("command") or []) or None,
            "command": list(container.get("args") or []) or None,
            "working_dir": container.get("workingDir"), "environment": env_values, **engine_limits(container)}


def local_manifest(kind: str, name: str, labels: dict, spec: dict, annotations: dict | None = None) -> dict:
    """What a local run would do, shaped like a manifest (for dry runs)."""
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "fairing.dev/v1", "kind": kind, "metadata": meta, "spec": spec}

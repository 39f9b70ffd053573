"""Composable pod-spec mutators, shared by every deployer (and the CLI's --cpu/--memory/--gpus).

Each option is a function returning a `Mutator`: a callable taking a PodTemplateSpec dict
(`{"metadata": ..., "spec": ...}`) and returning a new one (the input is never modified):

    mutators = [pod.cpu("2"), pod.memory("8Gi"), pod.gpu(1), pod.env({"EPOCHS": "3"}),
                pod.env_from_secret("wandb", {"WANDB_API_KEY": "key"}), pod.pvc("data", "/data"),
                pod.toleration("nvidia.com/gpu"), pod.image_pull_secret()]

Every mutator finds its container by name ("main" unless told otherwise), never containers[0], so
sidecars are left alone. Bad values (a quantity like "4GB", a relative mount path) raise ConfigError
before anything reaches the cluster. Secrets are only ever *referenced* (secretKeyRef, envFrom,
volumes, imagePullSecrets): no secret value is put in env values or args.
"""
from __future__ import annotations

import base64
import copy
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping

from ..errors import ConfigError
from .labels import MANAGED

Mutator = Callable[[dict], dict]
MAIN = "main"

GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "gpu.intel.com/i915"}

_QUANTITY = re.compile(r"^(?P<num>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
           "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
           "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
           "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_DNS1123_SUB = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


# --- helpers ---------------------------------------------------------------------------------------
def quantity(value: Any, what: str = "quantity") -> str:
    """Validate a Kubernetes quantity ("500m", "2", "4Gi", 0.5) and return it as a string."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"invalid {what} {value!r}", hint="use a number or a quantity such as '500m', '2', '4Gi'")
    text = format(value, "f").rstrip("0").rstrip(".") if isinstance(value, float) else str(value).strip()
    m = _QUANTITY.match(text)
    if not m:
        hint = "use a quantity such as '500m', '2', '512Mi', '4Gi'"
        guess = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGTPE])i?B$", text, re.I)
        if guess:
            hint = f"Kubernetes writes bytes without 'B': use '{guess.group(1)}{guess.group(2).upper()}i' " \
                   f"(binary) or '{guess.group(1)}{guess.group(2).upper()}' (decimal)"
        raise ConfigError(f"invalid {what} {value!r}", hint=hint)
    if m.group("num").startswith("-"):
        raise ConfigError(f"invalid {what} {value!r}: must not be negative", hint="use a positive quantity")
    return text


def quantity_value(text: str) -> Decimal:
    m = _QUANTITY.match(text)
    suffix = m.group("suffix") or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(m.group("num") + suffix)
        return Decimal(m.group("num")) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError):  # pragma: no cover - the regex admits only known suffixes
        raise ConfigError(f"invalid quantity {text!r}") from None


def find_container(pod: dict, name: str = MAIN) -> dict:
    """The container called `name` in a PodTemplateSpec (containers, then initContainers)."""
    spec = pod.setdefault("spec", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if c.get("name") == name:
            return c
    names = [c.get("name") for c in spec.get("containers") or []]
    raise ConfigError(f"no container named {name!r} in the pod template (containers: {', '.join(map(str, names)) or 'none'})",
                      hint=f"pass container=... to the option, or name the workload container {MAIN!r}")


def _mutator(fn: Callable[[dict], None], description: str) -> Mutator:
    """Wrap an in-place edit as a pure mutator with a readable repr."""
    def mutate(pod: dict) -> dict:
        out = copy.deepcopy(dict(pod or {}))
        fn(out)
        return out

    mutate.__name__ = mutate.__qualname__ = description
    mutate.description = description
    return mutate


def check(mutators: Iterable[Mutator]) -> tuple[Mutator, ...]:
    """The mutators as a tuple, each one callable (deployers check at construction, before any work)."""
    out = tuple(mutators or ())
    for m in out:
        if not callable(m):
            raise ConfigError(f"pod option {m!r} is not callable", hint="use the functions in fairing.deployers.pod")
    return out


def apply(pod: Mapping, mutators: Iterable[Mutator]) -> dict:
    out = copy.deepcopy(dict(pod))
    for m in check(mutators):
        res = m(out)
        if not isinstance(res, dict):
            raise ConfigError(f"pod option {getattr(m, '__name__', m)!r} returned {type(res).__name__}, not a pod template",
                              hint="a mutator takes the pod template dict and returns the new one")
        out = res
    return out


# --- resources -------------------------------------------------------------------------------------
def _resources(name: str, request: Any, limit: Any, container: str, *, what: str) -> Mutator:
    req = quantity(request, f"{what} request") if request is not None else None
    lim = quantity(limit, f"{what} limit") if limit is not None else None
    if req is not None and lim is not None and quantity_value(lim) < quantity_value(req):
        raise ConfigError(f"{what} limit {lim} is below the request {req}",
                          hint="a limit must be at least the request")

    def edit(pod: dict) -> None:
        r = find_container(pod, container).setdefault("resources", {})
        if req is not None:
            r.setdefault("requests", {})[name] = req
        if lim is not None:
            r.setdefault("limits", {})[name] = lim

    return _mutator(edit, f"{what}({req or ''}{', limit=' + lim if lim else ''})")


def cpu(request: Any, limit: Any = None, *, container: str = MAIN) -> Mutator:
    """CPU request (and optional limit): cpu("500m"), cpu(2, limit=4)."""
    return _resources("cpu", request, limit, container, what="cpu")


def memory(request: Any, limit: Any = "same", *, container: str = MAIN) -> Mutator:
    """Memory request; the limit defaults to the request (memory over the limit is OOMKilled, so
    a pod never silently depends on memory the node may not have)."""
    return _resources("memory", request, request if limit == "same" else limit, container, what="memory")


def gpu(n: int = 1, vendor: str = "nvidia", *, container: str = MAIN) -> Mutator:
    """GPU limit: gpu(1), gpu(2, vendor="amd"), gpu(1, vendor="example.com/tpu")."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"invalid GPU count {n!r}", hint="use a whole number, e.g. gpu(1)")
    resource = GPU_RESOURCES.get(vendor, vendor if "/" in vendor else None)
    if resource is None:
        raise ConfigError(f"unknown GPU vendor {vendor!r}",
                          hint=f"use one of {', '.join(GPU_RESOURCES)} or a resource name like 'vendor.com/gpu'")

    def edit(pod: dict) -> None:
        r = find_container(pod, container).setdefault("resources", {})
        # Extended resources are set as limits; the request defaults to the limit.
        if n:
            r.setdefault("limits", {})[resource] = str(n)
        else:
            for k in ("limits", "requests"):
                (r.get(k) or {}).pop(resource, None)

    return _mutator(edit, f"gpu({n}, {resource})")


def strip_gpus(pod: dict, container: str | None = None) -> dict:
    """Remove every GPU request/limit (for replicas that must not hold GPUs, e.g. TF parameter servers)."""
    out = copy.deepcopy(pod)
    for c in (out.get("spec") or {}).get("containers") or []:
        if container and c.get("name") != container:
            continue
        for k in ("limits", "requests"):
            res = (c.get("resources") or {}).get(k) or {}
            for name in [n for n in res if n.endswith("/gpu") or n in GPU_RESOURCES.values()]:
                del res[name]
    return out


# --- environment -----------------------------------------------------------------------------------
def _env_name(name: str) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ConfigError(f"invalid environment variable name {name!r}",
                          hint="use letters, digits, '_', '-' or '.', not starting with a digit")
    return name


def _ref_name(name: str, what: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUB.match(name):
        raise ConfigError(f"invalid {what} name {name!r}", hint="use lowercase letters, digits, '-' and '.'")
    return name


def _set_env(c: dict, name: str, entry: dict) -> None:
    env = c.setdefault("env", [])
    for i, e in enumerate(env):
        if e.get("name") == name:
            env[i] = entry
            return
    env.append(entry)


def env(values: Mapping[str, Any] | None = None, *, container: str = MAIN, **kw: Any) -> Mutator:
    """Plain environment variables: env({"EPOCHS": 3}) or env(EPOCHS=3). For secrets use
    env_from_secret, which references the Secret instead of copying its value into the spec."""
    items = {**(values or {}), **kw}
    entries = []
    for k, v in items.items():
        _env_name(k)
        if v is None or isinstance(v, (dict, list, tuple, set)):
            raise ConfigError(f"environment variable {k} has a {type(v).__name__} value",
                              hint="values must be strings or numbers")
        entries.append({"name": k, "value": str(v).lower() if isinstance(v, bool) else str(v)})

    def edit(pod: dict) -> None:
        c = find_container(pod, container)
        for e in entries:
            _set_env(c, e["name"], e)

    return _mutator(edit, f"env({', '.join(items)})")


def _env_from(kind: str, ref_key: str, from_key: str, name: str, keys, prefix, optional, container) -> Mutator:
    _ref_name(name, kind)
    if keys is None:
        source = {from_key: {"name": name, **({"optional": True} if optional else {})}}
        if prefix:
            source["prefix"] = prefix

        def edit(pod: dict) -> None:
            c = find_container(pod, container)
            c.setdefault("envFrom", [])
            if source not in c["envFrom"]:
                c["envFrom"].append(source)
        return _mutator(edit, f"env_from_{kind.lower()}({name})")
    mapping = {k: k for k in keys} if not isinstance(keys, Mapping) else dict(keys)
    entries = []
    for env_name, key in mapping.items():
        _env_name((prefix or "") + env_name)
        entries.append({"name": (prefix or "") + env_name,
                        "valueFrom": {ref_key: {"name": name, "key": key, **({"optional": True} if optional else {})}}})

    def edit_keys(pod: dict) -> None:
        c = find_container(pod, container)
        for e in entries:
            _set_env(c, e["name"], e)
    return _mutator(edit_keys, f"env_from_{kind.lower()}({name}: {', '.join(mapping)})")


def env_from_secret(secret: str, keys: Mapping[str, str] | Iterable[str] | None = None, *, prefix: str | None = None,
                    optional: bool = False, container: str = MAIN) -> Mutator:
    """Environment from a Secret, by reference: all keys (envFrom), a list of keys, or
    {ENV_NAME: secret_key}. The value never appears in the manifest."""
    return _env_from("Secret", "secretKeyRef", "secretRef", secret, keys, prefix, optional, container)


def env_from_configmap(configmap: str, keys: Mapping[str, str] | Iterable[str] | None = None, *,
                       prefix: str | None = None, optional: bool = False, container: str = MAIN) -> Mutator:
    return _env_from("ConfigMap", "configMapKeyRef", "configMapRef", configmap, keys, prefix, optional, container)


# --- volumes ---------------------------------------------------------------------------------------
def _volume_name(kind: str, ref: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{ref}".lower()).strip("-")[:63].strip("-")


def volume(volume_source: Mapping, mount_path: str, *, name: str, read_only: bool = False,
           sub_path: str | None = None, container: str = MAIN) -> Mutator:
    """Any volume source ({"persistentVolumeClaim": {...}}, {"nfs": {...}}, ...) mounted at mount_path."""
    if not isinstance(mount_path, str) or not mount_path.startswith("/"):
        raise ConfigError(f"mount path {mount_path!r} must be absolute", hint="e.g. '/data'")
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name or "") or len(name) > 63:
        raise ConfigError(f"invalid volume name {name!r}", hint="use lowercase letters, digits and '-'")
    vol = {"name": name, **copy.deepcopy(dict(volume_source))}
    mount = {"name": name, "mountPath": mount_path}
    if read_only:
        mount["readOnly"] = True
    if sub_path:
        mount["subPath"] = sub_path

    def edit(pod: dict) -> None:
        spec = pod.setdefault("spec", {})
        c = find_container(pod, container)
        for m in c.get("volumeMounts") or []:
            if m.get("mountPath") == mount_path and m.get("name") != name:
                raise ConfigError(f"{mount_path} is already a mount point of container {container!r} "
                                  f"(volume {m.get('name')!r})", hint="mount the volume somewhere else")
        vols = spec.setdefault("volumes", [])
        existing = next((v for v in vols if v.get("name") == name), None)
        if existing is None:
            vols.append(vol)
        elif existing != vol:
            raise ConfigError(f"two different volumes are both named {name!r}", hint="pass name=... to one of them")
        mounts = c.setdefault("volumeMounts", [])
        if mount not in mounts:
            mounts.append(mount)

    return _mutator(edit, f"volume({name} at {mount_path})")


def pvc(claim: str, mount_path: str, *, read_only: bool = False, sub_path: str | None = None,
        name: str | None = None, container: str = MAIN) -> Mutator:
    """Mount a PersistentVolumeClaim."""
    _ref_name(claim, "PersistentVolumeClaim")
    src = {"persistentVolumeClaim": {"claimName": claim, **({"readOnly": True} if read_only else {})}}
    return volume(src, mount_path, name=name or _volume_name("pvc", claim), read_only=read_only,
                  sub_path=sub_path, container=container)


def secret_volume(secret: str, mount_path: str, *, items: Mapping[str, str] | None = None,
                  default_mode: int | None = 0o400, name: str | None = None, container: str = MAIN) -> Mutator:
    """Mount a Secret's keys as files (read-only, mode 0400 by default)."""
    _ref_name(secret, "Secret")
    src: dict = {"secretName": secret}
    if items:
        src["items"] = [{"key": k, "path": p} for k, p in items.items()]
    if default_mode is not None:
        src["defaultMode"] = default_mode
    return volume({"secret": src}, mount_path, name=name or _volume_name("secret", secret), read_only=True,
                  container=container)


def configmap_volume(configmap: str, mount_path: str, *, items: Mapping[str, str] | None = None,
                     name: str | None = None, container: str = MAIN) -> Mutator:
    _ref_name(configmap, "ConfigMap")
    src: dict = {"name": configmap}
    if items:
        src["items"] = [{"key": k, "path": p} for k, p in items.items()]
    return volume({"configMap": src}, mount_path, name=name or _volume_name("cm", configmap), read_only=True,
                  container=container)


def empty_dir(mount_path: str, *, size_limit: Any = None, memory: bool = False, name: str | None = None,
              container: str = MAIN) -> Mutator:
    """Scratch space; memory=True makes it a tmpfs (counts against the memory limit)."""
    src: dict = {}
    if size_limit is not None:
        src["sizeLimit"] = quantity(size_limit, "emptyDir size limit")
    if memory:
        src["medium"] = "Memory"
    return volume({"emptyDir": src}, mount_path,
                  name=name or _volume_name("scratch", mount_path.strip("/").replace("/", "-") or "root"),
                  container=container)


# --- scheduling and identity -----------------------------------------------------------------------
def node_selector(labels: Mapping[str, str] | None = None, **kw: str) -> Mutator:
    sel = {**(labels or {}), **kw}
    for k, v in sel.items():
        if not _LABEL_NAME.match(k) or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", str(v)):
            raise ConfigError(f"invalid node selector {k}={v}", hint="use label keys/values like 'gpu-type=a100'")

    def edit(pod: dict) -> None:
        pod.setdefault("spec", {}).setdefault("nodeSelector", {}).update({k: str(v) for k, v in sel.items()})

    return _mutator(edit, f"node_selector({', '.join(f'{k}={v}' for k, v in sel.items())})")


def toleration(key: str | None, value: str | None = None, *, effect: str | None = "NoSchedule",
               operator: str | None = None, seconds: int | None = None) -> Mutator:
    """Tolerate a taint: toleration("nvidia.com/gpu") tolerates it with any value."""
    if effect not in (None, "NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ConfigError(f"invalid taint effect {effect!r}", hint="use NoSchedule, PreferNoSchedule or NoExecute")
    op = operator or ("Equal" if value is not None else "Exists")
    if op not in ("Equal", "Exists") or (op == "Exists" and value is not None):
        raise ConfigError(f"invalid toleration operator {op!r} for value {value!r}",
                          hint="Exists takes no value; Equal needs one")
    t: dict = {"operator": op}
    if key is not None:
        t["key"] = key
    if value is not None:
        t["value"] = value
    if effect:
        t["effect"] = effect
    if seconds is not None:
        t["tolerationSeconds"] = int(seconds)

    def edit(pod: dict) -> None:
        tols = pod.setdefault("spec", {}).setdefault("tolerations", [])
        if t not in tols:
            tols.append(t)

    return _mutator(edit, f"toleration({key}{'=' + value if value else ''})")


def tolerations(items: Iterable[Mapping]) -> Mutator:
    items = [dict(t) for t in items]

    def edit(pod: dict) -> None:
        tols = pod.setdefault("spec", {}).setdefault("tolerations", [])
        tols.extend(t for t in items if t not in tols)

    return _mutator(edit, "tolerations(...)")


def service_account(name: str) -> Mutator:
    _ref_name(name, "ServiceAccount")

    def edit(pod: dict) -> None:
        pod.setdefault("spec", {})["serviceAccountName"] = name

    return _mutator(edit, f"service_account({name})")


def labels(values: Mapping[str, str]) -> Mutator:
    def edit(pod: dict) -> None:
        pod.setdefault("metadata", {}).setdefault("labels", {}).update(values)
    return _mutator(edit, "labels(...)")


def annotations(values: Mapping[str, str]) -> Mutator:
    def edit(pod: dict) -> None:
        pod.setdefault("metadata", {}).setdefault("annotations", {}).update(values)
    return _mutator(edit, "annotations(...)")


# --- image pull secrets ----------------------------------------------------------------------------
def pull_secret_name(registry: str) -> str:
    return ("fairing-pull-" + re.sub(r"[^a-z0-9]+", "-", registry.lower()).strip("-"))[:253].strip("-")


def _image_registry(pod: dict, container: str) -> tuple[str, str]:
    from ..oci.reference import parse

    ref = parse(find_container(pod, container).get("image", ""))
    return ref.registry, ref.repository


def dockerconfigjson(registry: str, repository: str | None = None) -> bytes:
    """A .dockerconfigjson document for `registry`, from the local login (docker/podman config,
    credential helpers). Raises ConfigError when there is none."""
    from ..oci.auth import config_json, find_credentials

    found = find_credentials(registry, repository)
    creds = found.credentials
    if creds is None:
        notes = f" ({'; '.join(found.notes)})" if found.notes else ""
        raise ConfigError(f"no local credentials for registry {registry} to make an image pull secret from{notes}",
                          hint=f"log in first (docker login {registry} / podman login {registry}), "
                               "or pass the name of an existing pull secret: image_pull_secret('NAME')")
    return config_json(registry, creds)


def image_pull_secret(name: str | None = None, *, registry: str | None = None, container: str = MAIN) -> Mutator:
    """Let the pod pull from a private registry.

    image_pull_secret("regcred") references an existing Secret. image_pull_secret() makes one at
    deploy time: a kubernetes.io/dockerconfigjson Secret named fairing-pull-<registry>, built from your
    local registry login for the image's registry (or `registry=`), created or updated in the target
    namespace. The credentials go only into that Secret: never into the pod spec, env or args, and
    never into rendered/printed manifests."""
    if name is not None:
        _ref_name(name, "Secret")

    def secret_name(pod: dict) -> str:
        return name or pull_secret_name(registry or _image_registry(pod, container)[0])

    def edit(pod: dict) -> None:
        ref = {"name": secret_name(pod)}
        refs = pod.setdefault("spec", {}).setdefault("imagePullSecrets", [])
        if ref not in refs:
            refs.append(ref)

    m = _mutator(edit, f"image_pull_secret({name or registry or 'from local login'})")

    def prepare(kube, namespace: str, pod: dict) -> None:
        """Called by the deployer before creating the workload (never during render/dry-run)."""
        if name is not None:
            return  # an existing Secret: the user manages it
        reg, repo = (registry, None) if registry else _image_registry(pod, container)
        data = dockerconfigjson(reg, repo)
        kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                    "metadata": {"name": secret_name(pod), "namespace": namespace,
                                 "labels": dict(MANAGED)},
                    "data": {".dockerconfigjson": base64.b64encode(data).decode()}}, namespace)

    m.prepare = prepare
    return m


__all__ = ["Mutator", "apply", "check", "cpu", "memory", "gpu", "env", "env_from_secret", "env_from_configmap", "volume",
           "pvc", "secret_volume", "configmap_volume", "empty_dir", "node_selector", "toleration", "tolerations",
           "service_account", "image_pull_secret", "labels", "annotations", "find_container", "quantity",
           "strip_gpus", "dockerconfigjson", "pull_secret_name"]


def from_settings(s: Mapping[str, Any]) -> list[Mutator]:
    """Pod options from settings (--cpu/--memory/--gpus/--env/--node-selector/--toleration) as
    the mutators above, in that order."""
    out = []
    if s.get("cpu"):
        out.append(cpu(s["cpu"]))
    if s.get("memory"):
        out.append(memory(s["memory"]))
    if s.get("gpus"):
        out.append(gpu(s["gpus"]))
    if s.get("env"):
        out.append(env(dict(s["env"])))
    if s.get("node_selector"):
        out.append(node_selector(dict(s["node_selector"])))
    for item in s.get("tolerations") or ():
        taint, _, effect = item.partition(":")
        key, eq, value = taint.partition("=")
        out.append(toleration(key.strip(), value.strip() if eq else None, effect=effect or "NoSchedule"))
    return out

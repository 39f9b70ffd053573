"""Finding workloads fairing started, for `fair status/logs/delete/list`: on the cluster (objects
labelled app.kubernetes.io/managed-by=fairing) or in the local container engine."""
from __future__ import annotations

from typing import Any, Mapping

from . import plugins
from .config import cluster_configured
from .deployers.base import RUN_ID as RUN_ID_LABEL  # set by the pipeline from the run record (fairing.runs)
from .errors import ConfigError, DeployError

LABEL = "app.kubernetes.io/managed-by=fairing"
# (apiVersion, kind, deployer name): the kinds fairing creates, in the order they are searched.
KINDS = (
    ("batch/v1", "Job", "job"),
    ("batch/v1", "CronJob", "cronjob"),
    ("apps/v1", "Deployment", "serving"),
    ("kubeflow.org/v1", "TFJob", "tfjob"),
    ("kubeflow.org/v1", "PyTorchJob", "pytorchjob"),
    ("serving.kserve.io/v1beta1", "InferenceService", "inferenceservice"),
)


def where(settings: Mapping[str, Any]) -> str:
    """"local" or "cluster": where status/logs/delete/list look."""
    d = settings.get("deployer")
    if d == "local":
        return "local"
    if d or cluster_configured(settings):
        return "cluster"
    return "local"


def _local(settings: Mapping[str, Any]):
    from .deployers.local import LocalDeployer, resolve_mode

    mode, url = resolve_mode("container", settings.get("docker_host"))
    return LocalDeployer(mode="container", docker_host=url)


def _kube(settings: Mapping[str, Any]):
    from .kube.client import Kube

    return Kube(settings.get("kubeconfig"), settings.get("context"), settings.get("namespace"))


def _deployer(name: str, kube, settings: Mapping[str, Any], obj: dict | None = None):
    cls = plugins.load("deployer", name)
    kw: dict[str, Any] = {}
    if name == "cronjob":  # its constructor insists on a schedule; the stored object has one
        kw["schedule"] = ((obj or {}).get("spec") or {}).get("schedule") or "0 0 * * *"
    return cls(kube.namespace, kubeconfig=settings.get("kubeconfig"), context=settings.get("context"), **kw)


def list_workloads(settings: Mapping[str, Any]) -> list[dict]:
    if where(settings) == "local":
        try:
            return _local(settings).list()
        except DeployError:
            return []  # no engine: local process runs never outlive the command that ran them
    from .kube.client import CRDNotInstalled

    kube = _kube(settings)
    out = []
    for api_version, kind, deployer in KINDS:
        try:
            items = kube.list(api_version, kind, label_selector=LABEL).get("items", [])
        except CRDNotInstalled:
            continue
        for obj in items:
            meta = obj.get("metadata", {})
            out.append({"name": meta.get("name"), "kind": kind, "deployer": deployer,
                        "namespace": meta.get("namespace"), "status": summarize(kind, obj),
                        "created": meta.get("creationTimestamp"),
                        "run_id": (meta.get("labels") or {}).get(RUN_ID_LABEL)})
    return out


def summarize(kind: str, obj: dict) -> str:
    """A one-word status from an object's .status, the same words handles use."""
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        return "Suspended" if spec.get("suspend") else "Scheduled"
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    if kind == "Deployment":
        return "Ready" if conds.get("Available") == "True" else "Pending"
    if kind == "InferenceService":
        return "Ready" if conds.get("Ready") == "True" else "Pending"
    if conds.get("Complete") == "True" or conds.get("Succeeded") == "True":
        return "Succeeded"
    if conds.get("Failed") == "True":
        return "Failed"
    if st.get("active") or conds.get("Running") == "True":
        return "Running"
    return "Pending"


def attach(name: str, settings: Mapping[str, Any]):
    """A handle (status/wait/logs/result/delete) for the workload called `name`."""
    if where(settings) == "local":
        return _local(settings).attach(name)
    kube = _kube(settings)
    wanted = settings.get("deployer")
    from .kube.client import CRDNotInstalled

    for api_version, kind, deployer in KINDS:
        if wanted and deployer != wanted:
            continue
        try:
            obj = kube.get(api_version, kind, name)
        except CRDNotInstalled:
            continue
        if obj is None:
            continue
        labels = obj.get("metadata", {}).get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != "fairing":
            raise DeployError(f"{kind} {name} in namespace {kube.namespace} was not created by fairing",
                              hint="fairing only manages what it created; `fair list` shows those")
        d = _deployer(deployer, kube, settings, obj)
        if not hasattr(d, "attach"):
            raise ConfigError(f"the {deployer} deployer cannot re-attach to {name}",
                              hint="report this: deployers need an attach(name) method")
        return d.attach(name)
    raise DeployError(f"no workload named {name!r} in namespace {kube.namespace}",
                      hint="`fair list` shows the workloads fairing created; pass --namespace if it is elsewhere")


def run_id_of(handle: Any) -> str | None:
    """The run id a workload was labelled with (see fairing.runs), or None."""
    rid = getattr(handle, "run_id", None)
    if isinstance(rid, str) and rid:
        return rid
    labels = getattr(getattr(handle, "container", None), "labels", None)
    if isinstance(labels, dict):
        return labels.get(RUN_ID_LABEL)
    try:
        manifests = handle.manifests()
    except Exception:  # noqa: BLE001 - a handle that cannot show its objects has no run id to show
        return None
    for m in manifests or []:
        rid = ((m.get("metadata") or {}).get("labels") or {}).get(RUN_ID_LABEL)
        if rid:
            return rid
    return None

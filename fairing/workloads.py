"""Finding workloads fairing started, for `fair status/logs/delete/list`: on the cluster (objects
labelled app.kubernetes.io/managed-by=fairing) or in the local container engine.

Which kinds to look for and what an object's state is are the deployers' to say (each cluster
deployer's api_version/kind and its state()); nothing here re-derives them."""
from __future__ import annotations

from typing import Any, Mapping

from . import stages
from .deployers import queue
from .deployers import labels as L
from .deployers.base import selector_matches
from .errors import ConfigError, DeployError
from .pipeline import cluster_configured


def where(settings: Mapping[str, Any]) -> str:
    """"local" or "cluster": where status/logs/delete/list look."""
    d = settings.get("deployer")
    if d:
        return stages.stage("deployer", d).where
    return "cluster" if cluster_configured(settings) else "local"


def _local(settings: Mapping[str, Any]):
    from .deployers.local import LocalDeployer, resolve_mode

    _, url = resolve_mode("container", settings.get("docker_host"))
    return LocalDeployer(mode="container", docker_host=url)


def _kube(settings: Mapping[str, Any]):
    from .kube.client import Kube

    return Kube(settings.get("kubeconfig"), settings.get("context"), settings.get("namespace"))


def cluster_deployers() -> list[tuple[str, type]]:
    """(name, class) of every cluster deployer, in the registry's order."""
    return [(name, stages.load("deployer", name)) for name in stages.deployers(where="cluster")]


def _deployer(name: str, cls: type, kube, settings: Mapping[str, Any], obj: dict | None = None):
    kw: dict[str, Any] = {}
    if name == "cronjob":  # its constructor insists on a schedule; the stored object has one
        kw["schedule"] = ((obj or {}).get("spec") or {}).get("schedule") or "0 0 * * *"
    return cls(kube.namespace, kubeconfig=settings.get("kubeconfig"), context=settings.get("context"), kube=kube, **kw)


def list_workloads(settings: Mapping[str, Any]) -> list[dict]:
    if where(settings) == "local":
        try:
            return _local(settings).list()
        except DeployError:
            return []  # no engine: local process runs never outlive the command that ran them
    from .kube.client import CRDNotInstalled, Forbidden

    kube = _kube(settings)
    out, hidden = [], Hidden()
    for name, cls in cluster_deployers():
        try:
            items = kube.list(cls.api_version, cls.kind, label_selector=cls.list_selector).get("items", [])
        except CRDNotInstalled:
            continue
        except Forbidden as e:
            hidden.add(cls.kind, e)
            continue
        hidden.searched = True
        for obj in items:
            meta = obj.get("metadata", {})
            out.append({"name": meta.get("name"), "kind": cls.kind, "deployer": name,
                        "namespace": meta.get("namespace"), "status": queue.state(obj, cls.state(obj), cls.queue_suspend),
                        "created": meta.get("creationTimestamp"),
                        "run_id": (meta.get("labels") or {}).get(L.RUN_ID)})
    hidden.settle(kube.namespace, quiet=False)
    return out


class Hidden:
    """The kinds a look through every kind could not search because the user's role does not
    cover them (a least-privilege Role without TrainJobs once Trainer's CRDs are served): they are
    skipped, not fatal, and said once."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.first: Exception | None = None
        self.searched = False  # some kind could be searched

    def add(self, kind: str, exc: Exception) -> None:
        self.kinds.append(kind + "s")
        self.first = self.first or exc

    def said(self) -> str:
        return f"{', '.join(self.kinds)} could not be searched (forbidden)"

    def settle(self, namespace: str, *, quiet: bool = True) -> None:
        """No kind searchable: the first Forbidden (with its RBAC hint) is the answer. Some: one
        note, always (`quiet=False`: an incomplete list) or only with --debug."""
        if not self.kinds:
            return
        if not self.searched:
            raise self.first
        from .messages import debugging, notice

        if not quiet or debugging():
            notice(f"{self.said()} in namespace {namespace}: skipped")


def attach(name: str, settings: Mapping[str, Any]):
    """A handle (status/wait/logs/result/delete) for the workload called `name`."""
    if where(settings) == "local":
        try:
            local = _local(settings)
        except DeployError:
            from .checks import engine_search, nothing_configured

            raise nothing_configured(name, settings, engine_search(settings.get("docker_host"))) from None
        return local.attach(name)
    kube = _kube(settings)
    wanted = settings.get("deployer")
    wanted = stages.canonical("deployer", wanted) if wanted else None
    from .kube.client import CRDNotInstalled, Forbidden

    hidden = Hidden()
    for deployer, cls in cluster_deployers():
        if wanted and deployer != wanted:
            continue
        try:
            obj = kube.get(cls.api_version, cls.kind, name)
        except CRDNotInstalled:
            continue
        except Forbidden as e:
            if wanted:
                raise  # the one kind asked for: its RBAC hint is the answer
            hidden.add(cls.kind, e)
            continue
        hidden.searched = True
        if obj is None:
            continue
        if not L.is_managed(obj.get("metadata", {}).get("labels")):
            raise DeployError(f"{cls.kind} {name} in namespace {kube.namespace} was not created by fairing",
                              hint="fairing only manages what it created; `fair list` shows those")
        if not selector_matches(obj["metadata"].get("labels"), cls.list_selector):
            continue  # another deployer's object of the same kind (a Job's pod is not a bare Pod)
        d = _deployer(deployer, cls, kube, settings, obj)
        if not hasattr(d, "attach"):
            raise ConfigError(f"the {deployer} deployer cannot re-attach to {name}",
                              hint="report this: deployers need an attach(name) method")
        hidden.settle(kube.namespace)
        return d.attach(name)
    hidden.settle(kube.namespace)
    if hidden.kinds:
        raise DeployError(f"no workload named {name!r} in namespace {kube.namespace} among the kinds you may "
                          f"read; {hidden.said()}",
                          hint=f"if it is one of those, ask for 'get' on them (or pass --deployer KIND); "
                               "`fair list` shows what you may see")
    raise DeployError(f"no workload named {name!r} in namespace {kube.namespace}",
                      hint="`fair list` shows the workloads fairing created; pass --namespace if it is elsewhere")


def run_id_of(handle: Any) -> str | None:
    """The run id a workload was labelled with (see fairing.runs), or None."""
    rid = getattr(handle, "run_id", None)
    if isinstance(rid, str) and rid:
        return rid
    labels = getattr(getattr(handle, "container", None), "labels", None)
    if isinstance(labels, dict):
        return labels.get(L.RUN_ID)
    try:
        manifests = handle.manifests()
    except Exception:  # noqa: BLE001 - a handle that cannot show its objects has no run id to show
        return None
    for m in manifests or []:
        rid = ((m.get("metadata") or {}).get("labels") or {}).get(L.RUN_ID)
        if rid:
            return rid
    return None

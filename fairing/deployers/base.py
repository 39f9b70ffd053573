"""The deployer interface and what every Kubernetes deployer shares.

    d = JobDeployer(namespace="team", mutators=[pod.gpu(1)], backoff_limit=2)
    d.render(image)          # manifests as dicts, no API calls (dry-run / output="yaml")
    h = d.deploy(image)      # creates the workload, returns a handle
    h.status(); h.wait(timeout=600); h.logs(follow=True); h.result(); h.delete()
    d.attach("train-ab12c")  # a handle for something deployed earlier

A subclass says which object it makes (`api_version`, `kind`), builds the manifest from the pod
template (`build`), reads its state (`state`) and names the workload container in its pods.
"""
from __future__ import annotations

import copy
import re
import uuid
from typing import Any, Iterable, Iterator, Mapping

from ..context import BuiltImage
from ..errors import ConfigError, DeployError
from . import pod as podlib

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_ID = "fairing.dev/run-id"
DEPLOYER = "fairing.dev/deployer"
IMAGE_ANNOTATION = "fairing.dev/image"
FIELD_MANAGER = "fairing"


class Deployer:
    """What the pipeline calls. `deploy` returns a Handle (fairing.context.Handle)."""

    def deploy(self, image: BuiltImage):  # pragma: no cover - interface
        raise NotImplementedError

    def render(self, image: BuiltImage) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError


def _nonneg_int(value, what: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"invalid {what} {value!r}", hint=f"use a whole number >= {minimum}")
    return value


def default_pod_template(image: BuiltImage) -> dict:
    """The pod template to start from: the builder's (container "main"), or a bare one."""
    tpl = copy.deepcopy(dict(image.pod_template or {}))
    if not tpl:
        tpl = {"metadata": {}, "spec": {"containers": [{"name": podlib.MAIN, "image": image.ref}]}}
    tpl.setdefault("metadata", {})
    spec = tpl.setdefault("spec", {})
    main = podlib.find_container(tpl, podlib.MAIN)
    main["image"] = image.ref  # always the digest-pinned reference
    spec.setdefault("restartPolicy", "Never")
    return tpl


def _check_pinned(image: BuiltImage) -> None:
    if not isinstance(image, BuiltImage):
        raise ConfigError(f"deploy() needs a BuiltImage, got {type(image).__name__}",
                          hint="build first: builder.build(context, target) returns one")
    if "@sha256:" not in image.ref and "@sha512:" not in image.ref:
        raise ConfigError(f"image {image.ref!r} is not pinned by digest",
                          hint="deploy the BuiltImage a builder returned (registry/repo@sha256:...)")
    if image.ref.startswith("oci:"):
        raise ConfigError(f"image {image.ref!r} is in a local OCI layout; a cluster cannot pull it",
                          hint="build with a registry target (--registry HOST[:PORT]/PATH)")


def _namespace_offline(kubeconfig, context) -> str | None:
    """The namespace from the kubeconfig context, without talking to any server (for render)."""
    try:
        from ..kube.client import load_configuration

        return load_configuration(kubeconfig, context)[1] or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig: render without a namespace
        return None


class KubeAccess:
    """The API client and namespace of a cluster deployer (training or serving), made on first use
    so that rendering manifests (dry run) needs no cluster. Needs kubeconfig, context, namespace, _kube."""

    @property
    def kube(self):
        if self._kube is None:
            from ..kube.client import Kube

            self._kube = Kube(self.kubeconfig, self.context, self.namespace)
        return self._kube

    def target_namespace(self, *, offline: bool = False) -> str | None:
        if self.namespace:
            return self.namespace
        if offline and self._kube is None:
            return _namespace_offline(self.kubeconfig, self.context)
        return self.kube.namespace


class KubeDeployer(KubeAccess, Deployer):
    """Common options for the cluster deployers (see the module docstring)."""

    api_version = "v1"
    kind = "Pod"
    deployer_name = "kube"
    container_name = podlib.MAIN  # the workload container's name in the final pods
    name_max = 63
    name_dns1035 = False
    kind_options: tuple[str, ...] = ()

    def __init__(self, namespace: str | None = None, *, kubeconfig=None, context: str | None = None,
                 name: str | None = None, mutators: Iterable = (), labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None, cleanup: bool = False, dry_run: bool = False,
                 kube=None, **kind_specific: Any):
        from ..kube.client import validate_name

        unknown = sorted(set(kind_specific) - set(self.kind_options))
        if unknown:
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} for the {self.deployer_name} deployer: "
                              f"{', '.join(unknown)}",
                              hint=f"options: {', '.join(sorted(self.kind_options)) or 'none'} (plus namespace, "
                                   "kubeconfig, context, name, mutators, labels, annotations, cleanup, dry_run)")
        if namespace is not None:
            validate_name(namespace, "namespace")
        if name is not None:
            validate_name(name, f"{self.kind} name", max_len=self.name_max, dns1035=self.name_dns1035)
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.name = name
        self.mutators = tuple(mutators or ())
        for m in self.mutators:
            if not callable(m):
                raise ConfigError(f"pod option {m!r} is not callable", hint="use the functions in fairing.deployers.pod")
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.cleanup = cleanup
        self.dry_run = dry_run
        self._kube = kube
        self.options = dict(kind_specific)
        self.configure(**kind_specific)

    # -- subclass hooks -----------------------------------------------------------------------------
    def configure(self, **options) -> None:
        """Validate kind-specific options (raise ConfigError early, before any API call)."""

    def build(self, name: str, namespace: str | None, meta: dict, template: dict) -> dict:  # pragma: no cover
        raise NotImplementedError

    def state(self, obj: dict) -> str:  # pragma: no cover
        raise NotImplementedError

    def pod_container(self, pod: dict) -> str:
        return self.container_name

    def replicas(self, obj: dict) -> int:
        """How many pods run at once at most (decides whether log lines get a replica prefix)."""
        return 1

    def pod_selector(self, name: str, run_id: str | None) -> str:
        """Label selector for this workload's pods."""
        return f"{RUN_ID}={run_id}" if run_id else f"job-name={name}"

    def result_pod(self, pods: list[dict]) -> dict | None:
        """The pod whose log carries the function's result."""
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"] or pods
        return max(done, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""), default=None)

    # -- shared -------------------------------------------------------------------------------------
    def default_name(self, image: BuiltImage, run_id: str) -> str:
        from ..oci.reference import parse

        try:
            base = parse(image.ref).repository.rsplit("/", 1)[-1]
        except ConfigError:
            base = "fairing"
        base = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "fairing"
        if self.name_dns1035 and not base[0].isalpha():
            base = "f-" + base
        suffix = "-" + run_id[:5]
        return base[: self.name_max - len(suffix)].strip("-") + suffix

    def pod_template(self, image: BuiltImage, run_id: str) -> dict:
        tpl = default_pod_template(image)
        meta = tpl["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), **self.labels, MANAGED_BY: "fairing", RUN_ID: run_id}
        if self.annotations:
            meta["annotations"] = {**(meta.get("annotations") or {}), **self.annotations}
        return podlib.apply(tpl, self.mutators)

    def manifest(self, image: BuiltImage, *, offline: bool = False, run_id: str | None = None,
                 name: str | None = None) -> dict:
        _check_pinned(image)
        # The pipeline puts the run record's id in labels (fairing.runs); else a fresh one.
        run_id = run_id or self.labels.get(RUN_ID) or uuid.uuid4().hex[:10]
        name = name or self.name or self.default_name(image, run_id)
        ns = self.target_namespace(offline=offline)
        meta = {"name": name,
                "labels": {**self.labels, MANAGED_BY: "fairing", RUN_ID: run_id, DEPLOYER: self.deployer_name},
                "annotations": {**self.annotations, IMAGE_ANNOTATION: image.ref}}
        if ns:
            meta["namespace"] = ns
        return self.build(name, ns, meta, self.pod_template(image, run_id))

    def render(self, image: BuiltImage) -> list[dict]:
        """The manifests deploy() would create; no API calls (the namespace comes from the
        kubeconfig file when one exists). Secrets are referenced, never included."""
        return [self.manifest(image, offline=True)]

    def _prepare(self, manifest: dict, template: dict) -> None:
        for m in self.mutators:
            prep = getattr(m, "prepare", None)
            if prep is not None:
                prep(self.kube, manifest["metadata"]["namespace"], template)

    def templates_of(self, manifest: dict) -> list[dict]:
        """The pod templates inside a manifest (for mutator prepare hooks)."""
        return [manifest["spec"]["template"]]

    def deploy(self, image: BuiltImage):
        manifest = self.manifest(image)
        kube = self.kube
        if self.dry_run:
            # Server-side dry run: admission, RBAC and schema (CRD) validation, nothing persisted.
            applied = kube.create(manifest, dry_run=True)
            return self.handle_class(self, applied, dry_run=True)
        for tpl in self.templates_of(manifest):
            self._prepare(manifest, tpl)
        created = kube.create(manifest)
        return self.handle_class(self, created)

    def attach(self, name: str):
        from ..kube.client import NotFound

        obj = self.kube.get(self.api_version, self.kind, name, self.target_namespace())
        if obj is None:
            raise NotFound(f"{self.kind} {name!r} not found in namespace {self.target_namespace()!r}",
                           hint="`fair list` shows the workloads fairing created")
        return self.handle_class(self, obj)

    @property
    def handle_class(self):
        return KubeHandle


class KubeHandle:
    """A deployed workload: status, wait, logs, result, delete, manifests (fairing.context.Handle)."""

    def __init__(self, deployer: KubeDeployer, obj: dict, *, dry_run: bool = False):
        self.deployer = deployer
        self.kube = deployer.kube
        self._obj = obj
        meta = obj["metadata"]
        self.name = meta["name"]
        self.namespace = meta.get("namespace") or deployer.target_namespace()
        self.run_id = (meta.get("labels") or {}).get(RUN_ID)
        self.dry_run = dry_run
        self._log_cache: str | None = None
        self._deleted = False

    def __repr__(self) -> str:
        return f"<{self.deployer.kind} {self.namespace}/{self.name}>"

    @property
    def api_version(self) -> str:
        return self.deployer.api_version

    @property
    def kind(self) -> str:
        return self.deployer.kind

    @property
    def pod_selector(self) -> str:
        return self.deployer.pod_selector(self.name, self.run_id)

    def _no_dry(self, what: str) -> None:
        if self.dry_run:
            raise DeployError(f"{self.kind} {self.name} was a dry run; there is nothing to {what}",
                              hint="deploy without dry_run=True")

    def get(self) -> dict | None:
        if self.dry_run:
            return self._obj
        obj = self.kube.get(self.api_version, self.kind, self.name, self.namespace)
        if obj is not None:
            self._obj = obj
        return obj

    def status(self) -> str:
        if self.dry_run:
            return "DryRun"
        obj = self.get()
        return "Deleted" if obj is None else self.deployer.state(obj)

    def pods(self) -> list[dict]:
        if self.dry_run:
            return []
        return self.kube.list("v1", "Pod", self.namespace, label_selector=self.pod_selector).get("items", [])

    def diagnose(self):
        """Why the workload is stuck or failed (a reasons.Diagnosis), or None."""
        from ..kube.reasons import diagnose_job, diagnose_pod

        obj, pods = self.get(), self.pods()
        d = diagnose_job(obj or {}, pods, self.deployer.container_name)
        if d:
            return d
        for p in pods:
            d = diagnose_pod(p, self.deployer.pod_container(p))
            if d:
                return d
        return None

    def wait(self, timeout: float | None = None) -> str:
        """Block until the workload finishes. Returns "Succeeded"; raises DeployError saying why it
        failed, or WaitTimeout (the workload keeps running)."""
        from ..kube.reasons import diagnose_job
        from ..kube.wait import wait_for

        self._no_dry("wait for")
        try:
            out = wait_for(self.kube, self.namespace, api_version=self.api_version, kind=self.kind, name=self.name,
                           pod_selector=self.pod_selector, state=self.deployer.state, timeout=timeout,
                           container=self.deployer.container_name)
        except DeployError:
            if self.deployer.cleanup:
                self._cleanup()
            raise
        self._obj = out.obj
        pods = list(out.pods.values()) or self.pods()
        if self.deployer.cleanup:
            self._cleanup(pods)
        if out.status == "Failed":
            d = diagnose_job(out.obj, pods, self.deployer.container_name)
            if d:
                raise DeployError(d.message, hint=d.hint)
            raise DeployError(f"{self.kind} {self.name} failed", hint=f"see the logs: fair logs {self.name}")
        return out.status

    def _cleanup(self, pods: list[dict] | None = None) -> None:
        """cleanup=True: keep the result's log, then delete the workload and its pods."""
        try:
            pod = self.deployer.result_pod(pods if pods is not None else self.pods())
            if pod is not None:
                from ..kube.logs import read_log

                self._log_cache = "\n".join(read_log(self.kube, pod["metadata"]["name"], self.namespace,
                                                     self.deployer.pod_container(pod)))
        except DeployError:
            pass
        self.delete()

    def logs(self, follow: bool = False, *, prefix: bool | None = True) -> Iterator[str]:
        """Log lines of every replica, each prefixed with the replica ("[worker-1] ...", or the pod
        name for a plain Job). prefix=False gives bare lines; prefix=None prefixes only when the
        workload runs more than one replica at a time."""
        from ..kube.logs import follow_logs, pod_logs

        self._no_dry("show logs of")
        if self._deleted and self._log_cache is not None:
            return iter(self._log_cache.splitlines())
        if prefix is None:
            prefix = self.deployer.replicas(self._obj) > 1
        if follow:
            return follow_logs(self.kube, self.namespace, api_version=self.api_version, kind=self.kind,
                               name=self.name, pod_selector=self.pod_selector, container=self.deployer.pod_container,
                               state=self.deployer.state, prefix=prefix)
        return pod_logs(self.kube, self.namespace, self.pods(), self.deployer.pod_container, prefix=prefix)

    def log_text(self) -> str:
        """The workload container's full log from the pod that carries the result."""
        from ..kube.logs import read_log

        if self._log_cache is not None:
            return self._log_cache
        pod = self.deployer.result_pod(self.pods())
        if pod is None:
            raise DeployError(f"{self.kind} {self.name} has no pods", hint="it may not have started, or was cleaned up")
        return "\n".join(read_log(self.kube, pod["metadata"]["name"], self.namespace, self.deployer.pod_container(pod)))

    def result(self) -> Any:
        """The function's return value (function preprocessor), read from the workload's log."""
        from ..context import RESULT_MARKER

        self._no_dry("read the result of")
        text = self.log_text()
        try:
            from ..preprocessors.function import parse_result
        except ImportError:  # pragma: no cover - the function preprocessor ships with fairing
            parse_result = None
        if parse_result is not None:
            return parse_result(text)
        for line in reversed(text.splitlines()):
            if RESULT_MARKER in line:
                return line.split(RESULT_MARKER, 1)[1].strip()
        raise DeployError(f"the log of {self.kind} {self.name} has no {RESULT_MARKER} line")

    def delete(self, *, wait: bool = True, timeout: float = 120) -> None:
        """Delete with foreground propagation: the pods go first, then the object. With wait=True,
        returns once the object is gone (so nothing is left behind)."""
        self._no_dry("delete")
        existed = self.kube.delete(self.api_version, self.kind, self.name, self.namespace, propagation="Foreground")
        self._deleted = True
        if not existed or not wait:
            return
        self._wait_gone(timeout)

    def _wait_gone(self, timeout: float) -> None:
        import time

        from ..kube.wait import Mux, Stream, WaitTimeout

        deadline = time.monotonic() + timeout
        obj = self.kube.get(self.api_version, self.kind, self.name, self.namespace)
        if obj is None:
            return
        # From the version just read, so a deletion finishing right after the read is still seen.
        stream = Stream("owner", self.api_version, self.kind, name=self.name,
                        resource_version=obj["metadata"].get("resourceVersion"))
        with Mux(self.kube, self.namespace, [stream]) as mux:
            for _key, etype, _obj in mux.events(deadline):
                if etype == "DELETED":
                    return
                if etype == "TIMEOUT":
                    raise WaitTimeout(f"{self.kind} {self.name} still exists {timeout:g}s after deletion",
                                      hint="a finalizer may be blocking it: kubectl get "
                                           f"{self.kind.lower()} {self.name} -o yaml")

    def manifests(self) -> list[dict]:
        return [copy.deepcopy(self._obj)]

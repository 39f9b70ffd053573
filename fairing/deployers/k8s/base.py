"""The Kubernetes side of the deployer base: `KubeAccess` (the API client and namespace of any
cluster deployer, training or serving) and `KubeDeployer` + `KubeHandle`, the training kinds (Job,
CronJob, TFJob, PyTorchJob, TrainJob, Pod): one object made from the pod template, watched until
it ends.

A training kind subclasses KubeDeployer, says which object it makes (`api_version`, `kind`,
`build`), how a stored object's state reads (`state`) and its facts (fairing.deployers.base)."""
from __future__ import annotations

import copy
import datetime
import re
import time
import uuid
from typing import Any, Iterator

from ...context import BuiltImage
from ...errors import ConfigError, DeployError, FairingError
from .. import labels as L
from .. import pod as podlib
from .. import queue as queuelib
from ..base import Deployer, Handle
from ..template import template_of


def default_pod_template(image: BuiltImage) -> dict:
    """The pod template to start from: the builder's (container "main"), or a bare one."""
    tpl = copy.deepcopy(dict(template_of(image)))
    if not tpl:
        tpl = {"metadata": {}, "spec": {"containers": [{"name": podlib.MAIN, "image": image.ref}]}}
    tpl.setdefault("metadata", {})
    spec = tpl.setdefault("spec", {})
    main = podlib.find_container(tpl, podlib.MAIN)
    main["image"] = image.ref  # always the digest-pinned reference
    spec.setdefault("restartPolicy", "Never")
    return tpl


def check_pinned(image: BuiltImage) -> None:
    """A cluster pulls by digest: a tag could move between deploy and pull."""
    if not isinstance(image, BuiltImage):
        raise ConfigError(f"deploy() needs a BuiltImage, got {type(image).__name__}",
                          hint="build first: builder.build(context, target) returns one")
    if "@sha256:" not in image.ref and "@sha512:" not in image.ref:
        raise ConfigError(f"image {image.ref!r} is not pinned by digest",
                          hint="deploy the BuiltImage a builder returned (registry/repo@sha256:...)")
    if image.ref.startswith("oci:"):
        raise ConfigError(f"image {image.ref!r} is in a local OCI layout; a cluster cannot pull it",
                          hint="build with a registry target (--registry HOST[:PORT]/PATH)")


def namespace_offline(kubeconfig, context) -> str | None:
    """The namespace from the kubeconfig context, without talking to any server (for render)."""
    try:
        from ...kube.client import load_configuration

        return load_configuration(kubeconfig, context)[1] or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig: render without a namespace
        return None


def finished_outcome(obj: dict | None) -> str | None:
    """"Succeeded"/"Failed" from a batch-style object's Complete/Failed conditions (Job, TrainJob,
    JobSet all use them), else None: the kind decides what "not finished" looks like."""
    conds = {c.get("type"): c.get("status") for c in ((obj or {}).get("status") or {}).get("conditions") or []}
    if conds.get("Complete") == "True":
        return "Succeeded"
    if conds.get("Failed") == "True":
        return "Failed"
    return None


def wait_gone(kube, api_version: str, kind: str, name: str, namespace: str, timeout: float) -> None:
    """Return once the object is gone (deleted, finalizers done); WaitTimeout after `timeout`."""
    from ...kube.wait import Mux, Stream, WaitTimeout

    deadline = time.monotonic() + timeout
    obj = kube.get(api_version, kind, name, namespace)
    if obj is None:
        return
    # From the version just read, so a deletion finishing right after the read is still seen.
    stream = Stream("owner", api_version, kind, name=name, resource_version=obj["metadata"].get("resourceVersion"))
    with Mux(kube, namespace, [stream]) as mux:
        for _key, etype, _obj in mux.events(deadline):
            if etype == "DELETED":
                return
            if etype == "TIMEOUT":
                raise WaitTimeout(f"{kind} {name} still exists {timeout:g}s after deletion",
                                  hint=f"a finalizer may be blocking it: kubectl get {kind.lower()} {name} -o yaml")


class KubeAccess:
    """The API client and namespace of a cluster deployer (training or serving), made on first use
    so that rendering manifests (dry run) needs no cluster. Needs kubeconfig, context, namespace, _kube."""

    connection_settings = ("namespace", "context", "kubeconfig")

    @property
    def kube(self):
        if self._kube is None:
            from ...kube.client import Kube

            self._kube = Kube(self.kubeconfig, self.context, self.namespace)
        return self._kube

    def target_namespace(self, *, offline: bool = False) -> str | None:
        if self.namespace:
            return self.namespace
        if offline and self._kube is None:
            return namespace_offline(self.kubeconfig, self.context)
        return self.kube.namespace


class KubeDeployer(KubeAccess, Deployer):
    """A training kind: one object made from the pod template (see the module docstring)."""

    api_version = "v1"
    kind = "Pod"
    deployer_name = "kube"
    container_name = podlib.MAIN  # the workload container's name in the final pods
    name_max = 63
    name_dns1035 = False
    kind_options: tuple[str, ...] = ()

    def check_name(self, name: str) -> str:
        from ...kube.client import validate_name

        return validate_name(name, f"{self.kind} name", max_len=self.name_max, dns1035=self.name_dns1035)

    # -- subclass hooks -----------------------------------------------------------------------------
    def build(self, name: str, namespace: str | None, meta: dict, template: dict) -> dict:  # pragma: no cover
        raise NotImplementedError

    def pod_container(self, pod: dict) -> str:
        return self.container_name

    # How the workload ended, read from its pods before its controller says so (None: not known
    # from the pods; the object's own state decides). Job: see job.job_pod_verdict; `as_failed`
    # gives the object and pods as the controllers will write them after a "Failed" verdict.
    verdict = None
    # The nonce of the outputs shim's exit line in a workload's pods when that line may end a
    # wait (a Job one pod decides: job.exit_mark), else None.
    exit_mark = None
    # Whether a workload's pods wait for their client's attach session (job.attaches), else None.
    attaches = None

    @staticmethod
    def as_failed(obj: dict, pods: list[dict]) -> tuple[dict, list[dict]]:
        return obj, pods

    def replicas(self, obj: dict) -> int:
        """How many pods run at once at most (decides whether log lines get a replica prefix)."""
        return 1

    def pod_selector(self, name: str, run_id: str | None) -> str:
        """Label selector for this workload's pods."""
        return f"{L.RUN_ID}={run_id}" if run_id else f"job-name={name}"

    def result_pod(self, pods: list[dict]) -> dict | None:
        """The pod whose log carries the function's result."""
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"] or pods
        return max(done, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""), default=None)

    # -- shared -------------------------------------------------------------------------------------
    def default_name(self, image: BuiltImage, run_id: str) -> str:
        from ...oci.reference import parse

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
        meta["labels"] = {**(meta.get("labels") or {}), **self.labels, **L.MANAGED, L.RUN_ID: run_id}
        if self.annotations:
            meta["annotations"] = {**(meta.get("annotations") or {}), **self.annotations}
        return podlib.apply(tpl, self.mutators)

    def manifest(self, image: BuiltImage, *, offline: bool = False, run_id: str | None = None,
                 name: str | None = None) -> dict:
        check_pinned(image)
        # The pipeline puts the run record's id in labels (fairing.runs); else a fresh one.
        run_id = run_id or self.labels.get(L.RUN_ID) or uuid.uuid4().hex[:10]
        name = name or self.name or self.default_name(image, run_id)
        ns = self.target_namespace(offline=offline)
        meta = {"name": name,
                "labels": {**self.labels, **L.MANAGED, L.RUN_ID: run_id, L.DEPLOYER: self.deployer_name},
                "annotations": {**self.annotations, L.IMAGE_ANNOTATION: image.ref}}
        if ns:
            meta["namespace"] = ns
        manifest = self.build(name, ns, meta, self.pod_template(image, run_id))
        return queuelib.enqueue(manifest, self.queue, self.queue_suspend) if self.queue else manifest

    def render(self, image: BuiltImage) -> list[dict]:
        """The manifests deploy() would create; no API calls (the namespace comes from the
        kubeconfig file when one exists). Secrets are referenced, never included."""
        return [self.manifest(image, offline=True)]

    def templates_of(self, manifest: dict) -> list[dict]:
        """The pod templates inside a manifest (for mutator prepare hooks)."""
        return [manifest["spec"]["template"]]

    def preflight(self) -> None:
        """Checks that need the API server but no image, run before anything is built or created."""
        if self.queue:
            queuelib.check_queue(self.kube, self.target_namespace(), self.queue)

    def deploy(self, image: BuiltImage):
        manifest = self.manifest(image)
        kube = self.kube
        self.preflight()
        if self.dry_run:
            # Server-side dry run: admission, RBAC and schema (CRD) validation, nothing persisted.
            applied = kube.create(manifest, dry_run=True)
            return self.handle_class(self, applied, dry_run=True)
        ns = manifest["metadata"]["namespace"]
        self.prepare(kube, ns, self.templates_of(manifest))
        try:
            created = kube.create(manifest)
        except BaseException:
            self.discard(kube, ns)  # what prepare made for this workload must not outlive its failed create
            raise
        self.created(kube, ns, created)
        handle = self.handle_class(self, created)
        handle._created_obj = created  # made by this process: its watches may start from this version
        return handle

    def attach(self, name: str):
        from ...kube.client import NotFound

        obj = self.kube.get(self.api_version, self.kind, name, self.target_namespace())
        if obj is None:
            raise NotFound(f"{self.kind} {name!r} not found in namespace {self.target_namespace()!r}",
                           hint="`fair list` shows the workloads fairing created")
        return self.handle_class(self, obj)

    @property
    def handle_class(self):
        return KubeHandle


class KubeHandle(Handle):
    """A deployed training workload: status, wait, logs, result, delete, manifests."""

    def __init__(self, deployer: KubeDeployer, obj: dict, *, dry_run: bool = False):
        self.deployer = deployer
        self.kube = deployer.kube
        self._obj = obj
        meta = obj["metadata"]
        self.name = meta["name"]
        self.namespace = meta.get("namespace") or deployer.target_namespace()
        self.run_id = (meta.get("labels") or {}).get(L.RUN_ID)
        self.dry_run = dry_run
        self._log_cache: str | None = None
        self._deleted = False
        self._created_obj: dict | None = None  # the object as this process created it (deploy)
        self._exited: str | None = None  # the pod whose shim said its command exited 0 (logs)

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

    @property
    def what(self) -> str:
        return self.kind

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
        if obj is None:
            return "Deleted"
        st = self._state(obj)
        if st not in ("Succeeded", "Failed") and self.deployer.verdict is not None and st != "Queued":
            # The pods may have ended it already; the controller writes its condition later.
            pods = self.pods()
            st = self.deployer.verdict(obj, pods) or st
            # The Job's counts lag its pod's (Pending until the controller counts it ready).
            if st in ("Pending", "Running") and (self._exited is not None or self._said_exit(obj, pods)):
                st = "Succeeded"  # what a wait returned on the shim's exit line, before the API says it
        return st

    def _said_exit(self, obj: dict, pods: list[dict]) -> bool:
        """A running pod of a Job one pod decides whose log ends with the shim's exit line, code 0
        (its command exited and the kubelet has not reported it yet; see KubeHandle.wait)."""
        from ...context import exit_line
        from ...kube.logs import read_log

        mark = self.deployer.exit_mark(obj) if self.deployer.exit_mark else None
        if not mark:
            return False
        for p in pods:
            if (p.get("status") or {}).get("phase") != "Running":
                continue
            try:
                tail = list(read_log(self.kube, p["metadata"]["name"], self.namespace, self.deployer.pod_container(p),
                                     exit_lines=True, tail_lines=1))
            except DeployError:
                continue
            said = exit_line(tail[-1]) if tail else None
            if said is not None and said[0] == mark and said[1] == 0:
                return True
        return False

    def _state(self, obj: dict) -> str:
        # A workload in a Kueue queue reads "Queued", then "Admitted", before its own states.
        return queuelib.state(obj, self.deployer.state(obj), self.deployer.queue_suspend)

    def status_detail(self) -> str | None:
        """A sentence beyond the status word (where a queued workload stands), or None."""
        if self.dry_run or self._obj is None:
            return None
        return queuelib.describe(self.kube, self.namespace, self._obj, self.deployer.queue_suspend)

    def pods(self) -> list[dict]:
        if self.dry_run:
            return []
        return self.kube.list("v1", "Pod", self.namespace, label_selector=self.pod_selector).get("items", [])

    def diagnose(self):
        """Why the workload is stuck or failed (a reasons.Diagnosis), or None."""
        from ...kube.reasons import diagnose_job, diagnose_pod

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
        from ...kube.reasons import diagnose_job
        from ...kube.wait import WaitTimeout, wait_for

        self._no_dry("wait for")
        if self._exited is not None:
            # The log followed to the shim's exit line: the command exited 0 and its outputs are
            # kept, ~0.5 s before the kubelet's relist shows it (image_runtime/outputs.py say_exit
            # says what could still differ). A Job one pod decides is then Complete.
            self._drop_outputs_secret()
            if self.deployer.cleanup:
                self._cleanup()
            return "Succeeded"
        started = datetime.datetime.now(datetime.timezone.utc)
        try:
            out = wait_for(self.kube, self.namespace, api_version=self.api_version, kind=self.kind, name=self.name,
                           pod_selector=self.pod_selector, state=self._state, timeout=timeout,
                           container=self.deployer.container_name, verdict=self.deployer.verdict)
        except DeployError as e:
            err = self._queued_timeout(e, started) if isinstance(e, WaitTimeout) else e
            if not isinstance(e, WaitTimeout):
                self._drop_outputs_secret()
            if self.deployer.cleanup:
                self._cleanup()
            if err is e:
                raise
            raise err from None
        self._obj = out.obj
        self._drop_outputs_secret()
        pods = list(out.pods.values()) or self.pods()
        if self.deployer.cleanup:
            self._cleanup(pods)
        if out.status == "Failed":
            d = diagnose_job(out.obj, pods, self.deployer.container_name)
            if d is None and self._state(out.obj) != "Failed":
                # Ended by its pods (verdict): no Failed condition yet; explain it as it will read.
                d = diagnose_job(*self.deployer.as_failed(out.obj, pods), self.deployer.container_name)
            if d:
                raise DeployError(d.message, hint=d.hint)
            raise DeployError(f"{self.kind} {self.name} failed", hint=f"see the logs: fair logs {self.name}")
        return out.status

    def _queued_timeout(self, e, started):
        """The timeout counts time spent in a Kueue queue; say how much of it that was."""
        obj = self.get()
        path = self.deployer.queue_suspend
        queued = queuelib.queued_seconds(self.kube, self.namespace, obj, started, path) if obj else None
        if queued is None:
            return e
        where = queuelib.describe(self.kube, self.namespace, obj, path) or f"in queue {queuelib.queue_of(obj)}"
        return type(e)(f"{e.message}; {queued:.0f}s of the wait were spent queued ({where})",
                       hint="the timeout counts time in the queue: wait longer, or use a queue with free quota "
                            "(kubectl get clusterqueues)")

    def _cleanup(self, pods: list[dict] | None = None) -> None:
        """cleanup=True: keep the result's log, then delete the workload and its pods."""
        try:
            pod = self.deployer.result_pod(pods if pods is not None else self.pods())
            if pod is not None:
                from ...kube.logs import read_log

                self._log_cache = "\n".join(read_log(self.kube, pod["metadata"]["name"], self.namespace,
                                                     self.deployer.pod_container(pod)))
        except DeployError:
            pass
        self.delete()

    def logs(self, follow: bool = False, *, prefix: bool | None = True) -> Iterator[str]:
        """Log lines of every replica, each prefixed with the replica ("[worker-1] ...", or the pod
        name for a plain Job). prefix=False gives bare lines; prefix=None prefixes only when the
        workload runs more than one replica at a time."""
        from ...kube.logs import follow_logs, pod_logs

        self._no_dry("show logs of")
        if self._deleted and self._log_cache is not None:
            return iter(self._log_cache.splitlines())
        if prefix is None:
            prefix = self.deployer.replicas(self._obj) > 1
        if follow:
            return follow_logs(self.kube, self.namespace, api_version=self.api_version, kind=self.kind,
                               name=self.name, pod_selector=self.pod_selector, container=self.deployer.pod_container,
                               state=self.deployer.state, prefix=prefix, verdict=self.deployer.verdict,
                               created=self._created_obj, on_exit=self._on_exit,
                               exit_mark=self.deployer.exit_mark(self._obj) if self.deployer.exit_mark else None,
                               attach=bool(self.deployer.attaches and self.deployer.attaches(self._obj)))
        return pod_logs(self.kube, self.namespace, self.pods(), self.deployer.pod_container, prefix=prefix)

    def _on_exit(self, pod: str, code: int) -> None:
        self._exited = pod

    def log_text(self) -> str:
        """The workload container's full log from the pod that carries the result."""
        from ...kube.logs import read_log

        if self._log_cache is not None:
            return self._log_cache
        pod = self.deployer.result_pod(self.pods())
        if pod is None:
            raise DeployError(f"{self.kind} {self.name} has no pods", hint="it may not have started, or was cleaned up")
        return "\n".join(read_log(self.kube, pod["metadata"]["name"], self.namespace, self.deployer.pod_container(pod)))

    def result(self) -> Any:
        """The function's return value (function preprocessor), read from the workload's log."""
        from ...results import parse_result

        self._no_dry("read the result of")
        return parse_result(self.log_text())

    def _drop_outputs_secret(self) -> None:
        """The run is over: its outputs Secret (if it had one) is no longer needed. A CronJob's
        is, for its next runs: it goes with the CronJob."""
        if self.run_id and not self.deployer.per_job_runs:
            try:
                # Background: a Secret has no dependents, and Foreground would leave it behind a
                # foregroundDeletion finalizer until the garbage collector comes round to it.
                self.kube.delete("v1", "Secret", L.outputs_secret(self.run_id), self.namespace,
                                 propagation="Background")
            except FairingError:
                pass  # owned by the workload: deleted with it anyway

    def delete(self, *, wait: bool = True, timeout: float = 120, propagation: str = "Foreground") -> None:
        """Delete with foreground propagation: the pods go first, then the object. With wait=True,
        returns once the object is gone (so nothing is left behind). propagation="Background" (a
        finished workload whose pods need no waiting for): the object goes at once and the
        garbage collector removes its pods after."""
        self._no_dry("delete")
        existed = self.kube.delete(self.api_version, self.kind, self.name, self.namespace, propagation=propagation)
        self._deleted = True
        if existed and wait:
            wait_gone(self.kube, self.api_version, self.kind, self.name, self.namespace, timeout)

    def manifests(self) -> list[dict]:
        return [copy.deepcopy(self._obj)]

"""Reading a pvc:// outputs store from outside the cluster. The volume is only reachable from a
pod, so one short-lived pod (a Job's) mounts the claim read-only and serves it over HTTP
(python3's http.server, in the run's own image: it has python3, and the node could already pull
it); the files come through the API server's service proxy and are checked by digest as from any
store. The Job and Service are deleted when the fetch ends, however it ends."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Mapping

from ..errors import ConfigError, DeployError, FairingError
from .store import StoreSpec

PORT = 8000
MOUNT = "/store"
READY_TIMEOUT = 120.0
READER_SECONDS = 1800
READER_LABEL = "fairing.dev/outputs-reader"


def _image(record: Mapping[str, Any]) -> str:
    img = record.get("image") or {}
    ref, digest = img.get("ref"), img.get("digest")
    if not ref:
        raise ConfigError(f"run {record.get('id')} names no image to read its pvc:// outputs with",
                          hint="fetch from a pod that mounts the claim, or keep outputs in oci:// or s3://")
    if digest and "@" not in ref:
        name, colon, tag = ref.rpartition(":")
        ref = f"{name if colon and '/' not in tag else ref}@{digest}"  # pinned: the bytes the run had
    return ref


def reader_objects(name: str, image: str, claim: str, sub_path: str | None, mutators=()) -> list[dict]:
    """A Job (its pod mounts the claim read-only and serves it) and a Service in front of it: what
    a fairing user's namespace role already allows (jobs, services, services/proxy), where a
    bare pod and pods/proxy often are not. The Job ends by itself after READER_SECONDS whatever
    happens to this process."""
    from ..deployers import labels as L
    from ..deployers import pod

    select = {READER_LABEL: name}
    template = {"metadata": {"labels": {**L.MANAGED, **select}},
                "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                         "containers": [{
                             "name": pod.MAIN, "image": image,
                             "command": ["python3", "-m", "http.server", str(PORT), "--bind", "0.0.0.0",
                                         "--directory", MOUNT],
                             "readinessProbe": {"httpGet": {"path": "/", "port": PORT},
                                                "periodSeconds": 1, "failureThreshold": 60},
                             "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}]}}
    template = pod.apply(template, [*mutators, pod.pvc(claim, MOUNT, read_only=True, sub_path=sub_path)])
    meta = {"name": name, "labels": {**L.MANAGED, **select}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
           "spec": {"backoffLimit": 0, "activeDeadlineSeconds": READER_SECONDS, "ttlSecondsAfterFinished": 60,
                    "template": template}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
           "spec": {"selector": select, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]}}
    return [job, svc]


class PodStore:
    """get_run / get_blob of a DirBackend, answered by the reader pod through the API server."""

    def __init__(self, kube, namespace: str, name: str, spec: StoreSpec):
        self.kube, self.namespace, self.name, self.spec = kube, namespace, name, spec

    def describe(self) -> str:
        return self.spec.text

    def _path(self, rel: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/services/{self.name}:{PORT}/proxy/{rel}"

    def _open(self, rel: str):
        from ..kube.client import NotFound

        try:
            return self.kube.request("GET", self._path(rel), stream=True, timeout=300)
        except NotFound:
            return None

    def reachable(self) -> bool:
        """The Service routes to the ready pod (its endpoints follow readiness a moment later)."""
        try:
            r = self._open("")
        except FairingError:
            return False
        if r is None:
            return False
        r.release_conn()
        return True

    def get_run(self, run_id: str) -> dict | None:
        r = self._open(f"runs/{run_id}.json")
        if r is None:
            return None
        try:
            return json.loads(r.read().decode())
        finally:
            r.release_conn()

    def get_blob(self, digest: str, dest_path: str) -> None:
        from ..image_runtime.outputs import StoreError, copy_checked

        rel = "blobs/sha256/" + digest.split(":", 1)[1]
        r = self._open(rel)
        if r is None:
            raise StoreError(f"{self.describe()} has no blob {digest}")

        class Body:  # what copy_checked reads: a context manager with read(n)
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                r.release_conn()

            def read(self, n):
                return r.read(n)

        copy_checked(lambda: Body(), digest, dest_path, self.describe())


class Reader:
    """`with Reader(record, spec) as store:` the reader pod, running and ready; deleted after."""

    def __init__(self, record: Mapping[str, Any], spec: StoreSpec, settings: Mapping[str, Any] | None = None):
        from .. import settings as settings_mod

        self.record, self.spec = record, spec
        self.settings = settings if settings is not None else settings_mod.load({}, cli_source="argument")
        workload = record.get("workload") or {}
        self.namespace = workload.get("namespace") or self.settings.get("namespace")
        self.name = f"fairing-outputs-reader-{uuid.uuid4().hex[:8]}"
        self.kube = None
        self.made: list[str] = []

    def __enter__(self) -> PodStore:
        from ..deployers import pod
        from ..kube.client import Kube

        image = _image(self.record)
        self.kube = Kube(self.settings.get("kubeconfig"), self.settings.get("context"), self.namespace)
        ns = self.kube.namespace
        placement = pod.from_settings({k: self.settings.get(k) for k in ("node_selector", "tolerations")})
        try:
            for obj in reader_objects(self.name, image, self.spec.claim, self.spec.sub_path, placement):
                self.kube.create(obj, ns)
                self.made.append(obj["kind"])
            self._wait_ready(ns)
        except BaseException:
            self._delete(ns)
            raise
        return PodStore(self.kube, ns, self.name, self.spec)

    def __exit__(self, *exc) -> None:
        if self.kube is not None:
            self._delete(self.kube.namespace)

    def _delete(self, ns: str) -> None:
        for kind, api in (("Service", "v1"), ("Job", "batch/v1")):
            if kind in self.made:
                try:
                    self.kube.delete(api, kind, self.name, ns, propagation="Background")
                except Exception:  # noqa: BLE001 - the Job ends by itself; the error being raised matters more
                    pass

    def _wait_ready(self, ns: str) -> None:
        from ..kube.reasons import diagnose_pod

        deadline = time.monotonic() + READY_TIMEOUT
        store = PodStore(self.kube, ns, self.name, self.spec)
        while True:
            pods = self.kube.list("v1", "Pod", ns, label_selector=f"{READER_LABEL}={self.name}").get("items", [])
            p = pods[0] if pods else {}
            st = p.get("status") or {}
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []) \
                    and store.reachable():
                return
            d = diagnose_pod(p, "main") if p else None
            if d is not None and d.fatal or st.get("phase") in ("Failed", "Succeeded"):
                msg = d.message if d is not None else f"it ended ({st.get('phase')})"
                raise DeployError(f"the pod reading {self.spec.text} did not start: {msg}",
                                  hint=(d.hint if d is not None else None) or f"check the claim: kubectl get pvc -n {ns} {self.spec.claim}")
            if time.monotonic() > deadline:
                raise FairingError(f"the pod reading {self.spec.text} was not ready within {READY_TIMEOUT:.0f}s",
                                   hint=f"is the claim bound and mountable here? kubectl describe pvc -n {ns} {self.spec.claim}")
            time.sleep(0.5)

"""The outputs store, wired into a cluster workload's pods: where to write ($FAIRING_OUTPUT_DIR),
where the shim keeps it ($FAIRING_OUTPUTS_STORE, no secret in it), and the run's credentials as a
Secret mounted read-only, created at deploy time and owned by the workload (deleted with it, and
by the waiting client when the run ends). One pod mutator (fairing.deployers.pod) with the hooks."""
from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from ..context import OUTPUT_DIR
from ..deployers import labels as L
from ..deployers import pod
from .store import AUTH_DIR, STORE_MOUNT, StoreSpec

STORE_ENV, AUTH_ENV, PER_JOB_ENV = "FAIRING_OUTPUTS_STORE", "FAIRING_OUTPUTS_AUTH", "FAIRING_RUN_PER_JOB"
SECRET_LABEL = "fairing.dev/outputs-secret"
REDACTED = "<redacted: set at deploy from your store credentials>"


secret_name = L.outputs_secret


def job_run_id(job_name: str) -> str:
    """The run id the pod's shim takes for a Job no client started (a CronJob's run, a Katib
    trial: `per_job` below): derived from the Job's name, so the client can find it too."""
    from ..image_runtime.outputs import run_id_of

    return run_id_of({"FAIRING_JOB_NAME": job_name})


def env_for(store: StoreSpec | None, *, with_auth: bool = False) -> dict[str, str]:
    out = {"FAIRING_OUTPUT_DIR": OUTPUT_DIR}
    if store is not None:
        out[STORE_ENV] = json.dumps(dict(store.spec), sort_keys=True)
        if with_auth:
            out[AUTH_ENV] = f"{AUTH_DIR}/auth.json"
    return out


def mutator(store: StoreSpec | None, run_id: str, *, creds: Mapping[str, Any] | None = None,
            ca_pem: bytes | None = None, per_job: bool = False) -> pod.Mutator:
    """Everything the pod needs to keep its outputs in `store` (None: the dir only). `per_job`
    (a CronJob): each Job it starts is a run of its own, named from the Job (the shim derives the
    id), with this run as its parent."""
    with_auth = bool(creds)
    env = env_for(store, with_auth=with_auth)
    if per_job:
        env.update({PER_JOB_ENV: "1", "FAIRING_RUN_PARENT": run_id})
    name = secret_name(run_id)

    parts = [pod.env(env)]
    if with_auth:
        parts.append(pod.secret_volume(name, AUTH_DIR))
    if store is not None and store.claim:
        parts.append(pod.pvc(store.claim, STORE_MOUNT, sub_path=store.sub_path))

    def m(p: dict) -> dict:
        out = pod.apply(p, parts)
        if per_job:
            c = pod.find_container(out)
            c["env"] = [e for e in c.get("env", []) if e.get("name") != "FAIRING_RUN_ID"]
            c["env"].append({"name": "FAIRING_JOB_NAME",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}})
        return out

    m.description = m.__name__ = m.__qualname__ = f"outputs({store.text if store else 'dir only'})"

    def secret(namespace: str | None, *, redacted: bool = False) -> dict | None:
        """The run's Secret (None: no credentials to carry). `redacted` (a dry run's manifests):
        the same object with a placeholder for every value; the values are never encoded."""
        if not with_auth:
            return None
        keys = ["auth.json"] + (["ca.pem"] if ca_pem else [])
        if redacted:
            data = {k: REDACTED for k in keys}
        else:
            data = {"auth.json": base64.b64encode(json.dumps(dict(creds)).encode()).decode()}
            if ca_pem:
                data["ca.pem"] = base64.b64encode(ca_pem).decode()
        meta = {"name": name, "labels": {**L.MANAGED, L.RUN_ID: run_id, SECRET_LABEL: "true"}}
        if namespace:
            meta["namespace"] = namespace
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": data}

    def prepare(kube, namespace: str, template: dict) -> None:
        if with_auth:
            kube.apply(secret(namespace), namespace)

    def created(kube, namespace: str, obj: dict) -> None:
        """The Secret lives as long as the workload: Kubernetes deletes it with its owner."""
        if not with_auth:
            return
        meta = obj.get("metadata") or {}
        owner = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
                 "uid": meta.get("uid"), "blockOwnerDeletion": False}
        if owner["uid"]:
            kube.patch("v1", "Secret", name, {"metadata": {"ownerReferences": [owner]}}, namespace)

    def discard(kube, namespace: str) -> None:
        if with_auth:
            drop_secret(kube, namespace, run_id)

    m.prepare, m.created, m.discard, m.secret = prepare, created, discard, secret
    return m


def drop_secret(kube, namespace: str, run_id: str | None) -> None:
    """Delete the run's outputs Secret (the run is over: nothing will write its outputs again)."""
    if not run_id:
        return
    try:
        # Background: gone when the call returns (Foreground leaves it to the garbage collector)
        kube.delete("v1", "Secret", secret_name(run_id), namespace, propagation="Background")
    except Exception:  # noqa: BLE001 - its owner's deletion removes it anyway
        pass

"""A hyper-parameter sweep the way a user writes it: one TrainJob per learning rate, submitted from
threads, each tracked to completion with handle.wait(), then deleted. Shared by
tests/reliability/test_load.py (which checks nothing is lost or duplicated) and bench/sweep.py
(which times it against the same Jobs created with the plain kubernetes client)."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SWEEP_LABEL = "fairing.dev/sweep"
TRIAL_LABEL = "fairing.dev/trial"

TRAIN = '''"""Fit y = 3x + 1 with one learning rate (a sweep trial)."""
import argparse

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
lr = p.parse_args().lr
w = b = 0.0
xs = [i / 50 for i in range(50)]
for _ in range(200):
    gw = sum((w * x + b - (3 * x + 1)) * x for x in xs) / len(xs)
    gb = sum((w * x + b - (3 * x + 1)) for x in xs) / len(xs)
    w, b = w - lr * gw, b - lr * gb
print(f"lr={lr} w={w:.3f} b={b:.3f}")
'''


def learning_rates(n: int) -> list[float]:
    return [round(0.01 + i * (0.9 / max(n - 1, 1)), 4) for i in range(n)]


def project(root: Path) -> Path:
    d = Path(root) / "sweep-project"
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(TRAIN)
    return d


@dataclass
class Sweep:
    sweep_id: str
    handles: dict[int, object] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_sweep(n: int, *, registry: str, base_image: str, namespace: str, kubeconfig: str, workdir: Path,
              cache_dir: Path, cleanup: bool = True, workers: int | None = None, timeout: float = 600) -> Sweep:
    """Submit n trials concurrently (one thread each), wait for all, delete all (if cleanup)."""
    from fairing.api import TrainJob

    proj = project(workdir)
    sweep = Sweep(sweep_id=uuid.uuid4().hex[:8])
    lock = threading.Lock()
    workers = workers or n

    def submit(i: int, lr: float) -> None:
        try:
            job = TrainJob(str(proj), registry=registry, image_name=f"sweep-{sweep.sweep_id}", base_image=base_image,
                           deployer="job", builder="append", namespace=namespace, kubeconfig=kubeconfig,
                           name=f"sweep-{sweep.sweep_id}-{i:02d}", args=["--lr", str(lr)], progress=False,
                           builder_options={"cache_dir": str(cache_dir)},
                           deployer_options={"labels": {SWEEP_LABEL: sweep.sweep_id, TRIAL_LABEL: str(i)}})
            h = job.submit()
            with lock:
                sweep.handles[i] = h
        except Exception as e:  # noqa: BLE001 - recorded; the caller asserts on it
            with lock:
                sweep.errors[i] = f"submit: {type(e).__name__}: {e}"

    def wait(i: int) -> None:
        try:
            st = sweep.handles[i].wait(timeout=timeout)
        except Exception as e:  # noqa: BLE001
            st = f"{type(e).__name__}: {e}"
        with lock:
            sweep.statuses[i] = st

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda a: submit(*a), enumerate(learning_rates(n))))
    t1 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(sweep.handles))) as pool:
        list(pool.map(wait, sorted(sweep.handles)))
    t2 = time.monotonic()
    sweep.seconds = {"submit": t1 - t0, "wait": t2 - t1}
    if cleanup:
        for err in delete_all(sweep.handles.values()):
            sweep.errors[-1 - len(sweep.errors)] = f"delete: {err}"
        sweep.seconds["delete"] = time.monotonic() - t2
    sweep.seconds["total"] = time.monotonic() - t0
    return sweep


def delete_all(handles) -> list[str]:
    """Delete every handle's workload from threads (each delete waits until it is gone)."""
    errors: list[str] = []

    def one(h) -> None:
        try:
            h.delete()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{h.name}: {type(e).__name__}: {e}")

    handles = list(handles)
    with ThreadPoolExecutor(max_workers=max(1, len(handles))) as pool:
        list(pool.map(one, handles))
    return errors


def census(kube, namespace: str, sweep_id: str) -> dict:
    """What the API server holds for a sweep, counted by label."""
    from fairing.deployers.k8s.job import job_state

    sel = f"{SWEEP_LABEL}={sweep_id}"
    jobs = kube.list("batch/v1", "Job", namespace, label_selector=sel)["items"]
    pods = kube.list("v1", "Pod", namespace, label_selector=sel)["items"]
    return {
        "jobs": len(jobs),
        "names": Counter(j["metadata"]["name"] for j in jobs),
        "trials": Counter(j["metadata"]["labels"].get(TRIAL_LABEL) for j in jobs),
        "states": Counter(job_state(j) for j in jobs),
        "pods": len(pods),
        "pod_phases": Counter((p.get("status") or {}).get("phase") for p in pods),
    }


def raw_sweep(n: int, *, image: str, namespace: str, kubeconfig: str, timeout: float = 600) -> dict[str, float]:
    """The same n Jobs with the plain kubernetes client and a prebuilt image: create from threads,
    one label-selected watch until all complete, delete (foreground) and watch until gone."""
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(config_file=kubeconfig)
    batch = client.BatchV1Api(api_client)
    sid = uuid.uuid4().hex[:8]
    sel = f"{SWEEP_LABEL}={sid}"

    def manifest(i: int, lr: float) -> dict:
        labels = {SWEEP_LABEL: sid, TRIAL_LABEL: str(i)}
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": f"raw-{sid}-{i:02d}", "labels": labels},
                "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": image, "workingDir": "/app",
                                    "command": ["python3", "-u", "train.py", "--lr", str(lr)]}]}}}}

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda a: batch.create_namespaced_job(namespace, manifest(*a)), enumerate(learning_rates(n))))
    t1 = time.monotonic()
    done: set[str] = set()
    w = watch.Watch()
    for ev in w.stream(batch.list_namespaced_job, namespace, label_selector=sel, timeout_seconds=int(timeout)):
        conds = {c.type: c.status for c in (ev["object"].status.conditions or [])}
        if conds.get("Complete") == "True" or conds.get("Failed") == "True":
            done.add(ev["object"].metadata.name)
        if len(done) == n:
            w.stop()
    t2 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda i: batch.delete_namespaced_job(f"raw-{sid}-{i:02d}", namespace,
                                                            propagation_policy="Foreground"), range(n)))
    while batch.list_namespaced_job(namespace, label_selector=sel).items:
        time.sleep(0.2)
    t3 = time.monotonic()
    return {"submit": t1 - t0, "wait": t2 - t1, "delete": t3 - t2, "total": t3 - t0}

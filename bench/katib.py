"""Where a Katib tuning run's time goes, on the rig's real node (issue 23, part 2).

    python bench/katib.py [--trials 6] [--parallel 2]

One `fairing.tune(..., backend="katib", algorithm="random")` of trials that each work 1 s; an
untimed run first builds the image and puts it on the node. Then every timestamp Katib and
Kubernetes wrote (Experiment, Suggestion, Trials, their Jobs and pods; one-second resolution) is read
back and the run is split into:

- fairing before:   tune() called -> Experiment created (package, a no-op rebuild, render, create)
- to the first trials: Experiment created -> its first Trials exist (Katib starts the goptuna
                    service pod for this Experiment and asks it for the first suggestions)
- later trial created: per later trial, from the moment its slot was free (a trial of the previous
                    round ending) -> the Trial exists (suggestion + controller)
- to the Job:       Trial created -> its Job created (trial controller)
- to the container: Job created -> the training container started (Job controller, scheduler,
                    kubelet, the injected metrics collector)
- training:         the container's own run (1 s of work + interpreter start)
- to the verdict:   container finished -> Trial Succeeded (metrics collector reads the log, trial
                    controller reports)
- experiment end:   last Trial Succeeded -> Experiment Succeeded
- fairing after:    Experiment Succeeded -> tune() returned (final reads, records)

What fairing owns is the first and last rows; the rest is Katib's and Kubernetes'."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPT = """import argparse, time
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
time.sleep(1)
print(f"score={-(a.x - 3) ** 2}", flush=True)
"""


def ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def cond_time(obj: dict, kind: str) -> float | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return ts(c.get("lastTransitionTime"))
    return None


def container_span(pod: dict, name: str) -> tuple[float | None, float | None]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == name:
            t = (cs.get("state") or {}).get("terminated") or {}
            return ts(t.get("startedAt")), ts(t.get("finishedAt"))
    return None, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=2)
    a = ap.parse_args()
    import fairing
    import tests.rig
    import tests.rig.kube
    from fairing.kube.client import Kube
    from tests.rig.katib import katib_rig
    from tests.rig.node import real_node

    print("starting the rig (registry, base image, real node, Katib)...", flush=True)
    services = tests.rig.up(base=True)
    node = real_node()
    rig = katib_rig(tests.rig.kube.control_plane())
    admin = Kube(str(rig.admin_kubeconfig), namespace=rig.namespace)
    repo = f"{services['registry'].host}/bench-katib/k{uuid.uuid4().hex[:6]}"
    os.environ.pop("FAIRING_PROGRESS", None)
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "train.py"
        script.write_text(SCRIPT)
        os.chdir(d)

        def tune(name: str):
            return fairing.tune(str(script), params={"x": fairing.uniform(0, 6)}, objective="score",
                                goal="maximize", trials=a.trials, parallel=a.parallel, algorithm="random",
                                backend="katib", name=name, registry=repo, base_image=services["base_image"].docker,
                                kubeconfig=str(rig.kubeconfig), namespace=rig.namespace, mutators=node.mutators(),
                                progress=False, timeout=900)

        warm = f"bk-{uuid.uuid4().hex[:5]}"
        try:
            tune(warm)  # untimed: build, push, the node pulls the image
        finally:
            admin.delete("kubeflow.org/v1beta1", "Experiment", warm, rig.namespace, propagation="Background")
        name = f"bk-{uuid.uuid4().hex[:5]}"
        # When fairing's create of the Experiment returned, by this process's clock (the object's
        # creationTimestamp is truncated to the second).
        made: dict[str, float] = {}
        plain_create = Kube.create

        def timed_create(self, manifest, *args, **kw):
            out = plain_create(self, manifest, *args, **kw)
            if manifest.get("kind") == "Experiment" and not kw.get("dry_run"):
                made.setdefault("at", time.time())
            return out

        Kube.create = timed_create
        t0 = time.time()
        try:
            r = tune(name)
        finally:
            Kube.create = plain_create
        t_end = time.time()
        try:
            assert r.status == "Succeeded", r.reason
            exp = admin.get("kubeflow.org/v1beta1", "Experiment", name, rig.namespace)
            trials = admin.list("kubeflow.org/v1beta1", "Trial", rig.namespace,
                                label_selector=f"katib.kubeflow.org/experiment={name}")["items"]
            pods = admin.list("v1", "Pod", rig.namespace, label_selector="katib.kubeflow.org/trial")["items"]
            jobs = {j["metadata"]["name"]: j for j in admin.list("batch/v1", "Job", rig.namespace)["items"]}
        finally:
            admin.delete("kubeflow.org/v1beta1", "Experiment", name, rig.namespace, propagation="Background")
    created = ts(exp["metadata"]["creationTimestamp"])
    done = cond_time(exp, "Succeeded")
    rows = []
    for t in trials:
        tn = t["metadata"]["name"]
        pod = next((p for p in pods if p["metadata"]["labels"].get("katib.kubeflow.org/trial") == tn), None)
        start, end = container_span(pod or {}, "main")
        job = jobs.get(tn) or {}
        rows.append({"name": tn, "created": ts(t["metadata"]["creationTimestamp"]),
                     "job": ts((job.get("metadata") or {}).get("creationTimestamp")),
                     "started": start, "finished": end, "succeeded": cond_time(t, "Succeeded")})
    rows.sort(key=lambda x: x["created"])
    # A slot frees when a trial ends: the k-th trial (k >= parallel) waited for the (k-parallel)-th end.
    ends = sorted(x["succeeded"] for x in rows)
    for k, x in enumerate(rows):
        x["free"] = created if k < a.parallel else ends[k - a.parallel]

    def med(key):  # the mean: with 1 s timestamps a median of few trials is mostly 0 or 1
        vals = [v for v in key if v is not None]
        return statistics.mean(vals) if vals else float("nan")

    split = [
        ("fairing before", made["at"] - t0, "fairing"),
        ("to the first trials", min(x["created"] for x in rows) - created,
         "Katib (suggestion service start, first suggestions)"),
        ("later trial created (mean)", med(x["created"] - x["free"] for x in rows[a.parallel:]), "Katib"),
        ("to the Job (mean)", med(x["job"] - x["created"] for x in rows if x["job"]), "Katib"),
        ("to the container (mean)", med(x["started"] - x["job"] for x in rows if x["started"] and x["job"]),
         "Kubernetes + Katib's collector"),
        ("training (mean)", med(x["finished"] - x["started"] for x in rows if x["started"]), "the trial"),
        ("to the verdict (mean)", med(x["succeeded"] - x["finished"] for x in rows if x["finished"]),
         "Katib (collector, trial controller)"),
        ("experiment end", done - max(ends), "Katib"),
        ("fairing after", t_end - done, "fairing"),
    ]
    wall = t_end - t0
    print(f"\n{a.trials} random trials, {a.parallel} at a time, 1 s of work each, on the real node "
          f"(timestamps have 1 s resolution)")
    print(f"{'phase':28} {'seconds':>8}  owner")
    for label, sec, owner in split:
        print(f"{label:28} {sec:8.2f}  {owner}")
    print(f"\nper trial, seconds from the Experiment's creation:")
    print(f"{'trial':8} {'slot free':>9} {'created':>8} {'Job':>6} {'started':>8} {'finished':>9} {'succeeded':>10}")
    for k, x in enumerate(rows):
        rel = [None if x[f] is None else x[f] - created for f in ("free", "created", "job", "started", "finished", "succeeded")]
        print(f"{k:<8} " + " ".join(f"{'-' if v is None else f'{v:.0f}':>{w}}" for v, w in zip(rel, (9, 8, 6, 8, 9, 10))))
    work = sum(x["finished"] - x["started"] for x in rows if x["started"])
    print(f"tune() wall {wall:.1f} s for {work:.1f} s of trial containers running "
          f"({a.trials / a.parallel:.0f} rounds of {a.parallel}); fairing's own share: "
          f"{(made['at'] - t0) + (t_end - done):.2f} s ({((made['at'] - t0) + (t_end - done)) / wall:.0%}; "
          f"its end is read from a timestamp truncated to the second)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores; figures move with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

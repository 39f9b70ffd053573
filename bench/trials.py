"""Trial overhead of the jobs tuning backend on the rig's real node, against N raw Jobs of the same
image started together by the same client (issue 23, part 2).

    python bench/trials.py [--trials 4] [-r 2]

The script sleeps 1 s and prints its own start and end times (time.time(), one clock: the node is
this machine). Trial overhead = the run's wall time minus the time trial code was running (the
union of the trials' [started, ended] spans; for sequential trials that is the sum of their run
times, the issue's definition). All trials run at once (parallel = trials) on both sides:
- `fairing.tune(..., backend="jobs", parallel=N)`: the whole call (package, a no-op rebuild, one
  Job per trial, their logs read back for metrics); an untimed tune first builds and pushes the
  image and puts it on the node;
- raw: N batch/v1 Jobs of the tune's image digest (`args: --x V`), created back to back by
  fairing's Kube client (the same client), their pods watched until every container terminated,
  then each log read for the times.
Target (issue 23): jobs backend overhead <= 1.3x the raw Jobs'."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPT = """import argparse, time
started = time.time()
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
time.sleep(1)
print(f"score={-(a.x - 3) ** 2}")
print(f"started={started}")
print(f"ended={time.time()}", flush=True)
"""


def covered(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def raw_jobs(kube, ns: str, image: str, values: list[float], mutators) -> tuple[float, float]:
    from fairing.deployers import pod as podlib
    from fairing.kube.logs import read_log

    tag = uuid.uuid4().hex[:5]
    names = [f"raw-{tag}-{i}" for i in range(len(values))]
    t0 = time.time()
    rv = None
    for name, v in zip(names, values):
        tpl = podlib.apply({"metadata": {"labels": {"bench-raw": tag}},
                            "spec": {"restartPolicy": "Never",
                                     "containers": [{"name": "main", "image": image, "args": ["--x", str(v)]}]}},
                           mutators)
        created = kube.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                               "spec": {"backoffLimit": 0, "template": tpl}}, ns)
        rv = rv or created["metadata"]["resourceVersion"]
    done: dict[str, str] = {}
    w = kube.watch("v1", "Pod", ns, label_selector=f"bench-raw={tag}", resource_version=rv)
    try:
        for _etype, p in w:
            sts = (p.get("status") or {}).get("containerStatuses") or []
            if sts and all("terminated" in (c.get("state") or {}) for c in sts):
                done[p["metadata"]["name"]] = p["metadata"]["name"]
                if len(done) == len(values):
                    break
    finally:
        w.stop()
    wall = time.time() - t0
    spans = []
    for pname in done:
        lines = dict(line.split("=", 1) for line in read_log(kube, pname, ns, "main") if "=" in line)
        spans.append((float(lines["started"]), float(lines["ended"])))
    for name in names:
        kube.delete("batch/v1", "Job", name, ns, propagation="Background")
    return wall, covered(spans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("-r", type=int, default=2, help="rounds (tune, then raw, each round)")
    a = ap.parse_args()
    import fairing
    import tests.rig
    from fairing.kube.client import Kube
    from tests.rig.node import real_node

    print("starting the rig (registry, base image, real node)...", flush=True)
    services = tests.rig.up(base=True)
    node = real_node()
    repo = f"{services['registry'].host}/bench-trials/t{uuid.uuid4().hex[:6]}"
    base = services["base_image"].docker
    ns = node.namespace
    values = [round(6 * i / max(a.trials - 1, 1), 3) for i in range(a.trials)]
    os.environ.pop("FAIRING_PROGRESS", None)
    kube = Kube(str(node.sa_kubeconfig), namespace=ns)
    # How long the run spends, after its last trial, waiting for the trial Jobs to be gone
    # (fairing.tune returns with nothing left behind; the raw side deletes after its timing).
    from fairing.tune import driver

    settled: list[float] = []
    plain_settle = driver.DeployerRunner.settle

    def timed_settle(self):
        t0 = time.time()
        try:
            plain_settle(self)
        finally:
            settled.append(time.time() - t0)

    driver.DeployerRunner.settle = timed_settle
    rows = []
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "train.py"
        script.write_text(SCRIPT)
        os.chdir(d)

        def tune() -> tuple[float, float, str]:
            t0 = time.time()
            r = fairing.tune(str(script), params={"x": values}, objective="score", goal="maximize",
                             trials=a.trials, parallel=a.trials, algorithm="grid", backend="jobs",
                             name=f"bt-{uuid.uuid4().hex[:5]}", registry=repo, base_image=base,
                             kubeconfig=str(node.sa_kubeconfig), namespace=ns, mutators=node.mutators(),
                             progress=False, timeout=300)
            wall = time.time() - t0
            assert r.status == "Succeeded" and len(r.trials) == a.trials, r
            return wall, covered([(t.metrics["started"], t.metrics["ended"]) for t in r.trials]), r.image

        _, _, image = tune()  # untimed: builds, pushes, and the node pulls the image
        for _ in range(a.r):
            tw, tc, _ = tune()
            rw, rc = raw_jobs(kube, ns, image, values, node.mutators())
            rows.append((tw, tc, rw, rc, settled[-1]))
    print(f"\n{a.trials} trials at once (1 s of work each) on the real node; seconds")
    print(f"{'round':6} {'tune wall':>10} {'running':>8} {'overhead':>9} {'(deletion)':>10} {'raw wall':>9} "
          f"{'running':>8} {'overhead':>9}")
    for i, (tw, tc, rw, rc, st) in enumerate(rows, 1):
        print(f"{i:<6} {tw:10.2f} {tc:8.2f} {tw - tc:9.2f} {st:10.2f} {rw:9.2f} {rc:8.2f} {rw - rc:9.2f}")
    print("(deletion: the tune's wait, after its last trial, until the trial Jobs are gone; part of its overhead)")
    to = statistics.median(r[0] - r[1] for r in rows)
    ro = statistics.median(r[2] - r[3] for r in rows)
    td = statistics.median(r[0] - r[1] - r[4] for r in rows)
    print(f"without the final deletion wait: {td:.2f} s, {td / ro:.2f}x the raw Jobs'")
    print(f"trial overhead: jobs backend {to:.2f} s vs raw Jobs {ro:.2f} s (median): {to / ro:.2f}x")
    print(f"target: jobs backend overhead <= 1.3x the raw Jobs' ({to / ro:.2f}x) ... {'PASS' if to <= 1.3 * ro else 'MISS'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores; figures move with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

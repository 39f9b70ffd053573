"""Hyper-parameter sweep benchmark: N training Jobs submitted concurrently (threads) against the
rig's control plane (kube-apiserver + kwok), tracked to completion, deleted.

    python bench/sweep.py [--trials 50] [--repeat 1]

Rows (each timed submit / wait / delete / total, median of --repeat runs):
  fairing     one TrainJob per trial from its own thread: package, build (append, shared layer
              cache) and push, create the Job, handle.wait(), handle.delete() — what a user writes;
  raw client  the real alternative: the same N Jobs, already-built image, created with the plain
              kubernetes client from threads, one label-selected watch until all finish, deleted.
The ratio is fairing / raw client. kwok's simulated pods take ~1-2 s from Pending to Succeeded,
so "wait" is mostly the cluster's own time. Nothing is asserted."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", "-n", type=int, default=50, help="jobs in the sweep (default 50)")
    p.add_argument("--repeat", "-r", type=int, default=1, help="runs per row (median reported)")
    args = p.parse_args()

    import tests.rig
    from fairing.kube.client import Kube
    from tests.reliability.sweep import census, raw_sweep, run_sweep

    print("starting the rig (registry, base image, control plane)...", flush=True)
    services = tests.rig.up(base=True, kube=True)
    reg, base, cp = services["registry"], services["base_image"], services["kube"]
    admin = Kube(cp.kubeconfig, namespace=cp.namespace)

    fairing_runs, raw_runs, problems = [], [], []
    with tempfile.TemporaryDirectory(prefix="fairing-bench-sweep-") as tmp:
        tmp = Path(tmp)
        for r in range(args.repeat):
            s = run_sweep(args.trials, registry=f"{reg.host}/bench", base_image=base.docker, namespace=cp.namespace,
                          kubeconfig=str(cp.sa_kubeconfig), workdir=tmp / f"run{r}", cache_dir=tmp / "cache")
            ok = sum(1 for v in s.statuses.values() if v == "Succeeded")
            left = census(admin, cp.namespace, s.sweep_id)
            if ok != args.trials or s.errors or left["jobs"]:
                problems.append(f"fairing run {r}: {ok}/{args.trials} succeeded, errors {list(s.errors.values())[:3]}, "
                                f"{left['jobs']} jobs left")
            fairing_runs.append(s.seconds)
            image = next(iter(s.handles.values())).manifests()[0]["spec"]["template"]["spec"]["containers"][0]["image"] \
                if s.handles else f"{reg.host}/fairing/python:3.11"
            raw_runs.append(raw_sweep(args.trials, image=image, namespace=cp.namespace, kubeconfig=str(cp.sa_kubeconfig)))

    def med(runs, key):
        return statistics.median(run[key] for run in runs)

    keys = ("submit", "wait", "delete", "total")
    print(f"\nsweep of {args.trials} training Jobs, concurrent, median of {args.repeat} run(s) (seconds)")
    print(f"{'':12}" + "".join(f"{k:>10}" for k in keys))
    for label, runs in (("fairing", fairing_runs), ("raw client", raw_runs)):
        print(f"{label:12}" + "".join(f"{med(runs, k):>10.1f}" for k in keys))
    print(f"{'ratio':12}" + "".join(f"{med(fairing_runs, k) / max(med(raw_runs, k), 1e-9):>9.2f}x" for k in keys))
    print(f"\nfairing: {args.trials / med(fairing_runs, 'submit'):.1f} trials/s packaged, built, pushed and submitted; "
          f"end to end {med(fairing_runs, 'total'):.1f}s for {args.trials} jobs")
    for line in problems:
        print("PROBLEM:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

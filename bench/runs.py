"""What run records cost: a `fair train` (local process) with the record against the same run with
the store on a path that cannot be written (recording then gives up at once), and the store's
throughput with concurrent writer processes against one writer.

    python bench/runs.py [--runs 7] [--writers 4] [--records 200]

Prints medians and ratios, and PASS/MISS against the targets (not asserted): recording adds
< 10% to a local run; 4 concurrent writers lose nothing and keep >= 50% of one writer's rate."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import sys, time
import fairing.runs as runs
from fairing.runs.store import Store
store, n = Store(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    r = runs.start("train", entry=f"w{i}.py", params={"i": i}, store=store, git=False)
    r.log(f"step=1 loss={i}")
    r.finish("Succeeded")
"""


def train_once(tmp: Path, store: str) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "MLFLOW_"))},
           "FAIRING_RUNS": store, "PYTHONPATH": str(ROOT), "KUBECONFIG": ""}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fairing.cli", "train", str(tmp / "train.py"), "--local-mode", "process"],
                   cwd=tmp, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def writers(db: Path, procs: int, per: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    ps = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(per)], cwd=ROOT) for _ in range(procs)]
    for p in ps:
        assert p.wait() == 0
    took = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT))
    from fairing.runs.store import Store

    return took, len(Store(db).list())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--records", type=int, default=200)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "train.py").write_text("for s in range(3):\n    print(f'step={s} loss={1/(s+1)}')\n")
        (tmp / "blocker").write_text("a file, so blocker/runs.db cannot be created")
        on, off = [], []
        for i in range(a.runs):
            on.append(train_once(tmp, str(tmp / "runs.db")))
            off.append(train_once(tmp, str(tmp / "blocker" / "runs.db")))
        m_on, m_off = statistics.median(on), statistics.median(off)
        overhead = (m_on - m_off) / m_off
        print(f"fair train (local process): recorded {m_on * 1000:.0f} ms, not recorded {m_off * 1000:.0f} ms, "
              f"ratio {m_on / m_off:.3f} ({overhead * 100:+.1f}%)  {'PASS' if overhead < 0.10 else 'MISS'} (< +10%)")
        one, n1 = writers(tmp / "one.db", 1, a.records)
        many, nn = writers(tmp / "many.db", a.writers, a.records)
        r1, rn = n1 / one, nn / many
        ok = nn == a.writers * a.records and rn >= 0.5 * r1
        print(f"store: 1 writer {r1:.0f} runs/s; {a.writers} concurrent writers {rn:.0f} runs/s "
              f"(ratio {rn / r1:.2f}), {nn}/{a.writers * a.records} records kept  {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()

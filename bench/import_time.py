"""How long `import fairing` takes in a fresh interpreter, against `import json` as the baseline.

    python bench/import_time.py [--runs 15]

Prints the median wall time of each, fairing's own cost (the difference), the slowest modules
from `python -X importtime`, and PASS/MISS against the 150 ms target (not asserted)."""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

TARGET_MS = 150.0


def wall(stmt: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def slowest(stmt: str, n: int = 8) -> list[tuple[int, str]]:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), m.group(3).count(" ") - 1, m.group(4)))
    top = [(cum, name) for cum, depth, name in rows if depth <= 1]
    return sorted(top, reverse=True)[:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    subprocess.run([sys.executable, "-c", "import fairing"], check=True)  # warm the page cache
    base = wall("import json", args.runs)
    fair = wall("import fairing", args.runs)
    own = fair - base
    print(f"import time, median of {args.runs} fresh interpreters")
    rows = [("python -c 'import json'", base, "(baseline: interpreter start)"),
            ("python -c 'import fairing'", fair, f"({fair / base:.2f}x baseline)"),
            ("fairing itself", own, "")]
    for label, ms, note in rows:
        print(f"  {label:32} {ms:8.1f} ms  {note}")
    print("slowest top-level imports (python -X importtime, cumulative):")
    for cum, name in slowest("import fairing"):
        print(f"  {cum / 1000:8.1f} ms  {name}")
    verdict = "PASS" if fair < TARGET_MS else "MISS"
    print(f"target: import fairing < {TARGET_MS:.0f} ms wall ... {verdict} ({fair:.1f} ms)")


if __name__ == "__main__":
    main()

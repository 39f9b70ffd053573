"""Build once, run N trials (`fair tune`) against the real alternative of one `fair train` per
trial (each packages, builds and pushes an image with that trial's arguments, then runs it).

    python bench/tune.py [--trials 4] [--mode container|process]   (bench/run runs it too)

Both run the same script with the same parameter values, sequentially (parallel 1), on the rig's
Podman engine and registry (container mode; `eval "$(python -m tests.rig env)"` first) or as local
processes. Prints wall times, the ratio, manifest pushes per run, and PASS/MISS against the target
(tune no slower than the per-trial loop; not asserted)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "import argparse\np = argparse.ArgumentParser()\np.add_argument('--x', type=float)\n" \
         "a = p.parse_args()\nprint(f'score={-(a.x - 3) ** 2}')\n"


def fair(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairing.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)


def manifest_puts(repo: str) -> int:
    log = Path(os.environ.get("FAIRING_CACHE", Path.home() / ".cache" / "fairing")) / "rig" / "registry-plain.log"
    if not log.exists():
        return -1
    return sum(1 for line in log.read_text(errors="replace").splitlines() if f'"PUT /v2/{repo}/manifests/' in line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    rig = bool(os.environ.get("FAIRING_RIG_REGISTRY") and os.environ.get("DOCKER_HOST"))
    p.add_argument("--mode", choices=("container", "process"), default="container" if rig else "process",
                   help="default: container when the rig's env is set, else process")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAIRING_PROGRESS": "0"}
    common = ["--local-mode", a.mode, "--deployer", "local"]
    registry = os.environ.get("FAIRING_RIG_REGISTRY")
    base = os.environ.get("FAIRING_RIG_BASE_IMAGE")
    if a.mode == "container":
        if not (registry and base and env.get("DOCKER_HOST")):
            sys.exit('container mode needs the rig: eval "$(python -m tests.rig env)"')
    with tempfile.TemporaryDirectory() as d:
        cwd = Path(d)
        (cwd / "train.py").write_text(SCRIPT)
        values = [round(6 * i / max(a.trials - 1, 1), 3) for i in range(a.trials)]
        team_t, team_l = f"bt{uuid.uuid4().hex[:6]}", f"bl{uuid.uuid4().hex[:6]}"
        reg_t = ["--registry", f"{registry}/{team_t}", "--base-image", base] if a.mode == "container" else []
        reg_l = ["--registry", f"{registry}/{team_l}", "--base-image", base] if a.mode == "container" else []
        t0 = time.perf_counter()
        out = fair(["tune", "train.py", "--param", "x=" + ",".join(map(str, values)), "--objective", "score",
                    "--maximize", "--trials", str(a.trials), "--parallel", "1", "--algorithm", "grid",
                    *common, *reg_t, "-o", "json"], cwd, env)
        tune_s = time.perf_counter() - t0
        res = json.loads(out.stdout)
        assert res["status"] == "Succeeded" and len(res["trials"]) == a.trials, res
        t0 = time.perf_counter()
        for v in values:
            r = fair(["train", "train.py", *common, *reg_l, "--", "--x", str(v)], cwd, env)
            assert "score=" in r.stdout, r.stdout + r.stderr
        loop_s = time.perf_counter() - t0
    print(f"{a.trials} trials, sequential, local {a.mode}")
    print(f"  {'fair tune (build once)':34} {tune_s:7.2f} s  {tune_s / a.trials:6.2f} s/trial")
    print(f"  {'fair train per trial':34} {loop_s:7.2f} s  {loop_s / a.trials:6.2f} s/trial")
    print(f"  ratio per-trial loop / tune: {loop_s / tune_s:.2f}x")
    if a.mode == "container":
        print(f"  manifest pushes: tune {manifest_puts(team_t + '/fairing-train')}, "
              f"loop {manifest_puts(team_l + '/fairing-train')}")
    verdict = "PASS" if tune_s <= loop_s else "MISS"
    print(f"target: fair tune no slower than one fair train per trial ... {verdict}")


if __name__ == "__main__":
    main()

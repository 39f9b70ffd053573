"""The edit-run loop on the rig's real node: `fair train loop.py` after a one-line code change,
against a raw pod started by the same client (this process, fairing's Kube client: create the Pod,
watch it until its container starts, follow its log).

    python bench/loop.py [-n 3]          (bench/run runs it too)

The script is one line: `import time; print("loop", <iteration>, time.time(), flush=True)`. Its
printed wall time marks when the container is about to exit (the API's finishedAt has one-second
resolution; the interpreter's shutdown after the print, ~20 ms, makes the "return after exit" figure
an over-estimate, never an under-estimate). Each iteration changes the script (the iteration
number), so every `fair train` builds, pushes and pulls a new code layer, as after an edit.

`fair` runs with bytecode, as an installed package would (this machine's shells set
PYTHONDONTWRITEBYTECODE; the bench gives fair a pycache directory of its own, filled by an
untimed warm-up run).

The raw pod runs the same line with `python3 -c` in the base image (already on the node: the
new image's only new layer is the code's, a few kB). Both pods run on the real node in its
namespace; fair with its least-privilege ServiceAccount, the raw pod with the admin
kubeconfig (that ServiceAccount may not create bare pods).

The split, from the `fair` process's start (a watch on the namespace's pods and events in this
process timestamps what the API says, as it arrives): package, build, push, create (fair's own
stages, -o json), scheduled (pod bound), pulled (the kubelet's Pulled/ Pulling event), started
(container running), first line (printed by fair), exit seen (the API shows the container
terminated), returned (fair exits).

Targets (issue 23): first line <= 1.2x the raw pod's; the command returns <= 0.3 s after the
container exits."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class PodClock:
    """Watches pods and events of a namespace; remembers when each pod first reached each state."""

    def __init__(self, kube, namespace: str):
        self.kube, self.ns = kube, namespace
        self.seen: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.watches = []

    def mark(self, pod: str, what: str) -> None:
        now = time.time()
        with self.lock:
            self.seen.setdefault(pod, {}).setdefault(what, now)

    def start(self) -> "PodClock":
        for kind, api, fn in (("Pod", "v1", self.on_pod), ("Event", "v1", self.on_event)):
            w = self.kube.watch(api, kind, self.ns, resource_version=self.kube.list(
                api, kind, self.ns)["metadata"]["resourceVersion"])
            self.watches.append(w)
            threading.Thread(target=self.pump, args=(w, fn), daemon=True).start()
        return self

    @staticmethod
    def pump(w, fn) -> None:
        try:
            for etype, obj in w:
                fn(etype, obj)
        except Exception:  # noqa: BLE001 - stopped
            pass

    def on_pod(self, etype: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        self.mark(name, "seen")
        if (pod.get("spec") or {}).get("nodeName"):
            self.mark(name, "scheduled")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            st = cs.get("state") or {}
            if "running" in st or "terminated" in st:
                self.mark(name, "started")
            if "terminated" in st:
                self.mark(name, "exit")

    def on_event(self, etype: str, ev: dict) -> None:
        obj = ev.get("involvedObject") or {}
        if obj.get("kind") == "Pod" and ev.get("reason") in ("Pulled", "Pulling"):
            self.mark(obj.get("name", "?"), "pulled" if ev["reason"] == "Pulled" else "pulling")

    def of_prefix(self, prefix: str) -> dict[str, float]:
        with self.lock:
            for name, marks in self.seen.items():
                if name.startswith(prefix + "-") or name == prefix:
                    return dict(marks)
        return {}

    def stop(self) -> None:
        for w in self.watches:
            w.stop()


def run_fair(cwd: Path, env: dict, name: str, ns: str, registry: str, base: str) -> dict:
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "fairing.cli", "train", "loop.py", "--registry", registry,
                          "--base-image", base, "-n", ns, "--name", name, "-o", "json"],
                         cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    first = None
    printed = None
    err_lines = []
    for line in p.stderr:  # with -o json the log goes to stderr, the JSON document to stdout
        text = line.split("] ", 1)[-1]  # "[pod] loop 3 1796418530.42"
        if first is None and text.startswith("loop "):
            first = time.time()
            printed = float(text.split()[2])
        err_lines.append(line)
    out = p.stdout.read()
    p.wait()
    returned = time.time()
    if p.returncode != 0 or first is None:
        raise RuntimeError(f"fair train failed ({p.returncode}): {''.join(err_lines)[-2000:]}")
    doc = json.loads(out)
    stages = {s["stage"]: s["seconds"] for s in doc.get("stages", [])}
    return {"t0": t0, "first": first, "printed": printed, "returned": returned, "stages": stages,
            "status": doc.get("status")}


def run_raw(kube, ns: str, base: str, mutators, line: str) -> dict:
    """A bare Pod created, watched and followed by this process's client: time to its first line."""
    from fairing.deployers import pod as podlib
    from fairing.kube.logs import read_log

    name = f"raw-{uuid.uuid4().hex[:6]}"
    tpl = {"metadata": {"name": name, "labels": {"bench": "loop-raw"}},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "main", "image": base, "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c", line]}]}}
    tpl = podlib.apply(tpl, mutators)
    manifest = {"apiVersion": "v1", "kind": "Pod", **tpl}
    t0 = time.time()
    created = kube.create(manifest, ns)
    w = kube.watch("v1", "Pod", ns, name=name, resource_version=created["metadata"]["resourceVersion"])
    try:
        for _etype, pod in w:
            sts = (pod.get("status") or {}).get("containerStatuses") or []
            if any("running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {}) for c in sts):
                break
    finally:
        w.stop()
    first = None
    for text in read_log(kube, name, ns, "main", follow=True):
        if text.startswith("loop ") and first is None:
            first = time.time()
    done = time.time()
    kube.delete("v1", "Pod", name, ns)
    return {"t0": t0, "first": first, "ended": done, "name": name}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="iterations (each: one fair train, one raw pod)")
    a = ap.parse_args()
    import tests.rig
    from fairing.kube.client import Kube
    from tests.rig.node import real_node

    print("starting the rig (registry, base image, real node)...", flush=True)
    services = tests.rig.up(base=True)
    node = real_node()
    registry = services["registry"].host + "/bench-loop"
    base = services["base_image"].docker
    ns = node.namespace
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "DOCKER_")) and k != "KUBECONFIG"}
    for k in ("FAIRING_CACHE", "FAIRING_RIG_RUN_DIR"):
        if k in os.environ:
            keep[k] = os.environ[k]
    # fair as installed: with bytecode (this machine's shells set PYTHONDONTWRITEBYTECODE, which
    # would make every `fair` compile fairing from source, ~0.2-0.3 s; an installed package has
    # its .pyc files). The cache is this run's own, filled by the untimed warm-up iteration.
    keep.pop("PYTHONDONTWRITEBYTECODE", None)
    pycache = tempfile.mkdtemp(prefix="bench-loop-pyc-")
    env = {**keep, "KUBECONFIG": str(node.sa_kubeconfig), **node.settings_env(), "PYTHONPATH": str(ROOT),
           "FAIRING_PROGRESS": "0", "PYTHONPYCACHEPREFIX": pycache}
    kube = Kube(str(node.sa_kubeconfig), namespace=ns)
    admin = Kube(str(node.kubeconfig), namespace=ns)
    clock = PodClock(admin, ns).start()
    rows, raws = [], []
    tag = uuid.uuid4().hex[:4]
    with tempfile.TemporaryDirectory() as d:
        cwd = Path(d)
        # One untimed warm-up of each: the base image and the dependency-free layers are in the
        # registry and on the node, as in an edit-run loop after the first run.
        for i in range(a.n + 1):
            line = f'import time; print("loop", {i}, time.time(), flush=True)'
            (cwd / "loop.py").write_text(line + "\n")
            name = f"loop-{tag}-{i}"
            r = run_fair(cwd, env, name, ns, registry, base)
            r["marks"] = clock.of_prefix(name)
            raw = run_raw(admin, ns, base, node.mutators(), line)
            raw["marks"] = clock.of_prefix(raw["name"])
            subprocess.run([sys.executable, "-m", "fairing.cli", "delete", name, "-n", ns], cwd=cwd, env=env,
                           capture_output=True)
            if i == 0:
                continue
            rows.append(r)
            raws.append(raw)
    clock.stop()

    def rel(r: dict, key: str) -> float | None:
        v = r["marks"].get(key)
        return None if v is None else v - r["t0"]

    cols = ("package", "build", "push", "create", "scheduled", "pulled", "started", "first line", "exit", "exit seen",
            "returned")
    print(f"\n`fair train loop.py` after a one-line change, on the real node ({a.n} runs; seconds from the command's start)")
    print("run  " + " ".join(f"{c:>10}" for c in cols))
    firsts, gaps, raw_firsts = [], [], []
    for i, r in enumerate(rows, 1):
        st = r["stages"]
        vals = [st.get("package"), st.get("build"), st.get("push"), st.get("deploy"), rel(r, "scheduled"),
                rel(r, "pulled"), rel(r, "started"), r["first"] - r["t0"], r["printed"] - r["t0"],
                rel(r, "exit"), r["returned"] - r["t0"]]
        print(f"{i:<4} " + " ".join(f"{v:10.2f}" if v is not None else f"{'-':>10}" for v in vals))
        firsts.append(r["first"] - r["t0"])
        gaps.append(r["returned"] - r["printed"])
    print("(package/build/push/create: durations of fair's own stages; the rest: time since the command started; "
          "exit = the script's last printed time.time())")
    print(f"\nraw pod of the base image, same client ({a.n} runs; seconds from create)")
    print("run  " + " ".join(f"{c:>10}" for c in ("scheduled", "started", "first line", "log ended")))
    for i, r in enumerate(raws, 1):
        vals = [rel(r, "scheduled"), rel(r, "started"), r["first"] - r["t0"], r["ended"] - r["t0"]]
        raw_firsts.append(r["first"] - r["t0"])
        print(f"{i:<4} " + " ".join(f"{v:10.2f}" if v is not None else f"{'-':>10}" for v in vals))
    f_med, r_med, g_med = statistics.median(firsts), statistics.median(raw_firsts), statistics.median(gaps)
    seen = [r["returned"] - r["marks"]["exit"] for r in rows if "exit" in r["marks"]]
    lag = [r["marks"]["exit"] - r["printed"] for r in rows if "exit" in r["marks"]]
    print(f"\nfirst line: fair {f_med:.2f} s vs raw pod {r_med:.2f} s (median): {f_med / r_med:.2f}x")
    print(f"command returned after the container's exit: {g_med:.2f} s (median; runs: "
          + ", ".join(f"{g:.2f}" for g in gaps) + ")")
    if seen:
        print(f"  of which the kubelet reporting the exit to the API (exit seen - exit; its pod status relist runs "
              f"every 1 s): {statistics.median(lag):.2f} s (runs: " + ", ".join(f"{x:.2f}" for x in lag) + ")")
        print(f"  and fair, from the API showing the exit to the command's return: {statistics.median(seen):.2f} s "
              f"(runs: " + ", ".join(f"{x:.2f}" for x in seen) + ")")
    print(f"target: first line <= 1.2x the raw pod's ({f_med / r_med:.2f}x) ... {'PASS' if f_med <= 1.2 * r_med else 'MISS'}")
    print(f"target: the command returns <= 0.3 s after the container exits ({g_med:.2f} s) ... "
          f"{'PASS' if g_med <= 0.3 else 'MISS'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores; figures move with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The edit-run loop on the rig's real node: `fair train loop.py` after a one-line code change, and
`fairing.config.run(f, wait=True)` from a warm notebook kernel, against raw workloads started by
this process's client (fairing's Kube: create, watch until the container starts, follow its log).

    python bench/loop.py [-n 4] [--no-kernel] [--sleep S]     (bench/run runs it too)

The script is one line: `import time; print("loop", <iteration>, time.time(), flush=True)`. Its
printed wall time marks when the container is about to exit (the API's finishedAt has one-second
resolution; the interpreter's shutdown after the print, ~20 ms, makes the "return after exit" figure
an over-estimate, never an under-estimate). Each iteration changes the script (the iteration
number, and a tag per bench run), so every run builds, pushes and pulls a new code layer, as after
an edit.

`fair` runs with bytecode, as an installed package would (this machine's shells set
PYTHONDONTWRITEBYTECODE; the bench gives fair a pycache directory of its own, filled by an
untimed warm-up run).

Cases, each iteration, all on the real node in its namespace (fair and the kernel with its
least-privilege ServiceAccount, the raw ones with the admin kubeconfig, which may create bare pods):
- fair: `fair train loop.py`, timed from the command's start;
- kernel: a python3 ipykernel (jupyter_client, as tests/test_notebook_kernel.py) with fairing
  imported and one run done; the cell defines a new function (the edit, untimed) and the next cell,
  `fairing.config.run(f, wait=True)`, is timed from its execute request to its idle status;
- raw pod: a bare Pod of the base image (already on the node) running the line with `python3 -c`;
- raw pod, new image: a bare Pod of an image `fair build` made just before (untimed) of a script
  like fair's: the same image as fair runs, a new code layer the node pulls;
- raw Job: a batch/v1 Job of the base image: the Job controller's part (Job to pod).

The split, from the start (a watch on the namespace's pods, events and Jobs in this process
timestamps what the API says, as it arrives): package, build, push, create (fair's own stages, -o
json / RunResult.stages), job and pod (first seen), scheduled, pulled (the kubelet's event), started
ev (the kubelet's Started event), exit (printed by the script), started (the pod's status shows the
container running), first line, exit seen (the status shows it terminated), returned.

The kubelet learns that a container started or exited by relisting the runtime every second, and
only then shows it in the pod's status and serves its log: first lines and exits land on that 1 s
grid. So each iteration starts every case at the same phase after a relist (seen as a status change
on the watch), and the iterations sweep the phases; the figures are means over them.

Targets (issue 23): first line <= 1.2x the raw pod's of the same image; the command (or cell)
returns <= 0.3 s after the container exits."""
from __future__ import annotations

import argparse
import json
import os
import re
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
        self.tick: float | None = None
        self.lock = threading.Lock()
        self.watches = []

    def mark(self, pod: str, what: str) -> None:
        now = time.time()
        with self.lock:
            marks = self.seen.setdefault(pod, {})
            if what in ("started", "exit") and what not in marks:
                self.tick = now  # a container's start or exit reaches the API just after a relist
            marks.setdefault(what, now)

    def at_phase(self, phase: float) -> None:
        """Sleep until `phase` seconds after one of the kubelet's relists. It relists its containers
        every second and a pod's status (and with it the log) shows a started container only after
        the next relist, so a run's first line lands on that 1 s grid: every case of an iteration
        starts at the same phase, and the iterations sweep the phases (a user's edit comes at any)."""
        with self.lock:
            tick = self.tick
        if tick is None:
            return
        now = time.time()
        target = tick + phase - 0.02  # the status arrives ~20 ms after its relist
        target += max(0, int(now + 0.05 - target) + 1)
        time.sleep(max(0.0, target - now))

    def start(self) -> "PodClock":
        for kind, api, fn in (("Pod", "v1", self.on_pod), ("Event", "v1", self.on_event),
                              ("Job", "batch/v1", self.on_job)):
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
        reason = ev.get("reason")
        if obj.get("kind") == "Pod" and reason in ("Pulled", "Pulling", "Created", "Started"):
            # Created/Started: the kubelet's events, sent as it starts the container (the pod's
            # status says so only after its next relist of the runtime, up to 1 s later).
            self.mark(obj.get("name", "?"), {"Pulled": "pulled", "Pulling": "pulling", "Created": "created event",
                                             "Started": "started event"}[reason])
            # "Successfully pulled image ... in 121ms (121ms including waiting)": the kubelet's own figure.
            m = re.search(r"pulled image .* in ([0-9.]+)(ms|s) ", ev.get("message") or "")
            if m:
                with self.lock:
                    self.seen.setdefault(obj.get("name", "?"), {})["pull seconds"] = \
                        float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)

    def on_job(self, etype: str, job: dict) -> None:
        self.mark("job/" + job["metadata"]["name"], "seen")

    def job(self, name: str) -> dict[str, float]:
        with self.lock:
            return dict(self.seen.get("job/" + name, {}))

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


def run_raw(kube, ns: str, image: str, mutators, line: str | None, *, kind: str = "Pod") -> dict:
    """A bare Pod (or a batch/v1 Job of one pod) created, watched and followed by this process's
    client: time to its first line. `line`: run with `python3 -c`; None: the image's entrypoint."""
    from fairing.deployers import pod as podlib
    from fairing.kube.logs import read_log

    name = f"raw-{kind.lower()}-{uuid.uuid4().hex[:6]}"
    main = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}
    if line is not None:
        main["command"] = ["python3", "-c", line]
    tpl = {"metadata": {"labels": {"bench": "loop-raw", "bench-run": name}},
           "spec": {"restartPolicy": "Never", "containers": [main]}}
    tpl = podlib.apply(tpl, mutators)
    if kind == "Pod":
        manifest = {"apiVersion": "v1", "kind": "Pod", **tpl, "metadata": {**tpl["metadata"], "name": name}}
    else:
        manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                    "spec": {"backoffLimit": 0, "template": tpl}}
    t0 = time.time()
    created = kube.create(manifest, ns)
    made = time.time()
    # The pod: this one, or the Job's (found by label; watched from before it can exist).
    w = kube.watch("v1", "Pod", ns, label_selector=f"bench-run={name}",
                   resource_version=created["metadata"]["resourceVersion"])
    pod = None
    try:
        for _etype, obj in w:
            sts = (obj.get("status") or {}).get("containerStatuses") or []
            if any("running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {}) for c in sts):
                pod = obj["metadata"]["name"]
                break
    finally:
        w.stop()
    first = printed = None
    for text in read_log(kube, pod, ns, "main", follow=True):
        if text.startswith("loop ") and first is None:
            first = time.time()
            printed = float(text.split()[2])
    done = time.time()
    if kind == "Pod":
        kube.delete("v1", "Pod", name, ns)
    else:
        kube.delete("batch/v1", "Job", name, ns, propagation="Background")
    return {"t0": t0, "created": made, "first": first, "printed": printed, "ended": done, "name": pod}


class Kernel:
    """A warm notebook kernel (ipykernel, driven with jupyter_client as tests/test_notebook_kernel.py
    does), fairing imported and configured by environment as a user's fairing.yaml would be; each
    run defines a new function (the edit) and calls fairing.config.run(f, wait=True) in one cell."""

    def __init__(self, env: dict, cwd: Path, registry: str, base: str, ns: str):
        from jupyter_client.manager import KernelManager

        kenv = {**env, "FAIRING_REGISTRY": registry, "FAIRING_BASE_IMAGE": base, "FAIRING_NAMESPACE": ns,
                "FAIRING_DEPLOYER": "job"}
        kenv.pop("FAIRING_PROGRESS", None)  # a notebook shows the log (and progress) as a person would see it
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=kenv, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.execute("import json, fairing")

    def execute(self, code: str, timeout: float = 300) -> tuple[float, list[tuple[float, dict]]]:
        import queue

        t0 = time.time()
        msg_id = self.kc.execute(code)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            out.append((time.time(), msg))
            if msg["msg_type"] == "error":
                raise RuntimeError("kernel: " + "\n".join(msg["content"]["traceback"])[-2000:])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return t0, out
        raise RuntimeError(f"kernel cell did not finish within {timeout}s")

    def define(self, tag: str, i: int, sleep: float = 0.0) -> None:
        """The edit: a new function in the kernel."""
        pre = f"    time.sleep({sleep:g})\n" if sleep else ""
        self.execute(f"def loop_{tag}():\n    import time\n{pre}    print('loop', {i}, time.time(), flush=True)\n")

    def run(self, tag: str, i: int) -> dict:
        fname = f"loop_{tag}"
        t0, msgs = self.execute(f"res = fairing.config.run({fname}, wait=True)")
        first = printed = None
        for t, m in msgs:
            text = m["content"].get("text", "") if m["msg_type"] == "stream" else ""
            for ln in text.splitlines():
                if ln.startswith("loop ") and first is None:
                    first, printed = t, float(ln.split()[2])
        if first is None:
            raise RuntimeError(f"kernel: no line printed: {[m['msg_type'] for _, m in msgs]}")
        returned = msgs[-1][0]
        _, info = self.execute("print(json.dumps([res.status, res.handle.name, res.stages]))")
        status, job, stages = json.loads("".join(m["content"]["text"] for _, m in info if m["msg_type"] == "stream"))
        self.execute("res.handle.delete()")
        return {"t0": t0, "first": first, "printed": printed, "returned": returned, "status": status,
                "job_name": job, "stages": {s["stage"]: s["seconds"] for s in stages}}

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def build_image(cwd: Path, env: dict, registry: str, base: str) -> str:
    """`fair build` of the script in `cwd` (untimed): an image with a code layer the node has not pulled."""
    p = subprocess.run([sys.executable, "-m", "fairing.cli", "build", "loop.py", "--registry", registry,
                        "--base-image", base, "-o", "json"], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"fair build failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout)["image"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=4, help="iterations (each: one of every case, at its own phase)")
    ap.add_argument("--no-kernel", dest="kernel", action="store_false",
                    help="skip fairing.config.run() in a warm notebook kernel")
    ap.add_argument("--sleep", type=float, default=0.0,
                    help="the script sleeps this long before its line: a container that lives across a relist "
                         "of the kubelet (a real script's), whose log can be followed before it exits")
    ap.add_argument("--no-attach", dest="attach", action="store_false",
                    help="leave the namespace's ServiceAccount without pods/attach (the rig's Role): fair's Jobs "
                         "then take the log path, as before fairing attached")
    a = ap.parse_args()
    pre = f"time.sleep({a.sleep:g}); " if a.sleep else ""
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
    admin = Kube(str(node.kubeconfig), namespace=ns)
    clock = PodClock(admin, ns).start()
    if a.attach:
        grant_attach(admin, ns)
    cases: dict[str, list[dict]] = {"fair": [], "kernel": [], "raw pod": [], "raw pod, new image": [],
                                     "raw Job": []}
    tag = uuid.uuid4().hex[:4]
    kernel = Kernel(env, Path(tempfile.mkdtemp(prefix="bench-loop-kernel-")), registry, base, ns) \
        if a.kernel else None
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as d2:
        cwd, cwd2 = Path(d), Path(d2)
        # One untimed warm-up of each: the base image and the dependency-free layers are in the
        # registry and on the node, as in an edit-run loop after the first run.
        for i in range(a.n + 1):
            line = f'import time; {pre}print("loop", {i}, time.time(), flush=True)'
            # The tag makes every image new to the node (a script seen in an earlier run would not be pulled).
            (cwd / "loop.py").write_text(f"{line}  # {tag}\n")
            name = f"loop-{tag}-{i}"
            got = {}
            phase = (i - 0.5) / a.n if i else 0.5
            clock.at_phase(phase)
            r = run_fair(cwd, env, name, ns, registry, base)
            r["marks"], r["job"] = clock.of_prefix(name), clock.job(name)
            got["fair"] = r
            subprocess.run([sys.executable, "-m", "fairing.cli", "delete", name, "-n", ns], cwd=cwd, env=env,
                           capture_output=True)
            if kernel is not None:
                kernel.define(f"{tag}_{i}", i, a.sleep)
                clock.at_phase(phase)
                k = kernel.run(f"{tag}_{i}", i)
                k["marks"], k["job"] = clock.of_prefix(k["job_name"]), clock.job(k["job_name"])
                got["kernel"] = k
            for kind, key in (("Pod", "raw pod"), ("Job", "raw Job")):
                clock.at_phase(phase)
                raw = run_raw(admin, ns, base, node.mutators(), line, kind=kind)
                raw["marks"] = clock.of_prefix(raw["name"])
                raw["job"] = clock.job(raw["name"].rsplit("-", 1)[0]) if kind == "Job" else {}
                got[key] = raw
            # The same kind of image fair runs: the base plus a code layer the node has not pulled.
            (cwd2 / "loop.py").write_text(f'import time; {pre}print("loop", {1000 + i}, time.time(), flush=True)  # {tag}\n')
            image = build_image(cwd2, env, registry, base)
            clock.at_phase(phase)
            raw = run_raw(admin, ns, image, node.mutators(), None)
            raw["marks"], raw["job"] = clock.of_prefix(raw["name"]), {}
            got["raw pod, new image"] = raw
            if i == 0:
                continue
            for key, v in got.items():
                cases[key].append(v)
    if kernel is not None:
        kernel.close()
    clock.stop()
    if a.attach:
        grant_attach(admin, ns, revoke=True)
    report(cases, a.n)
    print("fair's Jobs: " + ("attached (the ServiceAccount was granted pods/attach for the bench)" if a.attach
                             else "the log path (--no-attach)"))
    return 0


def grant_attach(admin, ns: str, *, revoke: bool = False) -> None:
    """pods/attach for the namespace's ServiceAccount (what fair runs as here), the way a cluster
    admin grants it to users, so fair's followed Jobs get their output through attach
    (fairing.kube.attach); revoked at the end. The rig's own Role has no pods/attach."""
    from tests.rig.kube import SA_NAME

    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": "bench-loop-attach", "namespace": ns}
    if revoke:
        for kind in ("RoleBinding", "Role"):
            admin.delete(rbac, kind, meta["name"], ns)
        return
    admin.apply({"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": [
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create", "get"]}]})
    admin.apply({"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": meta["name"]},
                 "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": ns}]})


SPLIT = ("package", "build", "push", "create", "job", "pod", "scheduled", "pulled", "started ev", "exit",
         "started", "first line", "exit seen", "returned")


def split_of(r: dict) -> list[float | None]:
    """The split of one run, from its start (fair's stages: their durations)."""
    m, t0 = r["marks"], r["t0"]

    def rel(key: str, marks: dict | None = None) -> float | None:
        v = (m if marks is None else marks).get(key)
        return None if v is None else v - t0

    st = r.get("stages") or {}
    create = r.get("created")
    return [st.get("package"), st.get("build"), st.get("push"),
            st.get("deploy") if st else (None if create is None else create - t0),
            rel("seen", r.get("job") or {}), rel("seen"), rel("scheduled"), rel("pulled"), rel("started event"),
            None if r.get("printed") is None else r["printed"] - t0, rel("started"),
            None if r.get("first") is None else r["first"] - t0, rel("exit"),
            (r.get("returned") or r.get("ended")) - t0]


def report(cases: dict[str, list[dict]], n: int) -> None:
    med = statistics.median
    # First lines and returns land on the kubelet's 1 s relist grid: their mean over the phases
    # swept (see PodClock.at_phase) is what a user sees on average.
    avg = statistics.fmean
    print(f"\nthe edit-run loop on the real node, {n} runs of each case (seconds from the command's start or the "
          f"create call)")
    print("case                 run " + " ".join(f"{c:>10}" for c in SPLIT))
    for key, rows in cases.items():
        for i, r in enumerate(rows, 1):
            print(f"{key:<20} {i:<3} " + " ".join(f"{v:10.2f}" if v is not None else f"{'-':>10}"
                                                  for v in split_of(r)))
    print("(package/build/push/create: durations of fair's own stages (raw: the create call's return); job/pod: "
          "the object first seen on a watch; started ev: the kubelet's Started event; exit: the script's printed "
          "time.time(); started/exit seen: the pod's status shows the container running/terminated; returned: "
          "the command's exit, the cell's idle, or a raw pod's log end)")

    def firsts(key: str) -> list[float]:
        return [r["first"] - r["t0"] for r in cases[key]]

    raw, fresh, job = avg(firsts("raw pod")), avg(firsts("raw pod, new image")), avg(firsts("raw Job"))
    pod_seen = [r["marks"]["seen"] - r["created"] for r in cases["raw Job"] if "seen" in r["marks"]]
    print(f"\nraw pods, first line (mean over the phases): of the base image {raw:.2f} s; of a new image (its code layer pulled) "
          f"{fresh:.2f} s (the kubelet's pull: {med([r['marks'].get('pull seconds', 0) for r in cases['raw pod, new image']]):.2f} s); "
          f"a raw Job of the base image {job:.2f} s")
    print(f"the Job controller (Kubernetes'): its pod appears {med(pod_seen):.2f} s after the Job's create returned "
          f"(runs: " + ", ".join(f"{x:.2f}" for x in pod_seen) + f"); first line {job - raw:+.2f} s vs the raw pod")
    lines = []
    for key, label in (("fair", "fair train"), ("kernel", "config.run() in a warm kernel")):
        if not cases[key]:
            continue
        f = avg(firsts(key))
        gaps = [r["returned"] - r["printed"] for r in cases[key]]
        to_job = [r["job"]["seen"] - r["t0"] for r in cases[key] if "seen" in r["job"]]
        pulls = [r["marks"]["pull seconds"] for r in cases[key] if "pull seconds" in r["marks"]]
        print(f"\n{label}: first line {f:.2f} s (mean over the phases): {f / fresh:.2f}x the raw pod of a new image, "
              f"{f / raw:.2f}x the raw pod of the base image (already on the node)")
        print(f"  start to the Job on the API (ours): {med(to_job):.2f} s; Job to pod (the Job controller's): "
              f"{med([r['marks']['seen'] - r['job']['seen'] for r in cases[key] if 'seen' in r['job']]):.2f} s; "
              f"pull of the new layer (the kubelet's Pulled event): "
              f"{med(pulls) if pulls else float('nan'):.2f} s")
        print(f"  returned after the container's exit: {avg(gaps):.2f} s (mean; runs: "
              + ", ".join(f"{g:.2f}" for g in gaps) + ")")
        lag = [r["marks"]["exit"] - r["printed"] for r in cases[key] if "exit" in r["marks"]]
        seen = [r["returned"] - r["marks"]["exit"] for r in cases[key] if "exit" in r["marks"]]
        if seen:
            print(f"    of which the kubelet reporting the exit (exit seen - exit; its relist runs every 1 s): "
                  f"{avg(lag):.2f} s; {label}, from the API showing it to the return: {avg(seen):.2f} s")
        lines.append(f"target: {label}: first line <= 1.2x the raw pod's of the same image ({f / fresh:.2f}x) ... "
                     f"{'PASS' if f <= 1.2 * fresh else 'MISS'}")
        lines.append(f"target: {label}: returns <= 0.3 s after the container exits ({avg(gaps):.2f} s) ... "
                     f"{'PASS' if avg(gaps) <= 0.3 else 'MISS'}")
    print()
    for line in lines:
        print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores; figures move with it)")


if __name__ == "__main__":
    sys.exit(main())

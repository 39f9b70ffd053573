"""`backend="jobs"` on the rig's API server: every trial is a batch Job of the one pushed image,
created with the least-privilege ServiceAccount, `parallel` at a time, its metrics read from the
pod log through the API server, failed trials reported with the Job's reason, Ctrl-C deleting the
running trials.

kwok nodes run no containers, so a trial's pod would never print anything. `Kubelet` below plays
the node for trial pods labelled `fairing.test/outcome=hang` (which kwok leaves Running): it runs the
pod's own main-container command (command + args + env, as the Job carries them) on the script,
serves that output as the pod log (a kwok Logs object, as the deployer tests do) and writes the
terminated status a kubelet would. This tests the Job template and the driver for real; the run on
a real node (kubelet + runc) is not part of this file."""
import _thread
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import fairing
from fairing.deployers import pod
from fairing.kube.client import Kube, resource_for
from fairing.tune.result import TuneFailed
from tests.rig.kube import OUTCOME_LABEL, require_simulation, serve_logs
from tests.test_tune import TRAIN, manifest_puts


RUN_LABEL = "fairing.test/tune-run"


def trial_labels(run: str):
    """kwok leaves these pods Running, and only this run's Kubelet touches them (the namespace is
    shared with other tests that use the same outcome label)."""
    return pod.labels({OUTCOME_LABEL: "hang", RUN_LABEL: run})


class Kubelet:
    def __init__(self, admin: Kube, namespace: str, workdir, run: str, on_start=None):
        self.admin, self.ns, self.workdir, self.run, self.on_start = admin, namespace, workdir, run, on_start
        self.seen: dict[str, dict] = {}
        self.max_running = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _loop(self):
        sel = f"{OUTCOME_LABEL}=hang,{RUN_LABEL}={self.run}"
        while not self._stop.is_set():
            try:
                pods = self.admin.list("v1", "Pod", self.ns, label_selector=sel)["items"]
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(str(e))
                pods = []
            live = [p for p in pods if p["status"].get("phase") in ("Pending", "Running")
                    and not p["metadata"].get("deletionTimestamp")]
            self.max_running = max(self.max_running, len(live))
            for p in live:
                name = p["metadata"]["name"]
                if name in self.seen or p["status"].get("phase") != "Running":
                    continue
                self.seen[name] = p
                threading.Thread(target=self._run, args=(p,), daemon=True).start()
            time.sleep(0.1)

    def _run(self, p):
        name = p["metadata"]["name"]
        main = next(c for c in p["spec"]["containers"] if c["name"] == "main")
        if self.on_start and self.on_start(p) is False:
            return  # left running (the Ctrl-C test)
        argv = [sys.executable if a in ("python", "python3") else a for a in main["command"] + main.get("args", [])]
        # The image's command is wrapped by the outputs shim the image carries: put it where the
        # command finds it, as the image has it.
        shim = Path(self.workdir) / ".fairing" / "outputs.py"
        if not shim.exists():
            import fairing.image_runtime.outputs as outputs_shim

            shim.parent.mkdir(exist_ok=True)
            shim.write_bytes(Path(outputs_shim.__file__).read_bytes())
        env = {"PATH": "/usr/bin:/bin", **{e["name"]: e["value"] for e in main.get("env", []) if "value" in e}}
        out = subprocess.run(argv, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=120)
        serve_logs(self.admin, self.ns, name, out.stdout + out.stderr, containers=["main"])
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        term = {"exitCode": out.returncode, "reason": "Completed" if out.returncode == 0 else "Error",
                "startedAt": now, "finishedAt": now}
        status = {"phase": "Succeeded" if out.returncode == 0 else "Failed",
                  "containerStatuses": [{"name": "main", "image": main["image"], "imageID": "", "ready": False,
                                         "restartCount": 0, "state": {"terminated": term}}]}
        self.admin.request("PATCH", resource_for("v1", "Pod").path(self.ns, name, "status"), body={"status": status},
                           content_type="application/merge-patch+json")


def trial_jobs(admin, prefix):
    return [j["metadata"]["name"] for j in admin.list("batch/v1", "Job")["items"]
            if j["metadata"]["name"].startswith(prefix + "-")]


def test_jobs_backend_runs_trials_as_jobs_of_one_image(kube, admin, registry, base_image, tmp_path, monkeypatch):
    require_simulation(kube)
    (tmp_path / "train.py").write_text(TRAIN + "if a.x > 5.5:\n    raise SystemExit('diverged')\n")
    monkeypatch.chdir(tmp_path)
    team, name = f"tune{uuid.uuid4().hex[:8]}", f"jobs-{uuid.uuid4().hex[:5]}"
    with Kubelet(admin, kube.namespace, tmp_path, name) as kubelet:
        try:
            r = fairing.tune(str(tmp_path / "train.py"), params={"x": fairing.uniform(0, 6)}, objective="score",
                             goal="maximize", trials=6, parallel=2, algorithm="grid", backend="jobs", name=name,
                             registry=f"{registry.host}/{team}", base_image=base_image.docker,
                             kubeconfig=str(kube.sa_kubeconfig), mutators=[trial_labels(name)],
                             progress=False, timeout=300)
        except TuneFailed as e:
            pytest.fail(f"{e.message}\n{e.result.trials}")
    assert not kubelet.errors
    # grid over [0, 6] with 6 trials: 0, 1.2, ..., 6.0; the last one "diverges"
    assert sorted(t.params["x"] for t in r.trials) == pytest.approx([0, 1.2, 2.4, 3.6, 4.8, 6.0])
    for t in r.trials:
        if t.params["x"] > 5.5:
            # the Job's translated reason, and the trial's own last words from its log
            assert t.state == "Failed" and "exited with code 1" in t.error and "diverged" in t.error, t.error
        else:
            assert t.state == "Succeeded" and t.value == pytest.approx(-(t.params["x"] - 3) ** 2)
    assert r.best.params["x"] in (pytest.approx(2.4), pytest.approx(3.6))
    assert 1 <= kubelet.max_running <= 2 and len(kubelet.seen) == 6
    # one image, pushed once, in every trial's pod
    assert manifest_puts(f"{team}/fairing-train") == 1
    assert {p["spec"]["containers"][0]["image"] for p in kubelet.seen.values()} == {r.image}
    for p in kubelet.seen.values():
        main = p["spec"]["containers"][0]
        assert main["args"][0] == "--x" and {"name": "FAIRING_PARAM_X", "value": main["args"][1]} in main["env"]
    assert trial_jobs(admin, name) == []  # finished trials are deleted


def test_ctrl_c_deletes_the_running_trial_jobs(kube, admin, registry, base_image, tmp_path, monkeypatch):
    require_simulation(kube)
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    name = f"stop-{uuid.uuid4().hex[:5]}"
    started = []

    def hold(p):
        started.append(p["metadata"]["name"])
        if len(started) == 2:
            time.sleep(0.5)
            _thread.interrupt_main()  # what Ctrl-C does to the main thread
        return False  # never finish: the trials are running when the interrupt comes

    with Kubelet(admin, kube.namespace, tmp_path, name, on_start=hold):
        with pytest.raises(KeyboardInterrupt):
            fairing.tune(str(tmp_path / "train.py"), params={"x": fairing.uniform(0, 6)}, objective="score",
                         trials=4, parallel=2, backend="jobs", name=name, registry=f"{registry.host}/tune",
                         base_image=base_image.docker, kubeconfig=str(kube.sa_kubeconfig),
                         mutators=[trial_labels(name)], progress=False)
    assert len(started) == 2
    deadline = time.monotonic() + 60
    while trial_jobs(admin, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trial_jobs(admin, name) == []

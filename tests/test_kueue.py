"""Kueue queues on the real API server with the real Kueue controller (built by tests/rig/trainer.py):
a ClusterQueue with a 1-CPU quota and a LocalQueue in the test namespace. Two 1-CPU workloads
submitted together: Kueue admits one, keeps the other suspended ("queued ... waiting for quota")
until the first finishes, then admits it; both end Succeeded."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairing.deployers import pod
from fairing.deployers import queue as queue_lib
from fairing.deployers.k8s.cronjob import CronJobDeployer
from fairing.deployers.k8s.job import JobDeployer
from fairing.deployers.k8s.kubeflow import PyTorchJobDeployer
from fairing.deployers.k8s.trainjob import TrainJobDeployer
from fairing.errors import ConfigError
from fairing.kube.wait import WaitTimeout
from tests.rig.kube import fake_image, require_simulation

REPO = Path(__file__).resolve().parents[1]
# kwok's pod-complete stage reads its delay from these annotations: each pod runs ~8 s, long
# enough to watch the second workload wait for the first.
SLOW = {"pod-complete.stage.kwok.x-k8s.io/delay": "8s", "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "8s"}


def _fair_status(kube, name: str) -> str:
    r = subprocess.run([sys.executable, "-m", "fairing.cli", "status", name, "--kubeconfig", str(kube.sa_kubeconfig),
                        "--namespace", kube.namespace], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _run_two(kube, make, cleanup):
    """Submit two 1-CPU workloads back to back; poll both until they finish. Returns
    (first, second, timeline) where `second` is the one Kueue held back and timeline holds
    (t, first_status, second_status, second_detail)."""
    a, b = make("a").deploy(fake_image("kueue-a")), make("b").deploy(fake_image("kueue-b"))
    cleanup(a), cleanup(b)
    timeline = []
    cli_seen = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        sa, sb = a.status(), b.status()
        timeline.append((time.monotonic(), sa, sb, a.status_detail(), b.status_detail()))
        if "Queued" in (sa, sb) and not cli_seen and {sa, sb} & {"Running", "Admitted"}:
            # `fair status` while one runs and the other waits.
            queued = b if sb == "Queued" else a
            obj = queued.get()
            path = queued.deployer.queue_suspend
            if queue_lib.suspended(obj, path):  # still held back: `fair list` says so too
                assert queue_lib.state(obj, type(queued.deployer).state(obj), path) == "Queued"
            cli_seen.append(_fair_status(kube, queued.name))
        if sa == sb == "Succeeded":
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"not both Succeeded in time: {timeline[-1]}")
    cli_seen.append(_fair_status(kube, b.name))
    # Which one Kueue admitted first is its choice; the other one waited.
    waited_b = any(sb == "Queued" and sa in ("Admitted", "Running") for _, sa, sb, _, _ in timeline)
    if waited_b:
        return a, b, [(t, sa, sb, db) for t, sa, sb, _, db in timeline], cli_seen
    return b, a, [(t, sb, sa, da) for t, sa, sb, da, _ in timeline], cli_seen


def _check_queued_story(first, second, tl, cli_seen, queue):
    seconds_states = [s for _, _, s, _ in tl]
    distinct = [s for i, s in enumerate(seconds_states) if i == 0 or s != seconds_states[i - 1]]
    assert distinct[0] == "Queued" and distinct[-1] == "Succeeded", distinct
    assert "Running" in distinct, distinct
    assert set(distinct) <= {"Queued", "Admitted", "Running", "Succeeded"}, distinct
    # While queued, the detail says where and why, with Kueue's own message.
    queued_details = [d for _, _, s, d in tl if s == "Queued"]
    assert any(d and d.startswith(f"queued in {queue} (waiting for quota): ") and "insufficient" in d
               for d in queued_details), queued_details
    # It stayed queued until the first finished: it leaves the queue only after the first succeeded.
    t_first_done = next(t for t, f, _, _ in tl if f == "Succeeded")
    t_second_admitted = next(t for t, _, s, _ in tl if s != "Queued")
    assert t_second_admitted >= t_first_done
    # `fair status` showed the queued stage, then the end.
    assert cli_seen[0].startswith(f"{second.name}\tQueued\tqueued in {queue} (waiting for quota): "), cli_seen
    assert cli_seen[-1].split("\t")[1] == "Succeeded", cli_seen


def test_two_jobs_share_a_one_cpu_quota(trainer, kube, cleanup):
    require_simulation(kube)

    def make(tag):
        return JobDeployer(kubeconfig=kube.sa_kubeconfig, queue=trainer.local_queue,
                           mutators=[pod.cpu("1"), pod.annotations(SLOW)])
    first, second, tl, cli_seen = _run_two(kube, make, cleanup)
    _check_queued_story(first, second, tl, cli_seen, trainer.local_queue)
    # The stored Jobs carry the queue label and were created suspended (Kueue un-suspended them).
    for h in (first, second):
        job = h.get()
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == trainer.local_queue
        assert job["spec"]["suspend"] is False
        assert h.wait(timeout=10) == "Succeeded"


def test_two_trainjobs_share_a_one_cpu_quota(trainer, kube, cleanup):
    require_simulation(kube)

    def make(tag):
        return TrainJobDeployer(kubeconfig=kube.sa_kubeconfig, nodes=1, queue=trainer.local_queue,
                                mutators=[pod.cpu("1"), pod.annotations(SLOW)])
    first, second, tl, cli_seen = _run_two(kube, make, cleanup)
    _check_queued_story(first, second, tl, cli_seen, trainer.local_queue)
    for h in (first, second):
        assert h.get()["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == trainer.local_queue
        assert h.wait(timeout=10) == "Succeeded"


def test_wait_timeout_counts_queued_time(trainer, kube, cleanup):
    require_simulation(kube)

    def make():
        return JobDeployer(kubeconfig=kube.sa_kubeconfig, queue=trainer.local_queue,
                           mutators=[pod.cpu("1"), pod.annotations(SLOW)])
    a = make().deploy(fake_image("kueue-wait-a"))
    cleanup(a)
    deadline = time.monotonic() + 60
    while a.status() not in ("Admitted", "Running", "Succeeded") and time.monotonic() < deadline:
        time.sleep(0.2)
    b = make().deploy(fake_image("kueue-wait-b"))
    cleanup(b)
    with pytest.raises(WaitTimeout) as e:
        b.wait(timeout=3)
    msg = e.value.message
    assert "did not finish within 3s (status Queued)" in msg, msg
    assert "of the wait were spent queued (queued in fairing-queue (waiting for quota)" in msg, msg
    assert "counts time in the queue" in e.value.hint
    # Once the first is done, the second gets its turn.
    assert a.wait(timeout=120) == "Succeeded"
    assert b.wait(timeout=120) == "Succeeded"


def test_missing_queue_names_the_local_queues(trainer, kube):
    d = JobDeployer(kubeconfig=kube.sa_kubeconfig, queue="no-such-queue", name="kueue-missing-queue")
    with pytest.raises(ConfigError) as e:
        d.deploy(fake_image("kueue-missing"))
    assert e.value.message == f"Kueue LocalQueue 'no-such-queue' does not exist in namespace '{kube.namespace}'"
    assert trainer.local_queue in e.value.hint
    assert d.kube.get("batch/v1", "Job", "kueue-missing-queue") is None  # nothing created


def test_cli_missing_queue_one_line(trainer, kube, tmp_path, registry):
    (tmp_path / "train.py").write_text("print('hi')\n")
    r = subprocess.run([sys.executable, "-m", "fairing.cli", "train", "train.py", "--deployer", "job",
                        "--queue", "no-such-queue", "--registry", f"{registry.host}/kueue",
                        "--kubeconfig", str(kube.sa_kubeconfig), "--namespace", kube.namespace],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    assert "error: Kueue LocalQueue 'no-such-queue' does not exist" in r.stderr
    assert f"hint: LocalQueues in {kube.namespace}: {trainer.local_queue}" in r.stderr
    assert "Traceback" not in r.stderr


def test_queued_pytorchjob_is_admitted_and_runs(trainer, kube, cleanup):
    """The training operator's kinds go through the same queue (runPolicy.suspend)."""
    require_simulation(kube)
    h = PyTorchJobDeployer(kubeconfig=kube.sa_kubeconfig, master=1, queue=trainer.local_queue,
                           mutators=[pod.cpu("1")]).deploy(fake_image("kueue-pytorch"))
    cleanup(h)
    assert h.get()["spec"]["runPolicy"]["suspend"] in (True, False)  # created suspended; Kueue may have released it
    assert h.wait(timeout=150) == "Succeeded"
    assert h.get()["spec"]["runPolicy"]["suspend"] is False


def test_queue_label_and_suspend_per_kind():
    image = fake_image("kueue-render")
    (cj,) = CronJobDeployer("team", schedule="0 3 * * *", queue="q").render(image)
    assert cj["spec"]["jobTemplate"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert cj["spec"]["jobTemplate"]["spec"]["suspend"] is True
    assert not cj["spec"].get("suspend")  # the CronJob keeps its schedule; its Jobs wait in the queue
    (pt,) = PyTorchJobDeployer("team", queue="q").render(image)
    assert pt["spec"]["runPolicy"]["suspend"] is True and pt["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    (job,) = JobDeployer("team", queue="q").render(image)
    assert job["spec"]["suspend"] is True
    with pytest.raises(ConfigError, match="invalid queue name"):
        JobDeployer("team", queue="Not A Queue")


def test_fair_train_builds_and_queues_a_kubeflow_trainjob(trainer, kube, registry, base_image, tmp_path):
    """End to end through the CLI: a real build pushed to the rig registry, a Kubeflow TrainJob on
    two nodes submitted to the queue, `fair status` / `fair list` / `fair delete` on it."""
    import json
    import uuid

    from fairing.kube.client import Kube

    require_simulation(kube)
    (tmp_path / "train.py").write_text("import os\nprint('rank', os.environ.get('PET_NODE_RANK'))\n")
    name = f"tj-cli-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FAIRING_QUEUE", None)
    common = ["--kubeconfig", str(kube.sa_kubeconfig), "--namespace", kube.namespace]

    def fair(*args):
        return subprocess.run([sys.executable, "-m", "fairing.cli", *args, *common], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    r = fair("train", "train.py", "--deployer", "trainjob", "--nodes", "2", "--cpu", "500m",
             "--queue", trainer.local_queue, "--registry", f"{registry.host}/fairing-tj", "--base-image",
             base_image.docker, "--name", name, "--detach", "-o", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["mode"] == "trainjob on cluster" and data["name"] == name and "@sha256:" in data["image"]
    try:
        tj = Kube(kube.kubeconfig, namespace=kube.namespace).get("trainer.kubeflow.org/v1alpha1", "TrainJob", name)
        assert tj["spec"]["trainer"]["image"] == data["image"]  # the image just built, by digest
        assert tj["spec"]["trainer"]["command"][-1] == "train.py" and tj["spec"]["trainer"]["numNodes"] == 2
        assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == trainer.local_queue
        seen = set()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            st = fair("status", name, "-o", "json")
            assert st.returncode == 0, st.stderr
            seen.add(json.loads(st.stdout)["status"])
            if "Succeeded" in seen:
                break
            time.sleep(1)
        assert "Succeeded" in seen, seen
        listed = json.loads(fair("list", "-o", "json").stdout)
        assert any(w["name"] == name and w["kind"] == "TrainJob" and w["status"] == "Succeeded" for w in listed)
    finally:
        d = fair("delete", name)
    assert d.returncode == 0, d.stderr
    st = fair("status", name)
    assert st.returncode == 4 and f"no workload named '{name}'" in st.stderr

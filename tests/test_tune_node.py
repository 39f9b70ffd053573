"""The jobs backend with real trials: every trial is a Job on the rig's real node (kubelet +
containerd), running the one pushed image, printing its metrics, read back through the API server.
Needs the real node of tests/rig/node.py (the `on_node` fixture); a checkout without it skips with
that reason."""
import uuid

import pytest

import fairing
from tests.test_tune import TRAIN, manifest_puts

TIMED = TRAIN.replace('print("training with", a.x)', 'import time\nstarted = time.time()\ntime.sleep(2)') + \
    "print(f'started={started}')\nprint(f'ended={time.time()}')\nif a.x > 5.5:\n    raise SystemExit('diverged')\n"


@pytest.fixture
def node_rig(request):
    try:
        return request.getfixturevalue("on_node")  # tests/rig/plugin.py, with the real node
    except pytest.FixtureLookupError:
        pytest.skip("this checkout's rig has no real node (tests/rig/node.py): trials would not run")


def test_real_trials_on_the_node(node_rig, tmp_path, monkeypatch):
    on_node = node_rig
    (tmp_path / "train.py").write_text(TIMED)
    monkeypatch.chdir(tmp_path)
    repo = f"{on_node.registry}/tune{uuid.uuid4().hex[:6]}"
    name = f"node-{uuid.uuid4().hex[:5]}"
    r = fairing.tune(str(tmp_path / "train.py"), params={"x": fairing.uniform(0, 6)}, objective="score",
                     goal="maximize", trials=6, parallel=2, algorithm="grid", backend="jobs", name=name,
                     registry=repo, base_image=on_node.base, kubeconfig=str(on_node.kubeconfig),
                     namespace=on_node.namespace, mutators=on_node.mutators(), progress=False, timeout=300)
    assert r.status == "Succeeded" and len(r.trials) == 6
    for t in r.trials:
        if t.params["x"] > 5.5:  # grid point 6.0
            # The Job's reason; the log's last line may be stdout's or stderr's ("diverged"): containerd
            # copies the two streams separately, so their order in the log is not guaranteed.
            assert t.state == "Failed" and "exited with code 1" in t.error and "last output:" in t.error, t.error
            assert t.metrics["score"] == -9.0  # what it printed before failing was read too
        else:
            assert t.state == "Succeeded", t.error
            assert t.value == pytest.approx(-(t.params["x"] - 3) ** 2)  # printed by the container itself
    assert r.best.value == max(t.value for t in r.finished_trials)
    # two at a time: the containers' own clocks (one machine) show the overlap
    spans = [(t.metrics["started"], t.metrics["ended"]) for t in r.trials]
    assert max(sum(1 for s, e in spans if s <= p < e) for p, _ in spans) == 2
    # built once: one manifest push for the run's repository, and that digest is what ran
    assert manifest_puts(repo.split("/", 1)[1] + "/fairing-train") == 1
    assert r.image.startswith(repo + "/fairing-train@sha256:")

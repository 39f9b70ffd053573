"""The katib backend against Katib's real CRDs on the rig's API server: the rendered Experiment is
accepted by Katib's schema (server-side dry run, nothing pruned), and with the Experiment kind
served the default backend becomes katib. Katib's controllers are not on the rig, so no Experiment
runs here (see tests/rig/katib.py)."""
import uuid

import pytest

import fairing
from fairing import settings as settings_mod
from fairing.kube.client import Kube
from fairing.tune.api import katib_probe
from fairing.tune.build import choose_backend
from tests.rig.katib import ensure_crds
from tests.test_tune import TRAIN


@pytest.fixture
def katib_crds(kube):
    admin = Kube(kube.kubeconfig, namespace=kube.namespace)
    ensure_crds(admin)
    return admin


def test_rendered_experiment_passes_katibs_schema(kube, katib_crds, registry, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    name = f"schema-{uuid.uuid4().hex[:5]}"
    plan = fairing.tune(str(tmp_path / "train.py"),
                        params={"x": fairing.uniform(0, 6), "lr": fairing.loguniform(1e-4, 1e-1),
                                "layers": fairing.intrange(1, 4), "opt": fairing.choice(["adam", "sgd"])},
                        objective="score", goal="maximize", trials=6, parallel=2, max_failed=1, backend="katib",
                        algorithm="tpe", name=name, registry=f"{registry.host}/team", kubeconfig=str(kube.kubeconfig),
                        dry_run=True, progress=False)
    (exp,) = plan["manifests"]
    assert exp["metadata"]["namespace"] == kube.namespace
    stored = katib_crds.create(exp, dry_run=True)
    # Accepted, and nothing we set was pruned as unknown by the structural schema.
    assert stored["spec"]["parameters"] == exp["spec"]["parameters"]
    assert stored["spec"]["objective"] == exp["spec"]["objective"]
    assert stored["spec"]["trialTemplate"]["trialParameters"] == exp["spec"]["trialTemplate"]["trialParameters"]
    assert stored["spec"]["trialTemplate"]["trialSpec"] == exp["spec"]["trialTemplate"]["trialSpec"]
    for key in ("maxTrialCount", "parallelTrialCount", "maxFailedTrialCount", "metricsCollectorSpec", "algorithm"):
        assert stored["spec"][key] == exp["spec"][key]
    assert katib_crds.get("kubeflow.org/v1beta1", "Experiment", name) is None  # a dry run stores nothing


def test_default_backend_is_katib_when_the_cluster_serves_it(kube, katib_crds, registry):
    s = settings_mod.load({"registry": f"{registry.host}/team", "kubeconfig": str(kube.kubeconfig)},
                          cli_source="argument")
    backend, note = choose_backend(None, s, probe=katib_probe(s))
    assert backend == "katib" and "has Katib" in note
    # explicit choices still win
    assert choose_backend("jobs", s, probe=katib_probe(s))[0] == "jobs"


def test_katib_trial_objects_become_trials():
    """Trial status as Katib's trial controller writes it (trials/v1beta1 types): parameters back to
    their types, the objective's latest value, and the reason of a trial without metrics."""
    from fairing.tune.katib import experiment_state, update_trial
    from fairing.tune.result import Trial, TuneResult

    space = {"x": fairing.uniform(0, 6), "layers": fairing.choice([1, 2, 3])}
    res = TuneResult(objective="score", goal="maximize", space=space)
    ok = {"spec": {"parameterAssignments": [{"name": "x", "value": "2.5"}, {"name": "layers", "value": "2"}]},
          "status": {"startTime": "2026-01-01T10:00:00Z", "completionTime": "2026-01-01T10:00:42Z",
                     "conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                    {"type": "Succeeded", "status": "True"}],
                     "observation": {"metrics": [{"name": "score", "min": "-9", "max": "-0.25", "latest": "-0.25"}]}}}
    t = Trial(0, "exp-abc", {})
    update_trial(t, ok, res)
    assert (t.state, t.params, t.value, t.seconds) == ("Succeeded", {"x": 2.5, "layers": 2}, -0.25, 42.0)
    silent = {"spec": ok["spec"], "status": {"conditions": [{"type": "MetricsUnavailable", "status": "True"}]}}
    update_trial(t, silent, res)
    assert t.state == "Failed" and "'score' was never printed" in t.error
    other = Trial(1, "exp-def", {"x": 3.0, "layers": 1}, state="Succeeded", value=-0.25)
    res.trials = [t, other]
    t.state, t.value = "Succeeded", -0.25
    res.optimal_trial = "exp-def"
    assert res.best is other  # a tie: Katib's currentOptimalTrial decides, not our ordering
    assert experiment_state({"status": {"conditions": [{"type": "Running", "status": "False"},
                                                       {"type": "Succeeded", "status": "True"}]}}) == "Succeeded"

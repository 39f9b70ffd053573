"""The katib backend against real Katib on the rig (tests/rig/katib.py): the rendered Experiment
is accepted by Katib's schema (server-side dry run, nothing pruned); with the Experiment kind served
the default backend becomes katib; and a real Experiment runs: Katib's controller asks its goptuna
suggestion service for parameters, runs each trial as a Job on the rig's real node with its metrics
collector injected, and the collector's numbers (what the trials printed) decide the optimum."""
import time
import uuid

import pytest

import fairing
from fairing import settings as settings_mod
from fairing.kube.client import Kube
from fairing.tune.api import katib_probe
from fairing.tune.build import choose_backend
from tests.rig.katib import NAMESPACE as KATIB_NAMESPACE, ensure_crds
from tests.test_tune import TRAIN, manifest_puts


@pytest.fixture
def katib_crds(kube):
    """Katib's CRDs, and an admin client for a namespace Katib accepts Experiments in: when Katib's
    controller runs on the rig, its validating webhook refuses namespaces without the
    metrics-collector injection label (the StdOut collector is injected into trial pods)."""
    admin = Kube(kube.kubeconfig, namespace=KATIB_NAMESPACE)
    ensure_crds(admin)
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": KATIB_NAMESPACE, "labels": {"katib.kubeflow.org/metrics-collector-injection": "enabled"}}},
        field_manager="fairing-test-katib-schema")
    return admin


def kept(sent, stored) -> bool:
    """Everything sent is in the stored object unchanged (the server may add defaults)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(k in stored and kept(v, stored[k]) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(stored, list) and len(sent) == len(stored) and all(map(kept, sent, stored))
    return sent == stored


def test_rendered_experiment_passes_katibs_schema(kube, katib_crds, registry, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    name = f"schema-{uuid.uuid4().hex[:5]}"
    plan = fairing.tune(str(tmp_path / "train.py"),
                        params={"x": fairing.uniform(0, 6), "lr": fairing.loguniform(1e-4, 1e-1),
                                "layers": fairing.intrange(1, 4), "opt": fairing.choice(["adam", "sgd"])},
                        objective="score", goal="maximize", trials=6, parallel=2, max_failed=1, backend="katib",
                        algorithm="tpe", name=name, registry=f"{registry.host}/team", kubeconfig=str(kube.kubeconfig),
                        namespace=KATIB_NAMESPACE, dry_run=True, progress=False)
    (exp,) = plan["manifests"]
    assert exp["metadata"]["namespace"] == KATIB_NAMESPACE
    stored = katib_crds.create(exp, dry_run=True)
    # Accepted, and nothing we set was pruned as unknown by the structural schema. With Katib's
    # controller on the rig its webhooks see it too: the validator accepts it and the defaulter
    # only adds (distribution, resumePolicy), never changes what fairing wrote.
    assert kept(exp["spec"], stored["spec"])
    for key in ("parameters", "objective", "trialTemplate", "maxTrialCount", "parallelTrialCount",
                "maxFailedTrialCount", "metricsCollectorSpec", "algorithm"):
        assert key in stored["spec"]
    assert katib_crds.get("kubeflow.org/v1beta1", "Experiment", name) is None  # a dry run stores nothing


def test_default_backend_is_katib_when_the_cluster_serves_it(kube, katib_crds, registry):
    s = settings_mod.load({"registry": f"{registry.host}/team", "kubeconfig": str(kube.kubeconfig)},
                          cli_source="argument")
    backend, note = choose_backend(None, s, probe=katib_probe(s))
    assert backend == "katib" and "has Katib" in note
    # explicit choices still win
    assert choose_backend("jobs", s, probe=katib_probe(s))[0] == "jobs"


# A failed trial's collector log, as Katib v0.19.0's file-metricscollector wrote it on the real node.
COLLECTOR_LOG = """I1129 04:06:47.888581      21 main.go:400] Trial Name: katibf-bb261-sfrj2lpv
I1129 04:06:49.991530      21 main.go:143] score=-2.341541077891525
I1129 04:06:49.991562      21 main.go:143] diverged
F1129 04:06:50.890577      21 main.go:425] Failed to wait for worker container: training container is failed. Unable to read file /var/log/katib/14.pid"""


def test_the_trials_own_lines_are_told_from_the_collectors():
    from fairing.tune.katib import training_output

    assert training_output(COLLECTOR_LOG) == ["score=-2.341541077891525", "diverged"]


def test_grid_on_katib_sends_the_built_in_grid_points():
    from fairing.tune.katib import grid_parameters

    params, trials = grid_parameters({"lr": fairing.loguniform(1e-3, 1e-1), "act": fairing.choice(["relu", "tanh"])}, 20)
    lr, act = params
    assert act == {"name": "act", "parameterType": "categorical", "feasibleSpace": {"list": ["relu", "tanh"]}}
    assert lr["parameterType"] == "categorical" and len(lr["feasibleSpace"]["list"]) == 10
    assert [float(v) for v in lr["feasibleSpace"]["list"]][::9] == pytest.approx([1e-3, 1e-1])
    assert trials == 20
    _, capped = grid_parameters({"k": fairing.choice([1, 2, 3])}, 12)
    assert capped == 3  # Katib's grid refuses more trials than points


def test_grid_on_katib_in_parallel_warns_it_can_repeat_points():
    from fairing.tune.katib import experiment

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t"}, "spec": {"template": {"spec": {"containers": []}}}}
    space = {"x": fairing.uniform(0, 6)}
    with pytest.warns(UserWarning, match="can repeat a point when trials run in parallel"):
        exp = experiment("g", job, space, objective="score", goal="maximize", algorithm="grid", trials=5, parallel=2, max_failed=None)
    assert exp["spec"]["maxTrialCount"] == 5 and exp["spec"]["parameters"][0]["parameterType"] == "categorical"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment("g", job, space, objective="score", goal="maximize", algorithm="grid", trials=5, parallel=1, max_failed=None)


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


# --- a real Experiment -----------------------------------------------------------------------------
def _katib_trials(admin: Kube, namespace: str, experiment: str) -> dict[str, dict]:
    items = admin.list("kubeflow.org/v1beta1", "Trial", namespace,
                       label_selector=f"katib.kubeflow.org/experiment={experiment}").get("items", [])
    return {t["metadata"]["name"]: t for t in items}


class PodWatch:
    """Every pod whose name starts with `prefix`, as last seen while it existed (polled)."""

    def __init__(self, kube: Kube, namespace: str, prefix: str):
        import threading

        self.kube, self.namespace, self.prefix = kube, namespace, prefix
        self.seen: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for p in self.kube.list("v1", "Pod", self.namespace).get("items", []):
                    if p["metadata"]["name"].startswith(self.prefix):
                        self.seen[p["metadata"]["name"]] = p
            except Exception:  # noqa: BLE001 - a missed poll only loses a sample
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def _observed(trial: dict, metric: str) -> float:
    (m,) = [m for m in trial["status"]["observation"]["metrics"] if m["name"] == metric]
    return float(m["latest"])


# Katib's file metrics collector starts beside the trial container and looks for its process in the
# pod's shared PID namespace; a trial that is already gone by then fails the collector ("unable to
# find main pid") and with it the trial. Real trials run longer than that; this one waits 2 s (the
# plain TRAIN passed 4 of 4 trials by hand, but the race is real).
SLOW_TRAIN = TRAIN.replace('print("training with", a.x)', 'import time\ntime.sleep(2)')


def _prologue(katib, on_node, tmp_path, monkeypatch, prefix: str, code: str):
    """The training script written and made the working directory, a unique Experiment name, an
    admin client (to look at what Katib made), and the tune() arguments every real test shares."""
    (tmp_path / "train.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kw = dict(objective="score", goal="maximize", backend="katib", name=name,
              registry=f"{on_node.registry}/katib{uuid.uuid4().hex[:6]}", base_image=on_node.base,
              kubeconfig=str(katib.kubeconfig), namespace=katib.namespace, mutators=on_node.mutators(),
              progress=False, timeout=600)
    return str(tmp_path / "train.py"), name, Kube(katib.admin_kubeconfig, namespace=katib.namespace), kw


def test_real_experiment_on_the_node(katib, on_node, tmp_path, monkeypatch):
    """Six trials, two at a time, parameters from Katib's random suggestion; every number here was
    printed by a trial container and collected by Katib's own metrics collector."""
    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "katib", SLOW_TRAIN)
    repo = kw["registry"]
    pods = PodWatch(admin, katib.namespace, f"{name}-")
    try:
        with pods:
            r = fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=6, parallel=2, algorithm="random", **kw)
        assert r.status == "Succeeded", f"{r.reason}\n{katib.controller_log()}"
        assert len(r.trials) == 6
        trials = _katib_trials(admin, katib.namespace, name)
        assert sorted(trials) == sorted(t.name for t in r.trials)
        xs = set()
        for t in r.trials:
            assert t.state == "Succeeded", t.error
            assert 0 <= t.params["x"] <= 6
            xs.add(t.params["x"])
            # What the container printed for the x Katib gave it, as Katib's collector stored it.
            assert t.value == pytest.approx(-(t.params["x"] - 3) ** 2, rel=1e-9, abs=1e-12)
            assert _observed(trials[t.name], "score") == t.value
        assert len(xs) == 6  # six suggestions, not one trial repeated
        # fairing's best is Katib's currentOptimalTrial: name, parameters and value
        exp = admin.get("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)
        opt = exp["status"]["currentOptimalTrial"]
        assert r.best.name == opt["bestTrialName"]
        assert r.best.params == {a["name"]: pytest.approx(float(a["value"])) for a in opt["parameterAssignments"]}
        assert r.best.value == _observed({"status": {"observation": opt["observation"]}}, "score")
        assert r.best.value == max(t.value for t in r.trials)
        # The trials' Jobs are kept (trialTemplate.retain), so every trial's logs stay readable.
        jobs = {j["metadata"]["name"] for j in admin.list("batch/v1", "Job", katib.namespace)["items"]}
        assert jobs >= set(trials), sorted(jobs)
        # Real pods on the real node (seen while they ran):
        # each trial's pod ran the pushed image beside Katib's injected metrics collector, and the
        # suggestion service Katib deployed for the Experiment ran there too.
        by_trial = {}
        for p in pods.seen.values():
            assert p["spec"].get("nodeName") in (None, on_node.node.name), p["metadata"]["name"]
            trial = p["metadata"]["labels"].get("katib.kubeflow.org/trial")
            if trial:
                by_trial[trial] = p
        assert sorted(by_trial) == sorted(trials)
        for p in by_trial.values():
            images = {c["name"]: c["image"] for c in p["spec"]["containers"]}
            assert images["main"] == r.image
            assert "metrics-logger-and-collector" in images
            assert p["spec"]["nodeName"] == on_node.node.name
        suggestion = [p for p in pods.seen.values() if p["metadata"]["name"].startswith(f"{name}-random-")]
        assert suggestion and all(p["spec"].get("nodeName") == on_node.node.name for p in suggestion)
        assert r.image.startswith(repo + "/fairing-train@sha256:")
        assert manifest_puts(repo.split("/", 1)[1] + "/fairing-train") == 1  # built and pushed once
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)


FAILING_TRAIN = SLOW_TRAIN + 'if a.x > 1:\n    raise SystemExit("diverged")\n'


def test_real_experiment_stops_at_max_failed(katib, on_node, tmp_path, monkeypatch):
    """Trials that exit 1 (for x > 1: most of them) fail with Katib's reason, and max_failed=1 stops
    the Experiment once two have failed: fairing raises TuneFailed with the trials."""
    from fairing.tune.result import TuneFailed

    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "katibf", FAILING_TRAIN)
    try:
        with pytest.raises(TuneFailed) as err:
            fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=6, parallel=2, max_failed=1, algorithm="random", **kw)
        r = err.value.result
        assert r.status == "Failed", r.reason
        exp = admin.get("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)
        failed_cond = [c for c in exp["status"]["conditions"] if c["type"] == "Failed" and c["status"] == "True"]
        assert failed_cond and r.reason == failed_cond[0]["message"]
        assert exp["spec"]["maxFailedTrialCount"] == 2  # max_failed tolerated, the next one stops it
        failed = [t for t in r.trials if t.state == "Failed"]
        assert len(failed) >= 2 and exp["status"]["trialsFailed"] >= 2
        assert len(r.trials) < 6 or len(failed) == sum(1 for t in r.trials if t.params["x"] > 1)
        for t in failed:
            assert t.params["x"] > 1, (t.params, t.error)
            # What the trial printed last (read from Katib's collector sidecar, which holds its
            # output), then Katib's own generic reason.
            assert t.error.startswith("diverged (") and "Trial has failed" in t.error and "backoff limit" in t.error, t.error
        for t in r.trials:
            if t.state == "Succeeded":
                assert t.params["x"] <= 1 and t.value == pytest.approx(-(t.params["x"] - 3) ** 2)
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)


OOM_TRAIN = SLOW_TRAIN + "hog = bytearray(400 << 20)\nhog[::4096] = b'x' * len(hog[::4096])\n"


def test_real_experiment_out_of_memory_trial_says_so(katib, on_node, tmp_path, monkeypatch):
    """A trial killed for memory fails with the same sentence a Job gets (limit included), not
    Katib's generic Job message alone."""
    from fairing.deployers import pod
    from fairing.tune.result import TuneFailed

    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "katibo", OOM_TRAIN)
    try:
        with pytest.raises(TuneFailed) as err:
            fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=2, parallel=2, max_failed=0, algorithm="random",
                         **{**kw, "mutators": [*kw["mutators"], pod.memory("64Mi")]})
        failed = [t for t in err.value.result.trials if t.state == "Failed"]
        assert failed
        for t in failed:
            assert "was killed for running out of memory (limit 64Mi)" in t.error and "Trial has failed" in t.error, t.error
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)


def test_real_experiment_trial_that_cannot_start_fails_fast(katib, on_node, tmp_path, monkeypatch):
    """A trial pod that references a Secret that does not exist never starts, and Katib leaves its
    trial Running for ever: fairing stops with the kubelet's reason and deletes the Experiment."""
    from fairing.deployers import pod
    from fairing.errors import DeployError

    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "katibs", SLOW_TRAIN)
    try:
        with pytest.raises(DeployError) as err:
            fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=2, parallel=2, algorithm="random",
                         **{**kw, "timeout": 300,
                            "mutators": [*kw["mutators"], pod.env_from_secret("wandb-missing", {"WANDB_API_KEY": "key"})]})
        text = str(err.value)
        assert text.startswith(f"trial {name}-") and "cannot start" in text and "wandb-missing" in text, text
        assert "Secret" in err.value.hint
        # The Experiment is deleted, and with it the trials' Jobs and pods.
        deadline = time.monotonic() + 90
        left = ["?"]
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = [f"{k}/{o['metadata']['name']}" for api, k in (("kubeflow.org/v1beta1", "Experiment"), ("kubeflow.org/v1beta1", "Trial"),
                                                                   ("batch/v1", "Job"), ("v1", "Pod"))
                    for o in admin.list(api, k, katib.namespace)["items"] if o["metadata"]["name"].startswith(name)]
        assert not left, left
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)


def test_real_grid_on_katibs_optuna_suggestion(katib, on_node, tmp_path, monkeypatch):
    """grid runs on Katib's own Python optuna suggestion service (the rig builds its image with
    fairing's append builder): the range becomes the built-in driver's grid points, every point is
    tried once, and the best is Katib's optimum. One trial at a time: with two, Katib's grid
    repeated a point in 2 of 5 runs (fairing warns about that)."""
    from fairing.tune.driver import grid_space

    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "katibg", SLOW_TRAIN)
    space = {"x": fairing.uniform(0, 6)}
    try:
        r = fairing.tune(script, params=space, trials=3, parallel=1, algorithm="grid", **kw)
        assert r.status == "Succeeded", r.reason
        points = grid_space(space, 3)["x"]  # 3 trials over one range: 0, 3 and 6
        assert sorted(t.params["x"] for t in r.trials) == pytest.approx(points)
        assert all(t.state == "Succeeded" and t.value == pytest.approx(-(t.params["x"] - 3) ** 2) for t in r.trials)
        exp = admin.get("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)
        assert exp["spec"]["algorithm"]["algorithmName"] == "grid"
        assert r.best.name == exp["status"]["currentOptimalTrial"]["bestTrialName"]
        assert r.best.params["x"] == pytest.approx(3.0) and r.best.value == 0
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)


def test_katib_random_search_takes_a_fresh_seed_per_run_and_repeats_with_the_same_seed(katib, on_node, tmp_path, monkeypatch):
    """Issue 22: twice the same random search on Katib tried the same points (its goptuna suggestion
    seeds itself with a constant). Now each run sends a fresh `random_state`, recorded; seed= repeats."""
    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "seed", TRAIN)
    xs, seeds = {}, {}
    for run, seed in (("a", 1234), ("b", 1234), ("c", None)):
        exp = f"{name}-{run}"
        try:
            r = fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=3, parallel=1, algorithm="random",
                             seed=seed, **{**kw, "name": exp})
            assert r.status == "Succeeded", f"{r.reason}\n{katib.controller_log()}"
            sent = admin.get("kubeflow.org/v1beta1", "Experiment", exp, katib.namespace)["spec"]["algorithm"]
            assert sent["algorithmSettings"] == [{"name": "random_state", "value": str(r.seed)}]
            assert fairing.runs.get(r.run)["params"]["seed"] == r.seed  # recorded in the tuning run
            xs[run] = [t.params["x"] for t in sorted(r.trials, key=lambda t: t.number)]
            seeds[run] = r.seed
        finally:
            admin.delete("kubeflow.org/v1beta1", "Experiment", exp, katib.namespace)
    assert seeds["a"] == seeds["b"] == 1234 and seeds["c"] != 1234
    # The same seed: the same stream of points. Katib's goptuna service draws from one seeded stream
    # per Experiment, and a suggestion request its controller retries (a status-update conflict under
    # load) draws points that no trial gets, so only the first point is certain to be in the same
    # place; the runs still share most points, and a fresh seed shares none.
    assert xs["a"][0] == xs["b"][0] and len(set(xs["a"]) & set(xs["b"])) >= 2, xs
    assert set(xs["c"]).isdisjoint(xs["a"]), xs      # a fresh seed: other points


def test_every_seeded_katib_algorithm_gets_random_state_and_grid_none():
    from fairing.tune.katib import algorithm_spec

    for algorithm in ("random", "tpe", "cmaes"):
        assert algorithm_spec(algorithm, 7)["algorithmSettings"] == [{"name": "random_state", "value": "7"}]
    assert algorithm_spec("grid", 7) == {"algorithmName": "grid"}  # its points are fixed


KEEP_TRAIN = """
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--x", type=float); x = p.parse_args().x
open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.txt"), "w").write(repr(x))
print(f"score={-(x - 3) ** 2}")
"""


def test_katib_trials_keep_their_outputs_and_the_best_is_registered(katib, on_node, tmp_path, monkeypatch):
    """Issue 21: every tuning trial keeps its outputs, Katib's too. Katib makes each trial's Job; its
    pod names its run after the Job (the trial), saves $FAIRING_OUTPUT_DIR to the store, and the
    trial's record lists the files by digest: best.outputs is the best trial's model, and
    best:TUNE_RUN_ID registers it."""
    script, name, admin, kw = _prologue(katib, on_node, tmp_path, monkeypatch, "kout", KEEP_TRAIN)
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs.db"))
    try:
        r = fairing.tune(script, params={"x": fairing.uniform(0, 6)}, trials=2, parallel=2, algorithm="random",
                         outputs=on_node.outputs, **kw)
        assert r.status == "Succeeded", f"{r.reason}\n{katib.controller_log()}"
        assert len({t.run_id for t in r.trials}) == 2
        for t in r.trials:
            assert float((t.outputs / "model.txt").read_text()) == t.params["x"]  # each trial its own model
            rec = fairing.runs.get(t.run_id)
            assert rec["parent"] == r.run and rec["status"] == "Succeeded"
            assert [f["path"] for f in rec["outputs"]["files"]] == ["model.txt"]
        assert float((r.best.outputs / "model.txt").read_text()) == r.best.params["x"]
        model = f"kb-{uuid.uuid4().hex[:6]}"
        v = fairing.models.register(model, f"best:{r.run}", store=on_node.outputs)
        assert v["run"]["id"] == r.best.run_id
        got = fairing.models.files(f"{model}:1", tmp_path / "model", store=on_node.outputs)
        assert float((got / "model.txt").read_text()) == r.best.params["x"]
        # The trials' credentials Secret (if any) went with the run; nothing is left for them.
        assert not admin.list("v1", "Secret", katib.namespace,
                              label_selector=f"fairing.dev/run-id={r.run}").get("items")
    finally:
        admin.delete("kubeflow.org/v1beta1", "Experiment", name, katib.namespace)

"""render(): the manifests each deployer would create, built offline (no API server is contacted:
the kubeconfig here points at a closed port), plus the option checks that fail before any call."""
import json

import pytest
import yaml

from fairing.deployers import pod
from fairing.deployers.k8s.cronjob import CronJobDeployer, validate_schedule
from fairing.deployers.k8s.job import JobDeployer
from fairing.deployers.k8s.kubeflow import PyTorchJobDeployer
from fairing.deployers.k8s.kubeflow import TFJobDeployer
from fairing.errors import ConfigError
from tests.rig.kube import fake_image

IMAGE = fake_image("render")


@pytest.fixture
def offline_kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig whose server is a closed port: any API call would fail loudly."""
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u", "namespace": "team-a"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def only(manifests):
    assert len(manifests) == 1
    return manifests[0]


def main_of(tpl, name="main"):
    return next(c for c in tpl["spec"]["containers"] if c["name"] == name)


def test_job_render(offline_kubeconfig):
    d = JobDeployer(name="train-a", labels={"team": "ml"}, annotations={"owner": "ana"}, backoff_limit=2,
                    ttl_seconds_after_finished=600, active_deadline_seconds=3600, completions=4, parallelism=2,
                    mutators=[pod.cpu(1), pod.image_pull_secret()])
    job = only(d.render(IMAGE))
    meta = job["metadata"]
    assert (job["apiVersion"], job["kind"], meta["name"], meta["namespace"]) == ("batch/v1", "Job", "train-a", "team-a")
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "fairing" and meta["labels"]["team"] == "ml"
    run_id = meta["labels"]["fairing.dev/run-id"]
    assert meta["annotations"]["owner"] == "ana"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"],
            spec["completions"], spec["parallelism"]) == (2, 600, 3600, 4, 2)
    tpl = spec["template"]
    assert tpl["metadata"]["labels"]["fairing.dev/run-id"] == run_id
    assert tpl["spec"]["restartPolicy"] == "Never"
    assert main_of(tpl)["image"] == IMAGE.ref and "@sha256:" in IMAGE.ref
    assert tpl["spec"]["imagePullSecrets"] == [{"name": "fairing-pull-127-0-0-1-5000"}]
    # render never carries a Secret: only the reference above.
    assert all(m["kind"] != "Secret" for m in d.render(IMAGE))


def test_render_uses_the_builders_pod_template(offline_kubeconfig):
    from dataclasses import replace

    tpl = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "fairing"}},
           "spec": {"containers": [{"name": "log-shipper", "image": "127.0.0.1:5000/fluent:1"},
                                   {"name": "main", "image": "placeholder", "command": ["python", "/app/train.py"],
                                    "workingDir": "/app"}]}}
    job = only(JobDeployer(mutators=[pod.memory("2Gi")]).render(replace(IMAGE, pod_template=tpl)))
    containers = job["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["log-shipper", "main"]
    assert containers[1]["command"] == ["python", "/app/train.py"] and containers[1]["image"] == IMAGE.ref
    assert containers[1]["resources"]["limits"] == {"memory": "2Gi"} and "resources" not in containers[0]
    assert job["metadata"]["name"].startswith("render-")


def test_tfjob_render_gpus_never_on_ps(offline_kubeconfig):
    tf = only(TFJobDeployer(chief=1, ps=2, workers=3, gpus=1, mutators=[pod.gpu(1)]).render(IMAGE))
    specs = tf["spec"]["tfReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Chief": 1, "PS": 2, "Worker": 3}
    for rtype, spec in specs.items():
        c = main_of(spec["template"], "tensorflow")
        gpus = (c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
        assert gpus == (None if rtype == "PS" else "1"), rtype
        assert [x["name"] for x in spec["template"]["spec"]["containers"]] == ["tensorflow"]
    assert tf["spec"]["runPolicy"] == {"cleanPodPolicy": "None"}


def test_pytorchjob_render(offline_kubeconfig):
    pt = only(PyTorchJobDeployer(master=1, workers=2, gpus=2, backoff_limit=1).render(IMAGE))
    specs = pt["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in specs.items()} == {"Master": 1, "Worker": 2}
    for spec in specs.values():
        assert main_of(spec["template"], "pytorch")["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pt["spec"]["runPolicy"]["backoffLimit"] == 1


def test_cronjob_render(offline_kubeconfig):
    cj = only(CronJobDeployer(name="nightly", schedule="0 3 * * MON-FRI", time_zone="Europe/Berlin",
                              concurrency_policy="Forbid", successful_jobs_history_limit=2,
                              failed_jobs_history_limit=1).render(IMAGE))
    spec = cj["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"], spec["suspend"]) == ("0 3 * * MON-FRI", "Europe/Berlin", "Forbid", 2, 1, False)
    assert main_of(spec["jobTemplate"]["spec"]["template"])["image"] == IMAGE.ref
    assert spec["jobTemplate"]["metadata"]["labels"]["fairing.dev/run-id"] == cj["metadata"]["labels"]["fairing.dev/run-id"]


def test_render_without_any_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    job = only(JobDeployer().render(IMAGE))
    assert "namespace" not in job["metadata"]
    json.dumps(job)  # plain JSON-able dicts


@pytest.mark.parametrize("expr", ["0 3 * * *", "*/15 * * * *", "0 0 1,15 * ?", "30 2 * JAN-MAR SUN", "@daily",
                                  "@every 1h30m", "0-59/5 0-23 1-31 1-12 0-7"])
def test_valid_schedules(expr):
    assert validate_schedule(expr) == expr


@pytest.mark.parametrize("expr,why", [
    ("0 25 * * *", "hour 25 is out of range 0-23"),
    ("0 3 * *", "it has 4 fields, not 5"),
    ("0 0 3 * * *", "no seconds field"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("0 3 * FOO *", "month 'FOO' is not a number or a name (JAN..DEC)"),
    ("0 5-2 * * *", "range '5-2' goes backwards"),
    ("TZ=UTC 0 3 * * *", "time zone inside the schedule"),
    ("@fortnightly", "unknown macro"),
    ("", "empty"),
])
def test_invalid_schedules(expr, why):
    with pytest.raises(ConfigError) as e:
        CronJobDeployer(schedule=expr)
    assert why in e.value.message and "minute hour" in e.value.hint


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="Train_Model"), "invalid Job name 'Train_Model'.*uppercase"),
    (dict(name="x" * 64), "64 characters long"),
    (dict(namespace="Team A"), "invalid namespace 'Team A'"),
    (dict(backoff_limit=-1), "invalid backoff_limit -1"),
    (dict(completions=2, parallelism=3), "parallelism 3 is more than completions 2"),
    (dict(gpus=1), "unknown option for the job deployer: gpus"),
    (dict(mutators=["gpu"]), "not callable"),
])
def test_job_option_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        JobDeployer(**kwargs)


def test_kind_specific_option_errors():
    with pytest.raises(ConfigError, match="invalid TFJob name '1st-run'.*start with a letter"):
        TFJobDeployer(name="1st-run")
    with pytest.raises(ConfigError, match="needs at least one replica"):
        TFJobDeployer(workers=0)
    with pytest.raises(ConfigError, match="unknown GPU vendor"):
        PyTorchJobDeployer(gpus=1, gpu_vendor="ati")
    with pytest.raises(ConfigError, match="needs a schedule"):
        CronJobDeployer()
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        CronJobDeployer(schedule="@daily", time_zone="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"53 characters long \(at most 52\)"):
        CronJobDeployer(schedule="@daily", name="n" * 53)
    with pytest.raises(ConfigError, match="invalid concurrency_policy"):
        CronJobDeployer(schedule="@daily", concurrency_policy="Sometimes")


def test_unpinned_or_local_images_are_refused(offline_kubeconfig):
    from fairing.context import BuiltImage

    with pytest.raises(ConfigError, match="not pinned by digest"):
        JobDeployer().render(BuiltImage(ref="127.0.0.1:5000/team/train:latest", digest=""))
    with pytest.raises(ConfigError, match="local OCI layout"):
        JobDeployer().render(BuiltImage(ref="oci:/tmp/layout@sha256:" + "3" * 64, digest="sha256:" + "3" * 64))

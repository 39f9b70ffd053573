"""The job deployer on a real API server (RBAC on) through kwok: created with the least-privilege
ServiceAccount, watched to completion or to the expected failure, stored object checked, deleted
leaving nothing behind. Failure outcomes come from kwok Stages chosen by the pod label
`fairing.test/outcome` (see tests/rig/kube.py)."""
import base64
import json
import threading
import time

import pytest

from fairing.deployers import pod
from fairing.deployers.k8s.job import JobDeployer
from fairing.errors import DeployError
from fairing.kube.wait import WaitTimeout
from tests.rig.kube import GPU_TAINT, NODES, OUTCOME_LABEL, fake_image, require_simulation, serve_logs


@pytest.fixture
def simulated(kube):
    """Needs kwok (outcome labels, served logs, node names) or a killable API server."""
    require_simulation(kube)


@pytest.fixture
def deployer(kube):
    """JobDeployer factory running as the namespaced ServiceAccount; deletes what it made."""
    handles = []

    def make(outcome=None, **kw):
        labels = dict(kw.pop("labels", {}))
        if outcome:
            labels[OUTCOME_LABEL] = outcome
        d = JobDeployer(kubeconfig=kube.sa_kubeconfig, labels=labels, **kw)
        orig = d.deploy

        def deploy(image):
            h = orig(image)
            handles.append(h)
            return h
        d.deploy = deploy
        return d

    yield make
    for h in handles:
        try:
            h.delete(timeout=30)
        except DeployError:
            pass


def assert_gone(admin, h):
    assert admin.get("batch/v1", "Job", h.name, h.namespace) is None
    assert admin.list("v1", "Pod", h.namespace, label_selector=f"job-name={h.name}")["items"] == []


def test_job_runs_to_completion_and_is_stored_as_asked(deployer, admin, kube):
    image = fake_image("job-complete")
    d = deployer(annotations={"fairing.dev/owner": "ana"}, backoff_limit=1, active_deadline_seconds=600,
                 mutators=[pod.cpu("250m", limit="1"), pod.memory("256Mi"), pod.env({"EPOCHS": 3}),
                           pod.env_from_secret("wandb", {"WANDB_API_KEY": "key"}, optional=True),
                           pod.empty_dir("/scratch", size_limit="1Gi"),
                           pod.configmap_volume("settings", "/etc/settings")])
    h = d.deploy(image)
    assert h.namespace == kube.namespace  # from the SA kubeconfig's context
    assert h.wait(timeout=120) == "Succeeded"
    assert h.status() == "Succeeded"

    job = admin.get("batch/v1", "Job", h.name)
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "fairing" and labels["fairing.dev/run-id"] == h.run_id
    assert job["metadata"]["annotations"]["fairing.dev/owner"] == "ana"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (1, 600)
    main = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "main")
    assert main["image"] == image.ref and "@sha256:" in main["image"]
    assert main["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                 "limits": {"cpu": "1", "memory": "256Mi"}}
    assert {"name": "EPOCHS", "value": "3"} in main["env"]
    assert {"name": "WANDB_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key", "optional": True}}} in main["env"]
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["scratch-scratch"]["emptyDir"] == {"sizeLimit": "1Gi"} and vols["cm-settings"]["configMap"]["name"] == "settings"
    pods = h.pods()
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    if not kube.external:
        assert pods[0]["spec"]["nodeName"] == NODES[0]  # the untainted kwok node

    h.delete()
    assert h.status() == "Deleted"
    assert_gone(admin, h)


def test_parallel_completions_and_sidecar(deployer, admin):
    """completions/parallelism run several pods; a sidecar listed before "main" is left alone."""
    from dataclasses import replace

    image = fake_image("job-parallel")
    tpl = {"metadata": {}, "spec": {"containers": [{"name": "sidecar", "image": "127.0.0.1:5000/fluent-bit@sha256:" + "4" * 64},
                                                    {"name": "main", "image": "x"}]}}
    d = deployer(completions=3, parallelism=2, mutators=[pod.memory("128Mi")])
    h = d.deploy(replace(image, pod_template=tpl))
    assert h.wait(timeout=120) == "Succeeded"
    job = h.get()
    assert job["status"]["succeeded"] == 3
    containers = {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}
    assert not containers["sidecar"]["resources"] and containers["main"]["resources"]["limits"]["memory"] == "128Mi"
    assert containers["main"]["image"] == image.ref
    assert len(h.pods()) == 3


def test_ttl_controller_removes_the_finished_job(deployer, admin):
    h = deployer(ttl_seconds_after_finished=1).deploy(fake_image("job-ttl"))
    assert h.wait(timeout=120) == "Succeeded"
    deadline = time.monotonic() + 60
    while h.status() != "Deleted" and time.monotonic() < deadline:
        time.sleep(0.5)  # the TTL controller acts on its own schedule; nothing to watch for but absence
    assert_gone(admin, h)


def test_logs_and_result_through_the_api_server(simulated, deployer, admin, kube, tmp_path):
    """kwok serves the container log the real function shim printed; result() decodes it."""
    import subprocess
    import sys

    from fairing.context import write_context
    from fairing.preprocessors.function import FunctionPreprocessor

    def train(a, b):
        return {"accuracy": a / b, "n": b}

    ctx = FunctionPreprocessor().prepare(train, args=(3, 4))
    root = write_context(ctx, tmp_path / "app")
    argv = [sys.executable if a in ("python", "python3") else a.replace(ctx.workdir, str(root)) for a in ctx.entrypoint]
    out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "FAIRING_OUTPUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 0, out.stderr

    h = deployer(outcome="hang").deploy(fake_image("job-logs"))
    deadline = time.monotonic() + 60
    while not h.pods() and time.monotonic() < deadline:
        time.sleep(0.2)
    pod_name = h.pods()[0]["metadata"]["name"]
    serve_logs(admin, kube.namespace, pod_name, "epoch 1\nepoch 2\n" + out.stdout, containers=["main"])
    assert list(h.logs())[:2] == [f"[{pod_name}] epoch 1", f"[{pod_name}] epoch 2"]
    assert list(h.logs(prefix=None))[:2] == ["epoch 1", "epoch 2"]  # auto: one replica, no prefix
    assert h.result() == {"accuracy": 0.75, "n": 4}


def test_logs_degrade_to_a_clear_message(simulated, deployer):
    h = deployer().deploy(fake_image("job-nologs"))
    h.wait(timeout=120)
    (line,) = list(h.logs())
    assert "logs of pod" in line and "are not available" in line and "kubelet" in line


def test_follow_logs_of_every_replica(simulated, deployer, admin, kube):
    """Two pods, logs streamed with a prefix each, ending when the job ends (activeDeadline)."""
    h = deployer(outcome="hang", completions=2, parallelism=2, completion_mode="Indexed",
                 active_deadline_seconds=8).deploy(fake_image("job-follow"))
    served = set()
    deadline = time.monotonic() + 60
    while len(served) < 2 and time.monotonic() < deadline:
        for p in h.pods():
            name = p["metadata"]["name"]
            if name not in served:
                idx = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                serve_logs(admin, kube.namespace, name, f"replica {idx} step 1\nreplica {idx} step 2")
                served.add(name)
        time.sleep(0.2)
    lines = list(h.logs(follow=True))
    assert {"[index-0] replica 0 step 1", "[index-0] replica 0 step 2",
            "[index-1] replica 1 step 1", "[index-1] replica 1 step 2"} <= set(lines)
    assert h.status() == "Failed"


# --- failures, each with its reason ---------------------------------------------------------------
def test_image_pull_failure_names_the_image_and_the_fix(simulated, deployer):
    image = fake_image("job-imagepull")
    h = deployer(outcome="imagepull").deploy(image)
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)  # ends at ImagePullBackOff, long before the timeout
    assert not isinstance(e.value, WaitTimeout)
    assert f"cannot pull image {image.ref}" in e.value.message and "401 Unauthorized" in e.value.message
    assert "image_pull_secret" in e.value.hint


def test_oom_killed(simulated, deployer):
    h = deployer(outcome="oom", mutators=[pod.memory("64Mi")]).deploy(fake_image("job-oom"))
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)
    assert "out of memory (limit 64Mi)" in e.value.message and "BackoffLimitExceeded" in e.value.message
    assert "memory" in e.value.hint


def test_backoff_limit_exceeded_after_retries(simulated, deployer):
    h = deployer(outcome="fail", backoff_limit=1).deploy(fake_image("job-fail"))
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)
    assert "BackoffLimitExceeded" in e.value.message and "exited with code 1" in e.value.message
    assert len(h.pods()) == 2  # the first try and one retry
    assert h.status() == "Failed"


def test_deadline_exceeded(simulated, deployer):
    h = deployer(outcome="hang", active_deadline_seconds=2).deploy(fake_image("job-deadline"))
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)
    assert "ran longer than its activeDeadlineSeconds (2s)" in e.value.message
    assert "active_deadline_seconds" in e.value.hint


def test_evicted(simulated, deployer):
    h = deployer(outcome="evicted").deploy(fake_image("job-evicted"))
    with pytest.raises(DeployError) as e:
        h.wait(timeout=120)
    assert "was evicted by its node: The node was low on resource: memory" in e.value.message


def test_gpu_request_unschedulable_then_tolerated(simulated, deployer):
    """No untainted node has a GPU: the scheduler's reason is reported when the wait times out.
    With the GPU node's toleration the same request runs there."""
    h = deployer(mutators=[pod.gpu(1)]).deploy(fake_image("job-gpu"))
    with pytest.raises(WaitTimeout) as e:
        h.wait(timeout=6)
    assert "cannot be scheduled: no node has nvidia.com/gpu free" in e.value.message
    assert "Insufficient nvidia.com/gpu" in e.value.message and "toleration" in e.value.hint
    assert h.status() == "Pending"

    ok = deployer(mutators=[pod.gpu(1), pod.toleration(GPU_TAINT["key"])]).deploy(fake_image("job-gpu-ok"))
    assert ok.wait(timeout=120) == "Succeeded"
    assert ok.pods()[0]["spec"]["nodeName"] == NODES[1]


def test_image_pull_secret_from_local_login(simulated, deployer, admin, kube, tmp_path, monkeypatch):
    """The pull Secret is made from the local registry login; the password is in that Secret only."""
    password = "pw-" + base64.b16encode(tmp_path.name.encode()).decode()[:12]
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    host = f"127.0.0.1:{50000 + int(time.time() * 1000) % 10000}"  # own Secret name if tests run concurrently
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(f"alice:{password}".encode()).decode()}}}))
    image = fake_image("job-pullsecret", registry=host)
    secret_name = "fairing-pull-" + host.replace(".", "-").replace(":", "-")
    d = deployer(mutators=[pod.image_pull_secret()])
    rendered = json.dumps(d.render(image))
    h = d.deploy(image)
    assert h.wait(timeout=120) == "Succeeded"

    secret = admin.get("v1", "Secret", secret_name)
    try:
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        doc = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        assert base64.b64decode(doc["auths"][host]["auth"]).decode() == f"alice:{password}"
    finally:
        admin.delete("v1", "Secret", secret_name)
    job = json.dumps(h.get())
    assert h.get()["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": secret_name}]
    b64 = base64.b64encode(f"alice:{password}".encode()).decode()
    for text in (job, rendered, json.dumps(h.manifests())):
        assert password not in text and b64 not in text


def test_dry_run_validates_on_the_server_and_creates_nothing(deployer, admin):
    d = deployer(dry_run=True, name="dry-run-job")
    h = d.deploy(fake_image("job-dry"))
    assert h.status() == "DryRun"
    assert h.manifests()[0]["metadata"]["uid"]  # the API server filled it in (admission ran)
    assert admin.get("batch/v1", "Job", "dry-run-job") is None
    with pytest.raises(DeployError, match="was a dry run"):
        h.wait()


def test_attach_and_cleanup(deployer, admin, kube):
    """cleanup=True deletes the Job (foreground: pods first) once wait() returns."""
    h = deployer(cleanup=True).deploy(fake_image("job-cleanup"))
    again = JobDeployer(kubeconfig=kube.sa_kubeconfig).attach(h.name)
    assert again.run_id == h.run_id and again.status() in ("Pending", "Running", "Succeeded")
    assert h.wait(timeout=120) == "Succeeded"
    assert_gone(admin, h)


def test_wait_is_a_watch_that_sees_every_transition(deployer):
    """Two waiters on one job both return as soon as it completes (no polling interval to wait out)."""
    h = deployer().deploy(fake_image("job-two-waiters"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(h.wait(timeout=120))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(130)
    assert results == ["Succeeded", "Succeeded"]


# --- the outcome read from the pods (JobDeployer.verdict) ------------------------------------------

def _pod(*exit_codes, phase="Pending", restart="Never", deleting=False):
    cs = [{"name": f"c{i}", "state": {"terminated": {"exitCode": c}} if c is not None else {"running": {}}}
          for i, c in enumerate(exit_codes)]
    meta = {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    return {"metadata": meta, "spec": {"restartPolicy": restart, "containers": [{"name": c["name"]} for c in cs]},
            "status": {"phase": phase, "containerStatuses": cs}}


def test_job_pod_verdict_reads_the_terminated_containers_before_the_phase_moves():
    from fairing.deployers.k8s.job import job_pod_verdict

    job = {"spec": {"backoffLimit": 0}}
    assert job_pod_verdict(job, [_pod(None)]) is None
    assert job_pod_verdict(job, [_pod(0)]) == "Succeeded"  # phase still Pending: the kubelet moves it later
    assert job_pod_verdict(job, [_pod(3)]) == "Failed"
    assert job_pod_verdict(job, [_pod(0, None)]) is None  # another regular container still runs
    assert job_pod_verdict(job, [_pod(0, 0)]) == "Succeeded"
    assert job_pod_verdict(job, [_pod(3, phase="Failed", deleting=True)]) is None


def test_job_pod_verdict_a_job_that_will_retry_is_not_finished():
    from fairing.deployers.k8s.job import job_pod_verdict

    job = {"spec": {"backoffLimit": 1}}
    assert job_pod_verdict(job, [_pod(3)]) is None  # one retry left
    assert job_pod_verdict(job, [_pod(3), _pod(None)]) is None
    assert job_pod_verdict(job, [_pod(3), _pod(0)]) == "Succeeded"
    assert job_pod_verdict(job, [_pod(3), _pod(3)]) == "Failed"
    assert job_pod_verdict({"spec": {}}, [_pod(3)] * 6) is None  # the API's default backoffLimit is 6
    assert job_pod_verdict({"spec": {}}, [_pod(3)] * 7) == "Failed"


def test_job_pod_verdict_leaves_other_jobs_to_their_controller():
    from fairing.deployers.k8s.job import job_pod_verdict

    for spec in ({"completions": 3}, {"parallelism": 2}, {"podFailurePolicy": {"rules": []}},
                 {"backoffLimitPerIndex": 1, "completionMode": "Indexed"}, {"suspend": True},
                 {"successPolicy": {"rules": []}}):
        assert job_pod_verdict({"spec": {"backoffLimit": 0, **spec}}, [_pod(0)]) is None, spec
    # restartPolicy OnFailure: a failed container restarts in its pod; only the phase is final.
    assert job_pod_verdict({"spec": {"backoffLimit": 0}}, [_pod(3, restart="OnFailure")]) is None
    assert job_pod_verdict({"spec": {"backoffLimit": 0}}, [_pod(0, phase="Succeeded", restart="OnFailure")]) == "Succeeded"


def test_job_pod_verdict_counts_only_the_jobs_own_pods():
    """A run-id selector can match another Job's pods (a CronJob's runs share one run id): a pod
    another Job owns neither ends nor fails this one."""
    from fairing.deployers.k8s.job import job_pod_verdict

    def owned(pod, uid):
        pod["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "j", "uid": uid}]
        return pod

    job = {"metadata": {"uid": "u-1"}, "spec": {"backoffLimit": 0}}
    assert job_pod_verdict(job, [owned(_pod(0), "u-2")]) is None
    assert job_pod_verdict(job, [owned(_pod(3), "u-2"), owned(_pod(None), "u-1")]) is None
    assert job_pod_verdict(job, [owned(_pod(3), "u-2"), owned(_pod(0), "u-1")]) == "Succeeded"
    assert job_pod_verdict(job, [owned(_pod(0), "u-2"), owned(_pod(3), "u-1")]) == "Failed"


def shim_command(template: dict) -> dict:
    """The command a fairing-built image's template carries: the outputs shim around the script."""
    template["spec"]["containers"][0]["command"] = ["python3", ".fairing/outputs.py", "--", "python3", "train.py"]
    return template


def test_a_followed_job_waits_for_its_client_s_attach_only_when_it_will_come(kube):
    """The attach wait (stdin, FAIRING_ATTACH_WAIT) only on a Job the client follows (`follow`), one
    pod decides, not queued, and whose account may attach: the rig's ServiceAccount may not (asked
    on deploy, a server-side dry run here), the admin may; a render (dry run) shows it."""
    from fairing.deployers.k8s.job import attaches

    def main(d, *, render=True):
        m = d.render(fake_image("job-attach"))[0] if render else d.deploy(fake_image("job-attach")).manifests()[0]
        return m, m["spec"]["template"]["spec"]["containers"][0]

    def made(**kw):
        follow = kw.pop("follow", True)
        d = JobDeployer(kubeconfig=kw.pop("kubeconfig", kube.sa_kubeconfig), mutators=[shim_command], **kw)
        d.follow = follow
        return d

    job, c = main(made())
    assert c["stdin"] and c["stdinOnce"] and {"name": "FAIRING_ATTACH_WAIT", "value": "3"} in c["env"]
    assert attaches(job)
    for d in (made(follow=False), made(completions=2), made(queue="team-queue")):
        job, c = main(d)
        assert not c.get("stdin") and "FAIRING_ATTACH_WAIT" not in {e["name"] for e in c["env"]}
        assert not attaches(job)
    # A real deploy asks the API server first (server-side dry runs: nothing is created).
    job, c = main(made(dry_run=True), render=False)
    assert not c.get("stdin") and not attaches(job)  # the rig's Role has no pods/attach
    job, c = main(made(dry_run=True, kubeconfig=kube.kubeconfig, namespace=kube.namespace), render=False)
    assert c.get("stdin") and attaches(job)


def test_no_attach_wait_for_a_command_that_is_not_the_outputs_shim(kube):
    """Only fairing's outputs shim waits for "go" and keeps stdin from the command: an image run
    with a command of its own gets no stdin."""
    d = JobDeployer(kubeconfig=kube.sa_kubeconfig, mutators=[lambda t: t["spec"]["containers"][0].update(
        command=["sh", "-c", "cat"]) or t])
    d.follow = True
    c = d.render(fake_image("job-attach-own"))[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["sh", "-c", "cat"] and not c.get("stdin")

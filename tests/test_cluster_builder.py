"""The `cluster` builder: the kaniko pod spec on a real API server (kwok nodes run no containers,
so the test plays the kubelet where a container would have to run), and the real kaniko executor,
built from the Go module proxy, run in Podman with exactly the arguments the pod carries."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from fairing.builders.cluster import (
    CONTAINER,
    ClusterBuilder,
    digest_from_pod,
    result_of,
    wait_for_pod,
)
from fairing.builders.docker import context_file, dockerfile, download_wheels
from fairing.context import BuildContext
from fairing.errors import BuildError, ConfigError

# The executor is built from the Go module proxy. The proxy reachable here carries the last upstream
# release (the project is archived) but not the maintained fork's tags; the flags we use are the same.
KANIKO_MODULE = "github.com/GoogleContainerTools/kaniko"
KANIKO_VERSION = "v1.24.0"
MAIN = b'import six\nprint("built by kaniko", six.__version__, VERSION)\n'


def make_ctx(version: str = "1", requirements=("six==1.16.0",)) -> BuildContext:
    return BuildContext(files={"main.py": b"VERSION = %r\n" % version + MAIN}, entrypoint=("python3", "main.py"),
                        requirements=tuple(requirements), python="3.11")


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """An isolated Docker config (as after `docker login`), so no host credentials leak in."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    (tmp_path / "docker").mkdir()

    def login(host: str, user: str, password: str) -> None:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))

    return login


# --- no cluster needed -------------------------------------------------------------------------------

def test_pod_spec_carries_the_kaniko_contract(docker_config):
    docker_config("registry.example.com", "builder", "s3cret-pass")
    b = ClusterBuilder("127.0.0.1:5000/fairing/python:3.11", namespace="team")
    pod, secret = b.manifests(make_ctx(), "registry.example.com/team/train:v1", namespace="team", suffix="abc123")
    c = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
    assert c["args"] == [
        "--context=tar://stdin", "--dockerfile=Dockerfile", "--destination=registry.example.com/team/train:v1",
        "--image-name-with-digest-file=/dev/termination-log", "--reproducible", "--cache=true",
        "--cache-repo=registry.example.com/team/train/cache", "--insecure-registry=127.0.0.1:5000"]
    assert (c["stdin"], c["stdinOnce"], c["tty"]) == (True, True, False)
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["activeDeadlineSeconds"] == 1800
    assert c["volumeMounts"] == [{"name": "registry-auth", "mountPath": "/kaniko/.docker", "readOnly": True}]
    vol = pod["spec"]["volumes"][0]["secret"]
    assert vol == {"secretName": secret["metadata"]["name"], "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert base64.b64decode(config["auths"]["registry.example.com"]["auth"]) == b"builder:s3cret-pass"
    assert "s3cret" not in json.dumps(pod)
    # The dry-run plan shows both manifests with the secret redacted.
    plan = b.plan(make_ctx(), "registry.example.com/team/train:v1")
    assert "s3cret" not in json.dumps(plan) and "czNjcmV0" not in json.dumps(plan)
    assert [m["kind"] for m in plan["manifests"]] == ["Secret", "Pod"]


def test_no_login_means_no_secret_and_bad_targets_are_config_errors(docker_config):
    b = ClusterBuilder("python:3.11-slim")
    pod, secret = b.manifests(make_ctx(), "registry.example.com/team/train", namespace="ns")
    assert secret is None and "volumes" not in pod["spec"]
    assert "--insecure-registry" not in " ".join(pod["spec"]["containers"][0]["args"])  # nothing is loopback
    for target, words in [("oci:/tmp/out", "cannot write to"), ("registry.example.com/Team/x", "uppercase"),
                          ("registry.example.com/x@sha256:" + "a" * 64, "digest")]:
        with pytest.raises(ConfigError, match=words):
            b.plan(make_ctx(), target)


def test_result_of_a_finished_pod():
    digest = "sha256:" + "ab" * 32
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": CONTAINER, "state": {"terminated": {"exitCode": 0, "message": f"r/x:1@{digest}\n"}}}]}}
    assert digest_from_pod(pod) == result_of(pod) == digest
    pod["status"] = {"phase": "Failed", "containerStatuses": [
        {"name": CONTAINER, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
    with pytest.raises(BuildError) as e:
        result_of(pod, ["INFO[0002] Running: [/bin/sh -c make]", "error building image: exit status 2"])
    assert e.value.message == "kaniko build pod p failed (Error, exit code 1)"
    assert e.value.hint == "the executor's output ended with: error building image: exit status 2"
    # what the failing step printed is named too: kaniko's own last line is generic
    with pytest.raises(BuildError) as e:
        result_of(pod, ["INFO[0002] Running: [/bin/sh -c make]", "make: *** No rule to make target 'all'.",
                        "INFO[0003] Taking snapshot", "error building image: exit status 2"])
    assert e.value.hint == ("the executor's output ended with: error building image: exit status 2; "
                            "the step printed: make: *** No rule to make target 'all'.")


# --- on the test API server -----------------------------------------------------------------------------

@pytest.fixture
def kube_client(kube):
    from fairing.kube.client import Kube

    return Kube(kube.kubeconfig, namespace=kube.namespace)


def _play_kubelet(kube_client, name: str, status: dict) -> None:
    # kwok nodes run no containers, so nothing writes kaniko's termination message: write the status
    # a kubelet would report for a finished executor through the pods/status subresource.
    from fairing.kube.client import resource_for

    res = resource_for("v1", "Pod")
    kube_client.request("PATCH", res.path(kube_client.namespace, name, "status"), body={"status": status},
                        content_type="application/merge-patch+json")


def test_pod_on_the_api_server_and_digest_read_back(kube, kube_client, docker_config):
    docker_config("registry.example.com", "builder", "pw-" + uuid.uuid4().hex)
    b = ClusterBuilder("registry.example.com/base/python:3.11", kube=kube_client)
    pod, secret = b.manifests(make_ctx(), "registry.example.com/team/train:v1", namespace=kube.namespace)
    name = pod["metadata"]["name"]
    from fairing.builders.cluster import secret_manifest

    try:
        live = kube_client.create(pod)
        kube_client.create(secret_manifest(secret["metadata"]["name"], kube.namespace,
                                           base64.b64decode(secret["data"][".dockerconfigjson"]), owner=live))
        got = kube_client.get("v1", "Pod", name)
        assert got["spec"]["containers"][0]["args"] == pod["spec"]["containers"][0]["args"]
        assert got["spec"]["containers"][0]["stdinOnce"] is True
        s = kube_client.get("v1", "Secret", secret["metadata"]["name"])
        assert s["metadata"]["ownerReferences"][0]["uid"] == live["metadata"]["uid"]
        digest = "sha256:" + uuid.uuid4().hex * 2
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _play_kubelet(kube_client, name, {"phase": "Succeeded", "containerStatuses": [{
            "name": CONTAINER, "image": pod["spec"]["containers"][0]["image"], "imageID": "", "ready": False,
            "restartCount": 0, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                "message": f"registry.example.com/team/train:v1@{digest}\n"}}}]})
        done = wait_for_pod(kube_client, name, until=lambda p: False, timeout=30)
        assert result_of(done) == digest
    finally:
        kube_client.delete("v1", "Pod", name, propagation="Background")
        kube_client.delete("v1", "Secret", secret["metadata"]["name"])


# The build through the attach API, its digest, its failure and the cleanup of pod and Secret run
# for real on the rig's node: tests/test_node_kaniko.py (kwok's simulated attach closed the stream
# early under load, so the kwok versions of those tests tested kwok).


# --- the real kaniko executor in Podman --------------------------------------------------------------------

def build_executor(exe: Path) -> None:
    """`go install module/cmd/executor@v` asks the proxy for the version list (to check deprecation),
    which this proxy refuses; a throwaway module that requires the exact version builds the same
    binary without that query (as scripts/build-k8s does for Kubernetes)."""
    import tempfile

    exe.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(prefix="kaniko-build-") as work:
        def go(*args, timeout=1800):
            proc = subprocess.run(["go", *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
            assert proc.returncode == 0, f"go {' '.join(args)} failed:\n{proc.stderr[-3000:]}"

        go("mod", "init", "fairing.local/kaniko")
        go("mod", "edit", f"-require={KANIKO_MODULE}@{KANIKO_VERSION}")
        Path(work, "tools.go").write_text(f'//go:build tools\npackage tools\nimport _ "{KANIKO_MODULE}/cmd/executor"\n')
        go("mod", "tidy")
        tmp = exe.with_name(f".{exe.name}.{uuid.uuid4().hex[:6]}")
        go("build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), f"{KANIKO_MODULE}/cmd/executor")
        tmp.rename(exe)


def kaniko_image(engine) -> str:
    """An executor image like the published one (binary at /kaniko/executor, DOCKER_CONFIG=/kaniko/.docker),
    with the executor built from the Go module proxy once and cached."""
    from tests.rig.state import cache_dir

    if not shutil.which("go"):
        pytest.skip("Go is not installed: cannot build the kaniko executor (scripts/setup installs it)")
    bindir = cache_dir() / "bin"
    exe = bindir / f"kaniko-executor-{KANIKO_VERSION}"
    if not exe.exists():
        build_executor(exe)
    tag = f"localhost/fairing-test/kaniko:{KANIKO_VERSION}"
    have = subprocess.run(["podman", "image", "exists", tag]).returncode == 0
    if not have:
        root = exe.parent / f".kaniko-root-{uuid.uuid4().hex[:6]}"
        try:
            for d in ("kaniko/.docker", "kaniko/ssl/certs", "workspace", "etc", "tmp"):
                (root / d).mkdir(parents=True, exist_ok=True)
            shutil.copy2(exe, root / "kaniko" / "executor")
            if Path("/etc/ssl/certs/ca-certificates.crt").exists():
                shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "kaniko" / "ssl" / "certs")
            (root / "etc" / "nsswitch.conf").write_text("hosts: files dns\n")
            tar = root.with_suffix(".tar")
            with tarfile.open(tar, "w") as t:
                t.add(root, arcname=".")
            subprocess.run(["podman", "import",
                            "--change", "ENV PATH=/usr/local/bin:/kaniko", "--change", "ENV HOME=/root",
                            "--change", "ENV USER=root", "--change", "ENV SSL_CERT_DIR=/kaniko/ssl/certs",
                            "--change", "ENV DOCKER_CONFIG=/kaniko/.docker/", "--change", "WORKDIR /workspace",
                            "--change", 'ENTRYPOINT ["/kaniko/executor"]', str(tar), tag],
                           check=True, capture_output=True)
            tar.unlink()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return tag


def run_kaniko(image: str, args: list[str], context: bytes, tmp_path: Path, config_json: bytes | None = None):
    """Run the executor as the pod would: context on stdin, termination log and config mounted."""
    term = tmp_path / "termination-log"
    term.write_text("")
    cmd = ["podman", "run", "--rm", "-i", "--network=host", "-v", f"{term}:/dev/termination-log:rw,z"]
    if config_json is not None:
        (tmp_path / "config.json").write_bytes(config_json)
        cmd += ["-v", f"{tmp_path / 'config.json'}:/kaniko/.docker/config.json:ro"]
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
    proc = subprocess.run(cmd + [image] + args, input=context, capture_output=True, timeout=900, env=env)
    return proc, term.read_text()


def test_real_kaniko_builds_and_pushes_with_the_pod_args(engine, base_image, registry, tmp_path, docker_config):
    image = kaniko_image(engine)
    repo = f"{registry.host}/fairing-test/kaniko-{uuid.uuid4().hex[:8]}"
    builder = ClusterBuilder(base_image.docker)
    ctx = make_ctx("k1")
    pod, secret = builder.manifests(ctx, f"{repo}:v1", namespace="ns")
    assert secret is None  # the plain registry needs no login
    args = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)["args"]
    deps, pip_wheel = download_wheels(ctx.requirements, "3.11", "amd64")
    with context_file(ctx, dockerfile(ctx, base_image.docker, pip_wheel=pip_wheel), deps) as f:
        context = f.read()
    proc, message = run_kaniko(image, args, context, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    # The termination message is what the builder reads the digest from.
    fake_pod = {"metadata": {"name": "p"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": CONTAINER, "state": {"terminated": {"exitCode": 0, "message": message}}}]}}
    digest = result_of(fake_pod)
    import requests

    head = requests.head(f"{registry.url}/v2/{repo.split('/', 1)[1]}/manifests/v1", timeout=30, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    assert head.headers["Docker-Content-Digest"] == digest
    client = engine.client()
    try:
        client.images.pull(f"{repo}@{digest}")
        out = client.containers.run(f"{repo}@{digest}", remove=True).decode()
    finally:
        client.close()
    assert out.strip() == "built by kaniko 1.16.0 k1"


def test_real_kaniko_failure_exits_nonzero_without_a_digest(engine, base_image, registry, tmp_path, docker_config):
    image = kaniko_image(engine)
    repo = f"{registry.host}/fairing-test/kaniko-{uuid.uuid4().hex[:8]}"
    builder = ClusterBuilder(base_image.docker, run=["python3 -c 'raise SystemExit(\"no GPU here\")'"], cache=False)
    ctx = make_ctx("k2", requirements=())
    pod, _ = builder.manifests(ctx, f"{repo}:v1", namespace="ns")
    args = pod["spec"]["containers"][0]["args"]
    with context_file(ctx, dockerfile(ctx, base_image.docker, run=builder.run), None) as f:
        proc, message = run_kaniko(image, args, f.read(), tmp_path)
    assert proc.returncode != 0 and "no GPU here" in proc.stderr.decode()
    fake_pod = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": CONTAINER, "state": {"terminated": {"exitCode": proc.returncode, "reason": "Error", "message": message}}}]}}
    with pytest.raises(BuildError, match="kaniko build pod p failed"):
        result_of(fake_pod, proc.stderr.decode().splitlines())

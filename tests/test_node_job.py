"""Training workloads on the rig's real node (kubelet + containerd): the image fairing builds is
pulled and run, and what comes back (logs, exit codes, return values) is what the code did.

No kwok here: every pod runs on the real node (namespace defaults put the CLI's pods there; the
Python API tests add the node selector and toleration with ordinary pod mutators). Against a user's
own cluster, see the on_node fixture (tests/rig/plugin.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import fairing
from fairing.deployers.k8s.job import JobDeployer
from fairing.errors import DeployError
from fairing.kube.client import Kube

FAIR = [sys.executable, "-m", "fairing.cli"]


def fair(*args, env, cwd, timeout=600):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def train_on_node(on_node, tmp_path, entry: str, name: str):
    """`fair train ENTRY` on the real node, waited for: (the finished process, the env it ran with)."""
    env = on_node.cli_env()
    return fair("train", entry, "--registry", on_node.registry, "--base-image", on_node.base,
                "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env), env


def left_behind(on_node, name: str) -> list[str]:
    """Objects fairing made for `name` that still exist (Jobs, pods, secrets by label/name)."""
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    out = []
    if kube.get("batch/v1", "Job", name, on_node.namespace):
        out.append(f"job/{name}")
    for p in kube.list("v1", "Pod", on_node.namespace, label_selector=f"job-name={name}").get("items", []):
        out.append(f"pod/{p['metadata']['name']}")
    return out


def wait_gone(on_node, name: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := left_behind(on_node, name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


# --- `fair train`: script, directory, notebook -----------------------------------------------------

def test_fair_train_a_script_runs_it_in_a_pod_and_streams_its_real_log(on_node, tmp_path):
    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import hashlib, socket, sys
        print("python", sys.version.split()[0])
        print("digest", hashlib.sha256(b"fairing on a real node").hexdigest())
        print("host", socket.gethostname())
    """))
    name = uid("node-cli")
    env = on_node.cli_env()
    r = fair("train", "train.py", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
    try:
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        expect = __import__("hashlib").sha256(b"fairing on a real node").hexdigest()
        assert f"digest {expect}" in out
        # The code ran in the Job's pod (its hostname is the pod's name), not here.
        host = next(line.split("host ", 1)[1] for line in out.splitlines() if "host " in line)
        assert host.startswith(name + "-") and host != __import__("socket").gethostname()
        st = fair("status", name, "-n", on_node.namespace, "-o", "json", cwd=tmp_path, env=env)
        assert json.loads(st.stdout)["status"] == "Succeeded", st.stdout + st.stderr
        logs = fair("logs", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
        assert f"digest {expect}" in logs.stdout, logs.stdout + logs.stderr
        # The outputs shim's exit line (it ended the wait) is for fairing: shown by neither.
        assert "FAIRING_EXIT" not in out and "FAIRING_EXIT" not in logs.stdout, out + logs.stdout
    finally:
        d = fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    assert d.returncode == 0, d.stderr
    assert wait_gone(on_node, name) == []


def test_fair_train_a_directory_imports_its_own_modules(on_node, tmp_path):
    proj = tmp_path / "proj"
    (proj / "lib").mkdir(parents=True)
    (proj / "lib" / "__init__.py").write_text("")
    (proj / "lib" / "model.py").write_text("def fit(xs):\n    return sum(x * x for x in xs)\n")
    (proj / "train.py").write_text("from lib.model import fit\nprint('fitted', fit(range(1000)))\n")
    name = uid("node-dir")
    env = on_node.cli_env()
    r = fair("train", proj, "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"fitted {sum(x * x for x in range(1000))}" in r.stdout + r.stderr
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)


def notebook(cells: list[str]) -> str:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                   "outputs": [], "source": src} for i, src in enumerate(cells)]})


def test_fair_train_a_notebook_that_uses_ipython_display(on_node, tmp_path):
    """The issue's case: a notebook importing IPython.display must run in the image fairing built."""
    (tmp_path / "messy.ipynb").write_text(notebook([
        "from IPython.display import display\nimport statistics",
        "values = [3, 1, 4, 1, 5, 9, 2, 6]\ndisplay(statistics.mean(values))",
        "print('median', statistics.median(values))"]))
    name = uid("node-nb")
    r, env = train_on_node(on_node, tmp_path, "messy.ipynb", name)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "median 3.5" in r.stdout + r.stderr
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)


def test_a_failing_script_reports_its_exit_code_and_last_lines(on_node, tmp_path):
    (tmp_path / "bad.py").write_text(textwrap.dedent("""
        import sys
        print("epoch 1 loss 0.9", flush=True)
        print("diverged: loss is nan at epoch 2", flush=True)
        sys.exit(3)
    """))
    name = uid("node-fail")
    env = on_node.cli_env()
    r = fair("train", "bad.py", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, cwd=tmp_path, env=env)
    try:
        out = r.stdout + r.stderr
        assert r.returncode == 4, out
        assert "exited with code 3" in out, out
        assert "diverged: loss is nan at epoch 2" in out, out  # the script's last lines are shown
        assert "Traceback" not in r.stderr
        st = fair("status", name, "-n", on_node.namespace, "-o", "json", cwd=tmp_path, env=env)
        assert json.loads(st.stdout)["status"] == "Failed"
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)
    assert wait_gone(on_node, name) == []


def test_fair_logs_follow_a_live_pod_until_it_ends(on_node, tmp_path):
    (tmp_path / "ticks.py").write_text(textwrap.dedent("""
        import time
        for i in range(12):
            print("tick", i, flush=True)
            time.sleep(0.5)
        print("done ticking", flush=True)
    """))
    name = uid("node-follow")
    env = on_node.cli_env()
    r = fair("train", "ticks.py", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", on_node.namespace, "--name", name, "--detach", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
        deadline = time.monotonic() + 180
        while True:  # follow from while the pod is still running
            pods = kube.list("v1", "Pod", on_node.namespace, label_selector=f"job-name={name}")["items"]
            if pods and pods[0]["status"].get("phase") == "Running":
                break
            assert time.monotonic() < deadline, f"pod never ran: {pods}"
            time.sleep(0.2)
        started = time.monotonic()
        logs = fair("logs", "-f", name, "-n", on_node.namespace, cwd=tmp_path, env=env, timeout=120)
        took = time.monotonic() - started
        assert logs.returncode == 0, logs.stderr
        lines = [line.split("] ", 1)[-1] for line in logs.stdout.splitlines()]
        assert lines[-13:] == [f"tick {i}" for i in range(12)] + ["done ticking"]
        assert took > 1.0  # it waited for lines still to come, and returned once the pod ended
        st = fair("status", name, "-n", on_node.namespace, "-o", "json", cwd=tmp_path, env=env)
        assert json.loads(st.stdout)["status"] == "Succeeded"
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)


def test_a_burst_of_lines_at_the_exit_arrives_whole_once_and_in_order(on_node, tmp_path):
    """fair stops following a container's log as soon as its pod shows it terminated (the kubelet
    would close the stream only at its next check, up to 1 s later) and reads what was still in
    flight from the complete log: nothing lost, nothing twice, the unterminated last line too."""
    (tmp_path / "burst.py").write_text(textwrap.dedent("""
        import sys, time
        print("warming up", flush=True)
        time.sleep(1.5)  # the log is being followed by now
        for i in range(5000):
            print("line", i)
        sys.stdout.write("last words, no newline")
    """))
    name = uid("node-burst")
    r, env = train_on_node(on_node, tmp_path, "burst.py", name)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        lines = [line.split("] ", 1)[-1] for line in r.stdout.splitlines() if line.startswith(f"[{name}")]
        assert lines == ["warming up"] + [f"line {i}" for i in range(5000)] + ["last words, no newline"]
    finally:
        fair("delete", name, "-n", on_node.namespace, cwd=tmp_path, env=env)


# --- the Python API: a function's value comes back from the pod -------------------------------------

def test_trainjob_of_a_function_returns_its_value_from_the_pod(on_node):
    name = uid("node-fn")

    def fit(n):
        import socket

        return {"host": socket.gethostname(), "squares": sum(i * i for i in range(n))}

    job = fairing.TrainJob(fit, args=(100,), registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="job", deployer_options={"mutators": on_node.mutators()},
                           progress=False)
    h = job.submit()
    try:
        assert h.wait(timeout=300) == "Succeeded"
        value = h.result()
        assert value["squares"] == sum(i * i for i in range(100))
        assert value["host"].startswith(name + "-")
    finally:
        h.delete()
    assert wait_gone(on_node, name) == []


def test_config_fn_runs_the_call_remotely(on_node):
    from fairing import config

    c = config.Config()  # a private one: the module-level config is shared by every test
    c.set_deployer("job", namespace=on_node.namespace, kubeconfig=str(on_node.kubeconfig),
                   mutators=on_node.mutators())

    def cube(x):
        import socket

        return x ** 3, socket.gethostname()

    value, host = c.fn(cube, registry=on_node.registry, base_image=on_node.base)(7)
    assert value == 343
    assert host != __import__("socket").gethostname()


# --- failures, produced for real -------------------------------------------------------------------

def run_job(on_node, tmp_path, script: str, name: str, *, resources=None, mutators=()):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(script))
    job = fairing.TrainJob(tmp_path / f"{name}.py", registry=on_node.registry, base_image=on_node.base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                           deployer="job", resources=resources,
                           deployer_options={"mutators": [*on_node.mutators(), *mutators]}, progress=False)
    return job.submit()


def test_out_of_memory_is_reported_as_oomkilled(on_node, tmp_path):
    name = uid("node-oom")
    h = run_job(on_node, tmp_path, """
        blocks = []
        for _ in range(64):  # 1 GiB at most: without the limit this ends (and the test fails)
            blocks.append(bytearray(16 << 20))
        print("allocated 1 GiB: no memory limit applied", flush=True)
    """, name, resources={"memory": "64Mi"})
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=300)
        text = str(e.value) + " " + str(getattr(e.value, "hint", ""))
        assert "OOMKilled" in text or "out of memory" in text.lower(), text
        assert "64Mi" in text or "memory" in text.lower()
    finally:
        h.delete()
    assert wait_gone(on_node, name) == []


def test_non_zero_exit_through_the_api(on_node, tmp_path):
    name = uid("node-exit")
    h = run_job(on_node, tmp_path, """
        print("checkpoint missing: /data/ckpt.pt", flush=True)
        raise SystemExit(7)
    """, name)
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=300)
        assert "exited with code 7" in str(e.value)
        assert h.status() == "Failed"
        assert "checkpoint missing: /data/ckpt.pt" in h.log_text()  # the real log, from the kubelet
    finally:
        h.delete()
    assert wait_gone(on_node, name) == []


def test_a_missing_image_is_reported_as_a_pull_error(on_node, registry):
    from fairing.context import BuiltImage

    name = uid("node-pull")
    missing = "sha256:" + "0" * 64
    img = BuiltImage(ref=f"{on_node.registry}/no-such-image@{missing}", digest=missing)
    d = JobDeployer(namespace=on_node.namespace, kubeconfig=str(on_node.kubeconfig), name=name,
                    mutators=on_node.mutators())
    h = d.deploy(img)
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=120)
        text = str(e.value) + " " + str(getattr(e.value, "hint", ""))
        assert "cannot pull image" in text and "no-such-image" in text, text
        assert "not found" in text.lower(), text  # the registry's own answer, via containerd
    finally:
        h.delete()
    assert wait_gone(on_node, name) == []


@pytest.mark.parametrize("which", ["secure", "token"])
def test_a_private_registry_is_denied_without_the_secret_and_pulled_with_it(
        which, on_node, secure_registry, token_registry, base_image, tmp_path, monkeypatch):
    """The node's containerd has no credentials of its own: the pull needs the pod's image pull
    secret, which fairing makes from the local login (DOCKER_CONFIG here)."""
    import base64

    from fairing.deployers import pod

    if on_node.node.external:
        pytest.skip("needs the rig's private registries (127.0.0.1:5443/:5446) on the node")
    reg = {"secure": secure_registry, "token": token_registry}[which]
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    denied = uid(f"node-deny-{which}")
    # A new image each run: the node keeps what it pulled, and an image already there is used
    # without asking the registry (IfNotPresent), secret or not.
    (tmp_path / "private.py").write_text(f"print('pulled from the private registry')  # {denied}\n")
    base = {"secure": base_image.secure, "token": base_image.token}[which]
    job = fairing.TrainJob(tmp_path / "private.py", registry=f"{reg.host}/node-tests", base_image=base,
                           kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=denied,
                           deployer="job", progress=False, deployer_options={"mutators": on_node.mutators()},
                           builder_options={"ca_file": secure_registry.ca_file} if which == "secure" else None)
    h = job.submit()
    try:
        with pytest.raises(DeployError) as e:
            h.wait(timeout=180)
        text = str(e.value) + " " + str(getattr(e.value, "hint", ""))
        assert "cannot pull image" in text, text
        assert "401" in text or "unauthorized" in text.lower() or "authorization" in text.lower(), text
        assert "image_pull_secret" in text, text  # the hint says how to fix it
    finally:
        h.delete()
    assert wait_gone(on_node, denied) == []

    allowed = uid(f"node-allow-{which}")
    d = JobDeployer(namespace=on_node.namespace, kubeconfig=str(on_node.kubeconfig), name=allowed,
                    mutators=[*on_node.mutators(), pod.image_pull_secret()])
    h = d.deploy(job.image)
    try:
        assert h.wait(timeout=180) == "Succeeded"
        assert "pulled from the private registry" in h.log_text()
        assert h.get()["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": pod.pull_secret_name(reg.host)}]
        assert reg.password not in json.dumps(h.get())
    finally:
        h.delete()
    assert wait_gone(on_node, allowed) == []

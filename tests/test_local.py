"""The `local` deployer: process mode (temp dir + cached virtualenv) and container mode (the rig's
Podman engine: image built into the engine, loaded from an OCI layout, or pulled from the registry)."""
import time
import uuid
from pathlib import Path

import pytest

from fairing.context import BuildContext, BuiltImage
from fairing.deployers.template import pod_template
from fairing.deployers import pod
from fairing.deployers.local import LocalDeployer, resolve_mode
from fairing.engine.discover import find_engine
from fairing.errors import ConfigError, DeployError


def ctx_of(files: dict, entry=("python3", "-u", "main.py"), **kw) -> BuildContext:
    return BuildContext(files={k: v.encode() if isinstance(v, str) else v for k, v in files.items()},
                        entrypoint=tuple(entry), **kw)


def process_image(ctx: BuildContext) -> BuiltImage:
    return BuiltImage(ref="context:test", digest="", pod_template=pod_template("context:test", ctx), context=ctx)


# --- engine discovery --------------------------------------------------------------------------

def test_no_engine_means_process_mode(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr("fairing.engine.discover.DEFAULT_SOCKETS", ("/nonexistent/docker.sock",))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert resolve_mode("auto") == ("process", None)
    with pytest.raises(DeployError, match="no Docker/Podman API answered"):
        resolve_mode("container")


def test_dead_docker_host_is_not_an_engine(tmp_path):
    assert find_engine(f"unix://{tmp_path}/nothing.sock") is None


# --- process mode ------------------------------------------------------------------------------

def test_process_run_streams_logs_and_cleans_its_temp_dir():
    ctx = ctx_of({"main.py": "import os, time\nprint('cwd', os.getcwd())\nprint('runtime', os.environ['FAIRING_RUNTIME'])\n"
                             "time.sleep(0.3)\nprint('done')\n", "data/x.txt": "payload"})
    h = LocalDeployer(mode="process").deploy(process_image(ctx))
    assert h.mode == "process" and h.status() == "Running"
    lines = list(h.logs(follow=True))
    assert lines[1:] == ["runtime 1", "done"]
    root = Path(lines[0].split()[1]).parent
    assert (root / "app" / "data" / "x.txt").read_text() == "payload"
    assert h.wait() == "Succeeded" and h.status() == "Succeeded"
    h.delete()
    assert not root.exists() and h.status() == "Deleted"


def test_process_failure_names_exit_code_and_last_line():
    ctx = ctx_of({"main.py": "import sys\nprint('loading')\nsys.exit('bad input file')\n"})
    h = LocalDeployer(mode="process").deploy(process_image(ctx))
    with pytest.raises(DeployError, match="failed with exit code 1: bad input file"):
        h.wait()
    assert h.status() == "Failed"
    h.delete()


def test_process_wait_timeout_and_delete_kills_it():
    ctx = ctx_of({"main.py": "import time\ntime.sleep(60)\n"})
    h = LocalDeployer(mode="process").deploy(process_image(ctx))
    with pytest.raises(DeployError, match="still running after 0.3s"):
        h.wait(timeout=0.3)
    t = time.monotonic()
    h.delete()
    assert time.monotonic() - t < 10 and h.proc.poll() is not None


def test_process_mutators_env_and_secret_refs():
    ctx = ctx_of({"main.py": "import os\nprint(os.environ['GREETING'])\n"})
    h = LocalDeployer(mode="process", mutators=[pod.env({"GREETING": "hi there"}), pod.cpu("1")]).deploy(process_image(ctx))
    assert h.wait() == "Succeeded" and list(h.logs()) == ["hi there"]
    h.delete()
    with pytest.raises(ConfigError, match="comes from a Secret"):
        LocalDeployer(mode="process", mutators=[pod.env_from_secret("creds", ["TOKEN"])]).deploy(process_image(ctx))


@pytest.mark.slow
def test_process_requirements_get_a_cached_virtualenv():
    ctx = ctx_of({"main.py": "import six, sys\nprint(six.__version__, sys.prefix)\n"}, requirements=("six==1.16.0",))
    h1 = LocalDeployer(mode="process").deploy(process_image(ctx))
    h1.wait()
    version, prefix = list(h1.logs())[0].split()
    assert version == "1.16.0" and "venvs" in prefix
    t = time.monotonic()
    h2 = LocalDeployer(mode="process").deploy(process_image(ctx))
    h2.wait()
    assert list(h2.logs())[0].split()[1] == prefix  # the same venv, reused
    assert time.monotonic() - t < 10
    h1.delete()
    h2.delete()


@pytest.mark.slow
def test_process_bad_requirement_is_a_build_error_and_leaves_nothing(tmp_path, monkeypatch):
    from fairing.errors import BuildError

    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path / "cache"))
    ctx = ctx_of({"main.py": "print(1)\n"}, requirements=("no-such-package-fairing-test==0.0.1",))
    with pytest.raises(BuildError, match="installing requirements for the local run failed"):
        LocalDeployer(mode="process").deploy(process_image(ctx))
    assert list((tmp_path / "cache" / "venvs").iterdir()) == []


def test_function_result_in_process_mode():
    from fairing.preprocessors.function import FunctionPreprocessor

    def add(a, b):
        return {"sum": a + b}

    ctx = FunctionPreprocessor().prepare(add, args=(2, 3))
    h = LocalDeployer(mode="process").deploy(process_image(ctx))
    h.wait()
    assert h.result() == {"sum": 5}
    h.delete()


def test_render_describes_the_run_without_starting_it():
    ctx = ctx_of({"main.py": "print(1)\n"})
    [m] = LocalDeployer(mode="process", mutators=[pod.memory("1Gi")]).render(process_image(ctx))
    assert m["kind"] == "LocalRun" and m["spec"]["mode"] == "process"
    assert m["spec"]["resources"]["limits"]["memory"] == "1Gi"


# --- container mode (rig engine) ---------------------------------------------------------------

def build_in_engine(engine, base_image, ctx) -> BuiltImage:
    from fairing.builders.docker import DockerBuilder

    return DockerBuilder(base_image.docker, docker_host=engine.docker_host, push=False).build(
        ctx, f"localhost/fairing-test-local-{uuid.uuid4().hex[:6]}")


def test_container_run_with_resources_logs_and_result(engine, base_image):
    from fairing.preprocessors.function import FunctionPreprocessor

    def mul(a, b):
        import os
        print("in container", os.environ.get("FAIRING_RUNTIME"), os.environ.get("EXTRA"))
        return a * b

    ctx = FunctionPreprocessor().prepare(mul, args=(6, 7))
    image = build_in_engine(engine, base_image, ctx)
    d = LocalDeployer(mode="container", docker_host=engine.docker_host,
                      mutators=[pod.cpu("500m"), pod.memory("128Mi"), pod.env({"EXTRA": "x"})])
    h = d.deploy(image)
    try:
        assert h.mode == "container"
        assert h.wait(timeout=120) == "Succeeded"
        assert "in container 1 x" in list(h.logs())
        assert h.result() == 42
        attrs = engine.client().api.inspect_container(h.name)
        assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert attrs["HostConfig"]["Memory"] == 128 * 1024 * 1024
        assert attrs["Config"]["Labels"]["app.kubernetes.io/managed-by"] == "fairing"
        again = d.attach(h.name)
        assert again.status() == "Succeeded" and list(again.logs())[-1].startswith("FAIRING_RESULT:")
        assert any(w["name"] == h.name for w in d.list())
    finally:
        h.delete()
    assert h.status() == "Deleted"
    with pytest.raises(DeployError, match="no local workload named"):
        d.attach(h.name)


def test_container_failure_is_reported(engine, base_image):
    ctx = ctx_of({"main.py": "raise SystemExit('no GPU here')\n"})
    image = build_in_engine(engine, base_image, ctx)
    h = LocalDeployer(mode="container", docker_host=engine.docker_host).deploy(image)
    try:
        with pytest.raises(DeployError, match="failed with exit code 1: no GPU here"):
            h.wait(timeout=120)
        assert h.status() == "Failed"
    finally:
        h.delete()


def test_container_from_an_oci_layout_and_from_the_registry(engine, base_image, registry, tmp_path):
    from fairing.builders.append import AppendBuilder

    ctx = ctx_of({"main.py": "print('from the layout or registry')\n"})
    for target in (f"oci:{tmp_path / 'layout'}", f"{registry.host}/fairing-test/local-{uuid.uuid4().hex[:6]}"):
        image = AppendBuilder(base_image.docker).build(ctx, target)
        h = LocalDeployer(mode="container", docker_host=engine.docker_host).deploy(image)
        try:
            assert h.wait(timeout=120) == "Succeeded", target
            assert list(h.logs()) == ["from the layout or registry"], target
        finally:
            h.delete()


def test_a_container_that_cannot_start_is_removed(engine, base_image):
    """The docker SDK's run() is create + start: a command missing from the image fails at start and
    used to leave the created container in the engine. Now: a clear DeployError, nothing left."""
    from fairing.deployers.template import pod_template

    name = f"fairing-nostart-{uuid.uuid4().hex[:6]}"
    ctx = ctx_of({"main.py": "print(1)\n"}, entry=("no-such-command-fairing-test",))
    image = BuiltImage(ref=base_image.docker, digest="", pod_template=pod_template(base_image.docker, ctx),
                       context=ctx)
    with pytest.raises(DeployError) as e:
        LocalDeployer(mode="container", docker_host=engine.docker_host, name=name).deploy(image)
    assert f"could not start {name} (no-such-command-fairing-test)" in e.value.message
    assert "executable file not found" in e.value.message and "command exists in the image" in e.value.hint
    client = engine.client()
    try:
        assert client.containers.list(all=True, filters={"name": name}) == []
    finally:
        client.close()


def test_attach_to_a_local_model_server_gives_the_serving_handle(engine, base_image):
    """`fair status/delete NAME` go through LocalDeployer.attach: for a served model that must be the
    serving handle (readiness, url, predict), not a bare container handle that says "Running"."""
    from fairing.deployers.local.endpoint import LocalServingDeployer, LocalServingHandle
    from fairing.preprocessors.serve import ServePreprocessor

    class Echo:
        def predict(self, instances):
            return instances

    name = f"fairing-echo-{uuid.uuid4().hex[:6]}"
    ctx = ServePreprocessor().prepare(Echo, name="echo")
    image = build_in_engine(engine, base_image, ctx)
    served = LocalServingDeployer(name=name, docker_host=engine.docker_host).deploy(image)
    try:
        assert served.wait(120) == "Ready"
        found = LocalDeployer(mode="container", docker_host=engine.docker_host).attach(name)
        assert isinstance(found, LocalServingHandle)
        assert found.status() == "Ready" and found.url == served.url
        assert found.predict([[1, 2]]) == [[1, 2]]
        found.delete()
        assert served.status() == "Deleted"
    finally:
        served.delete()

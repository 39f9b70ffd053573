"""The `docker` builder: a generated Dockerfile built and pushed through Podman's Docker-compatible
API (the rig's `engine`), then pulled and run by the same engine."""
from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import uuid

import pytest
import requests

from fairing.builders.docker import DockerBuilder, context_file, dockerfile, parse_build_stream
from fairing.publish.engine import parse_push_stream
from fairing.context import BuildContext
from fairing.deployers.template import template_of
from fairing.errors import BuildError, ConfigError

# Two small wheels: a pure-Python one and a compiled cp311 manylinux one (checks the platform tags).
REQUIREMENTS = ("six==1.16.0", "MarkupSafe==2.1.5")
MAIN = b"""import six, markupsafe
print("hello from fairing", six.__version__, markupsafe.escape("<b>"), VERSION)
"""


def make_ctx(version: str = "1", requirements=REQUIREMENTS, **kw) -> BuildContext:
    files = {"main.py": b"VERSION = %r\n" % version + MAIN, "data/notes.txt": b"kept\n"}
    return BuildContext(files=files, entrypoint=("python3", "main.py"), requirements=tuple(requirements),
                        python="3.11", **kw)


def unique_repo(registry, name: str) -> str:
    return f"{registry.host}/fairing-test/{name}-{uuid.uuid4().hex[:8]}"


def run_image(engine, ref: str) -> str:
    client = engine.client()
    try:
        client.images.pull(ref)
        out = client.containers.run(ref, remove=True, stdout=True, stderr=True)
        return out.decode()
    finally:
        client.close()


def registry_digest(registry, repo: str, tag: str) -> str | None:
    name = repo.split("/", 1)[1]
    r = requests.head(f"{registry.url}/v2/{name}/manifests/{tag}", timeout=30, headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    return r.headers.get("Docker-Content-Digest") if r.ok else None


# --- no engine needed ------------------------------------------------------------------------------

def test_dockerfile_installs_dependencies_before_copying_code():
    text = dockerfile(make_ctx(env={"GREETING": 'say "hi" for $5'}), "base:1", pip_wheel="pip-24.0-py3-none-any.whl",
                      run=["echo system step"])
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "FROM base:1"
    order = [next(i for i, ln in enumerate(lines) if ln.startswith(p))
             for p in ("WORKDIR /app", "RUN echo system step", "COPY .fairing/deps/", "RUN python3 /tmp/fairing-deps/pip-24.0",
                       "COPY app/ /app/", "ENTRYPOINT")]
    assert order == sorted(order), text
    assert 'ENV GREETING="say \\"hi\\" for \\$5"' in lines
    assert lines[-1] == 'ENTRYPOINT ["python3", "main.py"]'
    # No requirements: no dependency step at all.
    assert "fairing-deps" not in dockerfile(make_ctx(requirements=()), "base:1")


def test_bad_input_is_a_config_error_before_any_engine_call():
    b = DockerBuilder("base:1", docker_host="unix:///nonexistent/docker.sock")
    for target, words in [("oci:/tmp/x", "cannot write to"), ("127.0.0.1:5000/Team/Train", "invalid image repository"),
                          ("127.0.0.1:5000/team/train@sha256:" + "a" * 64, "names a digest"),
                          ("127.0.0.1:5000/team/train:bad tag!", "invalid")]:
        with pytest.raises(ConfigError, match=words):
            b.build(make_ctx(requirements=()), target)
    with pytest.raises(ConfigError, match="line break"):
        b.plan(make_ctx(requirements=(), env={"A": "x\ny"}), "127.0.0.1:5000/team/train")
    with pytest.raises(ConfigError, match="invalid requirement"):
        b.build(make_ctx(requirements=("--index-url=http://evil",)), "127.0.0.1:5000/team/train")


def test_context_is_reproducible_and_laid_out_for_the_dockerfile(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    blobs = []
    for d in ("a", "b"):  # the same files from two directories, written at different times
        src = tmp_path / d / "train.py"
        src.write_text("print('x')\n")
        ctx = BuildContext(files={"train.py": src, "gen/shim.py": b"pass\n"}, entrypoint=("python3", "train.py"))
        with context_file(ctx, "FROM x\n", None) as f:
            blobs.append(f.read())
    assert blobs[0] == blobs[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blobs[0]))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["Dockerfile", "app", "app/gen", "app/gen/shim.py", "app/train.py"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 0)}


def test_docker_format_error_stream_names_the_step():
    # Canned Docker Engine stream: Podman (our real engine) prints "STEP n/m:", real Docker prints
    # "Step n/m :" and a different error text, which no engine on this machine can produce.
    events = [{"stream": "Step 1/3 : FROM base\n"}, {"stream": " ---> abc\n"},
              {"stream": "Step 2/3 : RUN make\n"}, {"stream": "make: *** No targets.  Stop.\n"},
              {"errorDetail": {"code": 2, "message": "The command '/bin/sh -c make' returned a non-zero code: 2"},
               "error": "The command '/bin/sh -c make' returned a non-zero code: 2"}]
    with pytest.raises(BuildError) as e:
        parse_build_stream(events, lambda line: None)
    assert e.value.message == ("image build failed at step 2/3 `RUN make`: "
                               "The command '/bin/sh -c make' returned a non-zero code: 2")
    assert e.value.hint == "the step's output ended with: make: *** No targets.  Stop."


def test_push_stream_digest_and_denied_hint():
    digest = "sha256:" + "1" * 64
    # Docker's format: per-layer progress and an aux record (Podman's stream carries only the status line).
    events = [{"status": "Pushing", "id": "l1", "progressDetail": {"current": 10, "total": 20}},
              {"status": "Pushing", "id": "l1", "progressDetail": {"current": 20, "total": 20}},
              {"status": "Pushed", "id": "l1"}, {"status": "Layer already exists", "id": "l2"},
              {"status": f"v1: digest: {digest} size: 528"}, {"aux": {"Tag": "v1", "Digest": digest, "Size": 528}}]
    got, stats = parse_push_stream(events, lambda line: None, "r/x:v1")
    assert got == digest and (stats.layers_uploaded, stats.layers_skipped, stats.bytes_uploaded) == (1, 1, 20)
    with pytest.raises(BuildError, match="push of 127.0.0.1:5443/x:1 failed") as e:
        parse_push_stream([{"error": "unauthorized: authentication required"}], lambda line: None, "127.0.0.1:5443/x:1")
    assert e.value.hint == "log in first: docker login 127.0.0.1:5443"


def test_no_engine_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(BuildError) as e:
        DockerBuilder("base:1").build(make_ctx(requirements=()), "127.0.0.1:5000/team/train")
    assert e.value.message == "no Docker engine at unix:///nonexistent/docker.sock; start one or use --builder append"


# --- against Podman's Docker API and the local registry ---------------------------------------------

def test_build_push_pull_and_run(engine, base_image, registry, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", engine.docker_host)  # the builder honours DOCKER_HOST
    repo = unique_repo(registry, "run")
    lines: list[str] = []
    img = DockerBuilder(base_image.docker, output=lines.append).build(make_ctx("1"), repo)
    assert img.ref == f"{repo}@{img.digest}" and img.digest.startswith("sha256:")
    assert img.tag and registry_digest(registry, repo, img.tag) == img.digest  # what we report is what was pushed
    assert template_of(img)["spec"]["containers"][0]["image"] == img.ref
    assert any("pip" in ln and "install" in ln for ln in lines)  # the build output was streamed
    assert run_image(engine, img.ref).strip() == "hello from fairing 1.16.0 &lt;b&gt; 1"


def test_without_push_the_image_stays_in_the_engine_pinned_by_id(engine, base_image, registry):
    repo = f"localhost/fairing-test/local-{uuid.uuid4().hex[:8]}"
    img = DockerBuilder(base_image.docker, docker_host=engine.docker_host, push=False,
                        output=lambda line: None).build(make_ctx("local", requirements=()), repo)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", img.ref) and img.digest == img.ref
    client = engine.client()
    try:
        out = client.containers.run(img.ref, entrypoint=["python3", "-c", "print(open('main.py').read().split()[2])"],
                                    remove=True).decode()
    finally:
        client.close()
    assert out.strip() == "'local'"


def test_failing_run_step_is_a_build_error_naming_the_step(engine, base_image, registry):
    repo = unique_repo(registry, "fail")
    step = "python3 -c 'import sys; print(\"disk on fire\"); sys.exit(3)'"
    builder = DockerBuilder(base_image.docker, docker_host=engine.docker_host, run=[step], output=lambda line: None)
    with pytest.raises(BuildError) as e:
        builder.build(make_ctx(requirements=()), f"{repo}:v1")
    assert f"`RUN {step}`" in e.value.message and "failed at step 3/" in e.value.message
    assert e.value.hint == "the step's output ended with: disk on fire"
    # Nothing was pushed under the tag.
    assert registry_digest(registry, repo, "v1") is None


def test_code_change_reuses_the_dependency_layers(engine, base_image, registry):
    repo = unique_repo(registry, "cache")
    builder_logs: list[list[str]] = []
    images = []
    run_id = uuid.uuid4().hex[:8]  # fresh code, so no earlier run's cache can hide a wrong step order
    for version in (f"1-{run_id}", f"2-{run_id}"):
        lines: list[str] = []
        builder = DockerBuilder(base_image.docker, docker_host=engine.docker_host, output=lines.append)
        images.append(builder.build(make_ctx(version), f"{repo}:v{version[0]}"))
        builder_logs.append(lines)
    # The engine reported a cache hit for the pip step of the second build...
    second = builder_logs[1]
    pip_step = next(i for i, ln in enumerate(second) if ln.startswith("STEP") and "pip install" in ln)
    assert "Using cache" in second[pip_step + 1], second[pip_step:pip_step + 3]
    # ...so both images share every layer up to the code layer, which differs.
    client = engine.client()
    try:
        # The engine knows its builds by tag (the pushed digest belongs to the recompressed manifest).
        layers = [client.api.inspect_image(f"{repo}:{img.tag}")["RootFS"]["Layers"] for img in images]
    finally:
        client.close()
    assert len(layers[0]) == len(layers[1]) and layers[0][:-1] == layers[1][:-1] and layers[0][-1] != layers[1][-1]
    assert run_image(engine, images[1].ref).strip().endswith(f" 2-{run_id}")


def test_push_with_credentials_from_docker_config(engine, base_image, token_registry, tmp_path, monkeypatch):
    # Credentials come from $DOCKER_CONFIG/config.json (as after `docker login`) and reach the
    # engine as X-Registry-Auth; without them the push fails with a login hint.
    repo = unique_repo(token_registry, "auth")
    builder = DockerBuilder(base_image.docker, docker_host=engine.docker_host, output=lambda line: None)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BuildError, match=f"push of {repo}:v1 failed") as e:
        builder.build(make_ctx(requirements=()), f"{repo}:v1")
    assert "docker login" in e.value.hint
    import base64

    token = base64.b64encode(f"{token_registry.username}:{token_registry.password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {token_registry.host: {"auth": token}}}))
    img = builder.build(make_ctx(requirements=()), f"{repo}:v1")
    assert img.ref.startswith(f"{repo}@sha256:")


@pytest.mark.slow
def test_requirement_without_a_wheel_is_a_build_error_before_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    from fairing.builders.docker import download_wheels

    with pytest.raises(BuildError) as e:
        download_wheels(["fairing-surely-not-a-package-x7q==1.0"], "3.11", "amd64")
    assert e.value.message.startswith("could not download wheels for fairing-surely-not-a-package-x7q==1.0: ")
    assert "wheels only" in e.value.hint
    assert not list((tmp_path / "docker" / "wheels").iterdir())  # no half-filled cache entry

"""Secrets stay out of images, manifests, logs and dry-run output; context paths stay inside the
context; the rig's tar extraction refuses path traversal.

The scan builds and deploys for real: registry credentials (the TLS + htpasswd registry, via a
temporary DOCKER_CONFIG), a cluster Secret referenced as env (and an image pull secret made from
the local login), and secret-looking variables in the environment of the build. Then it walks every
blob of the pushed image (layers decompressed), its config and manifest, the Job and Pod as stored
by the API server, every log record and everything printed, and `fair ... --dry-run` output.
Positive controls make sure each place scanned really holds what we think (so a scan that reads
nothing cannot pass)."""
from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import os
import secrets
import tarfile
import uuid
from pathlib import Path

import pytest

from fairing.errors import ConfigError, FairingError

from .conftest import clean_env, error_lines, fair, pull, training_dir


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _forms(secret: str) -> list[bytes]:
    """The shapes a leaked secret takes: as is, base64 on its own and inside user:password."""
    return [secret.encode(), _b64(secret).encode()]


def _layer_bytes(blob: bytes) -> bytes:
    """A layer's uncompressed tar, plus every member name and PAX header (already in the tar, but
    stated so a compressed or oddly encoded name can't hide)."""
    raw = gzip.decompress(blob)
    names = []
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            names.append(m.name + " " + m.linkname + " " + json.dumps(m.pax_headers))
    return raw + "\n".join(names).encode()


@pytest.fixture
def secret_world(tmp_path, monkeypatch, secure_registry, kube):
    """The secrets in play, and where they live."""
    uid = uuid.uuid4().hex[:8]
    cluster_value = "cluster-" + secrets.token_urlsafe(18)
    env_values = {"AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_urlsafe(18),
                  "WANDB_API_KEY": "wandb-" + secrets.token_urlsafe(18)}
    url_token = "ghp_" + secrets.token_hex(16)
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    auth = _b64(f"{secure_registry.username}:{secure_registry.password}")
    (docker_config / "config.json").write_text(json.dumps({"auths": {secure_registry.host: {"auth": auth}}}))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no other credentials found by accident
    for k, v in env_values.items():
        monkeypatch.setenv(k, v)
    secret_name = f"rel-scan-{uid}"
    admin = kube.kube()
    admin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, "namespace": kube.namespace},
                  "stringData": {"api-key": cluster_value}}, kube.namespace)
    world = {
        "uid": uid, "secret_name": secret_name, "docker_config": docker_config, "url_token": url_token,
        "needles": {
            "registry password": _forms(secure_registry.password),
            "registry basic auth": [auth.encode()],
            "cluster secret": _forms(cluster_value),
            **{f"env {k}": _forms(v) for k, v in env_values.items()},
            "token in a requirement URL": _forms(url_token),
        },
    }
    yield world
    admin.delete("v1", "Secret", secret_name, kube.namespace)


def _scan(places: dict[str, bytes], needles: dict[str, list[bytes]]) -> list[str]:
    return [f"{what} found in {where}" for where, data in places.items()
            for what, forms in needles.items() if any(f in data for f in forms)]


def test_no_secret_in_layers_config_manifest_cluster_objects_logs_or_dry_run(
        tmp_path, secret_world, secure_registry, base_image, kube, caplog, capfd):
    from fairing.api import TrainJob
    from fairing.deployers import pod

    uid = secret_world["uid"]
    marker = f"code-marker-{uid}"
    proj = training_dir(tmp_path, marker=marker)
    name = f"rel-scan-{uid}"
    image_name = f"scan-{uid}"
    mutators = [pod.env_from_secret(secret_world["secret_name"], {"API_KEY": "api-key"}), pod.image_pull_secret(),
                pod.env({"EPOCHS": "3"})]
    caplog.set_level(logging.DEBUG)  # every record from every logger, fairing's included
    job = TrainJob(str(proj), registry=f"{secure_registry.host}/reliability", image_name=image_name,
                   base_image=base_image.secure, deployer="job", builder="append", namespace=kube.namespace,
                   kubeconfig=str(kube.sa_kubeconfig), name=name, progress=True,
                   builder_options={"ca_file": secure_registry.ca_file},
                   deployer_options={"mutators": mutators})
    rendered = job.dry_run()
    handle = job.submit()
    admin = kube.kube()
    try:
        assert handle.wait(timeout=180) == "Succeeded"
        repo = f"reliability/{image_name}"
        ref = job.image.ref.split("@", 1)[1]
        img = pull(secure_registry.url, repo, ref, auth=(secure_registry.username, secure_registry.password),
                   verify=secure_registry.ca_file)
        stored_job = admin.get("batch/v1", "Job", name, kube.namespace)
        pods = admin.list("v1", "Pod", kube.namespace, label_selector=f"job-name={name}")["items"]
        pull_secret = admin.get("v1", "Secret", pod.pull_secret_name(secure_registry.host), kube.namespace)
    finally:
        handle.delete()
    out, err = capfd.readouterr()
    logs = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.args!r}" for r in caplog.records)

    # `fair --dry-run` with the same credentials and environment, plus a token in a requirement URL.
    env = clean_env(KUBECONFIG=kube.sa_kubeconfig, DOCKER_CONFIG=secret_world["docker_config"],
                    HOME=tmp_path / "home", REQUESTS_CA_BUNDLE=secure_registry.ca_file,
                    AWS_SECRET_ACCESS_KEY=os.environ["AWS_SECRET_ACCESS_KEY"],
                    WANDB_API_KEY=os.environ["WANDB_API_KEY"])
    req = f"private-pkg @ git+https://ci:{secret_world['url_token']}@git.example.invalid/team/pkg.git"
    dry = {}
    for cmd in (["train", "proj"], ["build", "proj"], ["train", "proj", "-o", "json"]):
        r = fair(*cmd, "--registry", f"{secure_registry.host}/reliability", "--image-name", image_name,
                 "--base-image", base_image.secure, "-n", kube.namespace, "-r", req, "--env", "EPOCHS=3",
                 "--dry-run", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        dry[" ".join(cmd)] = r.stdout + r.stderr
    # A failing push (wrong password) prints one error line: it must not carry any credential.
    bad_config = tmp_path / "bad-docker-config"
    bad_config.mkdir()
    wrong = "wrong-" + secrets.token_urlsafe(12)
    (bad_config / "config.json").write_text(json.dumps(
        {"auths": {secure_registry.host: {"auth": _b64(f"{secure_registry.username}:{wrong}")}}}))
    r = fair("build", "proj", "--registry", f"{secure_registry.host}/reliability", "--image-name", image_name,
             "--base-image", base_image.secure, cwd=tmp_path, env={**env, "DOCKER_CONFIG": str(bad_config)})
    failed_push, _ = error_lines(r, 3)
    assert "401" in failed_push

    places = {
        "the image manifest": img.manifest_raw,
        "the image config": img.config_raw,
        **{f"layer {i} ({d['digest'][:19]})": _layer_bytes(b) for i, (b, d) in enumerate(zip(img.layers, img.manifest["layers"]))},
        "the Job stored by the API server": json.dumps(stored_job).encode(),
        "the Pods stored by the API server": json.dumps(pods).encode(),
        "handle.manifests()": json.dumps(handle.manifests()).encode(),
        "TrainJob.dry_run()": json.dumps(rendered, default=str).encode(),
        "log records": logs.encode(),
        "stdout/stderr of the run": (out + err).encode(),
        **{f"`fair {k} --dry-run`": v.encode() for k, v in dry.items()},
        "the failed push's output": (r.stdout + r.stderr).encode(),
    }
    needles = {**secret_world["needles"], "wrong registry password": _forms(wrong)}
    assert _scan(places, needles) == []

    # Positive controls: the scan reads real data, and every secret was really in play.
    assert any(marker.encode() in _layer_bytes(b) for b in img.layers)  # the code layer was read
    assert len(img.layers) == len(img.manifest["layers"]) >= 2
    main = next(c for c in stored_job["spec"]["template"]["spec"]["containers"] if c["name"] == "main")
    assert {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": secret_world["secret_name"], "key": "api-key"}}} in main["env"]
    assert {"name": "EPOCHS", "value": "3"} in main["env"]  # plain env values do reach the manifest
    assert stored_job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": pod.pull_secret_name(secure_registry.host)}]
    # The pull secret holds the registry login: the credentials were used, and went only there.
    assert secure_registry.password.encode() in base64.b64decode(pull_secret["data"][".dockerconfigjson"]) \
        or _b64(f"{secure_registry.username}:{secure_registry.password}").encode() in base64.b64decode(pull_secret["data"][".dockerconfigjson"])
    assert "git.example.invalid" in dry["build proj"] and "private-pkg" in dry["build proj"]  # the requirement was shown, redacted
    assert logs and err  # there were log records and progress output to scan


# --- context paths stay inside the context -----------------------------------------------------
@pytest.mark.parametrize("dst", ["../escape.txt", "app/../../escape.txt", "../../../../etc/cron.d/fairing"])
def test_builder_refuses_context_paths_outside_the_context(tmp_path, registry, base_image, rel_cache, dst):
    from fairing.builders.append import AppendBuilder
    from fairing.context import BuildContext

    from .conftest import tags

    ctx = BuildContext(files={"train.py": b"print(1)\n", dst: b"escaped"}, entrypoint=("python3", "train.py"))
    repo = f"reliability/escape-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigError) as exc:
        AppendBuilder(base_image.docker, cache_dir=rel_cache).build(ctx, f"{registry.host}/{repo}:v1")
    assert exc.value.message == f"invalid path in image: {'app/' + dst!r}"
    assert exc.value.hint == "paths must stay inside the image and not use '..'"
    assert tags(registry.url, repo) is None


@pytest.mark.parametrize("dst", ["../escape.txt", "../../escape.txt", "/tmp/fairing-escape-{uid}.txt"])
def test_write_context_keeps_files_inside_the_root(tmp_path, dst):
    from fairing.context import BuildContext, write_context

    uid = uuid.uuid4().hex[:8]
    dst = dst.format(uid=uid)
    root = tmp_path / "run" / "app"
    ctx = BuildContext(files={"train.py": b"print(1)\n", dst: b"escaped"}, entrypoint=("python3", "train.py"))
    escaped = Path(dst) if dst.startswith("/") else (root / dst).resolve()
    try:
        raised = None
        try:
            write_context(ctx, root)
        except FairingError as e:
            raised = e
        assert not escaped.exists(), f"write_context wrote {escaped}, outside {root}"
        assert isinstance(raised, ConfigError)
    finally:
        if escaped.exists() and not escaped.is_relative_to(root):
            escaped.unlink()


def test_nested_symlink_climbing_out_of_the_context_is_refused(tmp_path):
    from fairing.preprocessors.python import PythonPreprocessor

    proj = training_dir(tmp_path)
    (tmp_path / "outside.txt").write_text("outside\n")
    (proj / "pkg" / "deep").mkdir(parents=True)
    os.symlink("../../../outside.txt", proj / "pkg" / "deep" / "up.txt")
    with pytest.raises(FairingError) as exc:
        PythonPreprocessor().prepare(proj)
    assert exc.value.message == f"pkg/deep/up.txt is a symlink to {tmp_path}/outside.txt, outside the build context {proj}"


def test_include_outside_the_directory_ships_under_its_own_name(tmp_path):
    from fairing.preprocessors.python import PythonPreprocessor

    proj = training_dir(tmp_path)
    (tmp_path / "outside.txt").write_text("outside\n")
    ctx = PythonPreprocessor(include=["../outside.txt"]).prepare(proj)
    assert sorted(ctx.files) == ["outside.txt", "train.py"]
    assert all(not k.startswith(("/", "..")) and ".." not in k.split("/") for k in ctx.files)


# --- the rig's tar extraction refuses traversal ------------------------------------------------
def _tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """(type, name, data-or-linkname) -> a tar file. type: f file, l symlink, h hard link, c char device."""
    with tarfile.open(path, "w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "f":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
                continue
            info.type = {"l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "d": tarfile.DIRTYPE}[kind]
            info.linkname = data
            tar.addfile(info)
    return path


TRAVERSALS = {
    "dot-dot": [("f", "../evil", "x")],
    "dot-dot-inside": [("d", "a", ""), ("f", "a/../../evil", "x")],
    "absolute": [("f", "/tmp/evil-{uid}", "x")],
    "write-through-absolute-symlink": [("l", "etc", "{outside}"), ("f", "etc/evil", "x")],
    "write-through-relative-symlink": [("l", "up", "../outside"), ("f", "up/evil", "x")],
    "symlink-escaping": [("l", "link", "../../outside/evil")],
    "hardlink-outside": [("h", "passwd", "../outside/secret")],
    "device-node": [("c", "dev-sda", "")],
}


@pytest.mark.parametrize("case", list(TRAVERSALS))
def test_rig_tar_extraction_rejects_path_traversal(tmp_path, case):
    from tests.rig.tarball import UnsafeTarError, check_tar, safe_extract

    uid = uuid.uuid4().hex[:8]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep out\n")
    members = [(k, n.format(uid=uid, outside=outside), d.format(uid=uid, outside=outside))
               for k, n, d in [("f", "ok.txt", "fine")] + TRAVERSALS[case]]
    tar = _tar(tmp_path / "evil.tar", members)
    dest = tmp_path / "dest"
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeTarError):
        check_tar(tar)
    with pytest.raises(UnsafeTarError):
        safe_extract(tar, dest)
    # Checked before anything was written: not even the harmless first member.
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before] in ([], ["dest"])
    assert not Path(f"/tmp/evil-{uid}").exists() and not (tmp_path / "evil").exists()
    assert (outside / "secret").read_text() == "keep out\n"


def test_rig_tar_extraction_keeps_a_sound_archive(tmp_path):
    from tests.rig.tarball import safe_extract

    tar = _tar(tmp_path / "ok.tar", [("d", "usr", ""), ("f", "usr/a.txt", "a"), ("l", "usr/b", "a.txt"),
                                     ("l", "usr/abs", "/usr/a.txt"), ("h", "usr/c", "usr/a.txt")])
    names = safe_extract(tar, tmp_path / "dest")
    assert names == ["usr", "usr/a.txt", "usr/b", "usr/abs", "usr/c"]
    assert (tmp_path / "dest/usr/b").read_text() == "a" and (tmp_path / "dest/usr/c").read_text() == "a"


def test_trainjob_builder_options_reach_the_default_builder(tmp_path, secure_registry):
    from fairing.api import TrainJob

    proj = training_dir(tmp_path)
    job = TrainJob(str(proj), registry=f"{secure_registry.host}/reliability", base_image="127.0.0.1:5000/x:1",
                   deployer="job", namespace="default", builder_options={"ca_file": secure_registry.ca_file})
    builder = job.plan().builder
    assert builder.name == "append" and builder.options.get("ca_file") == secure_registry.ca_file


# --- run records, MLflow and exported pipeline components ----------------------------------------
def test_no_secret_in_run_records_mlflow_or_exported_components(tmp_path, secure_registry, base_image):
    """Secrets a run touches (registry login, secret env values, a token in a requirement URL, a
    secret script argument, an MLflow token) are in no run record, no MLflow param/tag/artifact and
    no exported KFP component."""
    from mlflow.tracking import MlflowClient

    from tests.rig.mlflow import start

    uid = uuid.uuid4().hex[:8]
    server = start(tmp_path / "mlflow")
    try:
        docker_config = tmp_path / "docker-config"
        docker_config.mkdir()
        auth = _b64(f"{secure_registry.username}:{secure_registry.password}")
        (docker_config / "config.json").write_text(json.dumps({"auths": {secure_registry.host: {"auth": auth}}}))
        env_secret, arg_secret, url_token, mlflow_token = ("aws-" + secrets.token_urlsafe(18), "key-" + secrets.token_urlsafe(18),
                                                           "ghp_" + secrets.token_hex(16), "mlf-" + secrets.token_urlsafe(18))
        store = tmp_path / "runs" / "runs.db"
        env = clean_env(DOCKER_CONFIG=docker_config, HOME=tmp_path / "home", REQUESTS_CA_BUNDLE=secure_registry.ca_file,
                        AWS_SECRET_ACCESS_KEY=env_secret, FAIRING_RUNS=store, MLFLOW_TRACKING_URI=server.uri,
                        MLFLOW_TRACKING_TOKEN=mlflow_token,
                        # HOME is a fresh dir (no stray credentials): keep the shared layer cache.
                        # REQUESTS_CA_BUNDLE holds only the rig's CA: fairing adds it to the default
                        # roots, so PyPI stays trusted with no PIP_CERT workaround.
                        FAIRING_CACHE=os.environ.get("FAIRING_CACHE") or Path.home() / ".cache" / "fairing")
        proj = training_dir(tmp_path, marker=f"m-{uid}")
        # A successful local run with a secret env value and a secret argument.
        ok = fair("train", "proj", "--local-mode", "process", "--env", f"AWS_SECRET_ACCESS_KEY={env_secret}",
                  "--", "--api-key", arg_secret, cwd=tmp_path, env=env)
        assert ok.returncode == 0, ok.stderr
        # A build that fails on a requirement whose URL carries a token (pip's error names the URL).
        req = f"private-pkg @ git+https://ci:{url_token}@git.example.invalid/team/pkg.git"
        bad = fair("build", "proj", "--registry", f"{secure_registry.host}/reliability", "--image-name", f"rec-{uid}",
                   "--base-image", base_image.secure, "-r", req, cwd=tmp_path, env=env)
        assert bad.returncode == 3, bad.stderr
        # An exported pipeline component, pushed with the registry login.
        (proj / "steps.py").write_text("def fit(epochs: int = 1):\n    return epochs\n")
        exp = fair("export", "kfp", "proj/steps.py:fit", "--registry", f"{secure_registry.host}/reliability",
                   "--base-image", base_image.secure, "-o", "fit.yaml", cwd=tmp_path, env=env)
        assert exp.returncode == 0, exp.stderr

        runs_json = fair("runs", "-o", "json", cwd=tmp_path, env=env).stdout
        records = json.loads(runs_json)
        shows = {r["id"]: fair("runs", "show", r["id"], cwd=tmp_path, env=env).stdout for r in records}
        client = MlflowClient(tracking_uri=server.uri)
        mlflow_data = []
        for e in client.search_experiments():
            for run in client.search_runs([e.experiment_id]):
                mlflow_data.append(json.dumps({"params": run.data.params, "tags": run.data.tags,
                                               "metrics": run.data.metrics}))
                path = client.download_artifacts(run.info.run_id, "fairing/run.json", str(tmp_path / "dl" / run.info.run_id))
                mlflow_data.append(Path(path).read_text())
        db = b"".join(p.read_bytes() for p in store.parent.iterdir() if p.name.startswith("runs.db"))
        places = {"the run store (sqlite + WAL)": db, "`fair runs -o json`": runs_json.encode(),
                  **{f"`fair runs show {k}`": v.encode() for k, v in shows.items()},
                  "MLflow params, tags, metrics and run.json": "\n".join(mlflow_data).encode(),
                  "the exported component": (tmp_path / "fit.yaml").read_bytes(),
                  # Not ok.stdout: that is the workload's own log, and train.py prints its arguments.
                  "fair's output": (ok.stderr + bad.stdout + bad.stderr + exp.stdout + exp.stderr).encode()}
        needles = {"registry password": _forms(secure_registry.password), "registry basic auth": [auth.encode()],
                   "secret env value": _forms(env_secret), "secret argument": _forms(arg_secret),
                   "token in a requirement URL": _forms(url_token), "MLflow token": _forms(mlflow_token)}
        assert _scan(places, needles) == []

        # Positive controls: three records (train, build, export), each command's details are there.
        assert sorted(r["command"] for r in records) == ["build", "export", "train"]
        train = next(r for r in records if r["command"] == "train")
        assert train["params"]["argv"] == ["--api-key", "***"] and train["params"]["api_key"] == "***"
        assert "env(AWS_SECRET_ACCESS_KEY)" in json.dumps(train["how"])  # the name is recorded, not the value
        build = next(r for r in records if r["command"] == "build")
        assert build["status"] == "Failed" and "git.example.invalid" in json.dumps(build)
        assert len(mlflow_data) == 2 * 3 and "@sha256:" in (tmp_path / "fit.yaml").read_text()
        assert arg_secret in ok.stdout  # the secret argument really reached the workload
    finally:
        server.stop()


# --- the outputs store's credentials (issue 21) ------------------------------------------------------
def test_the_outputs_credentials_reach_only_the_runs_secret(tmp_path, on_node, s3_server):
    """A run that keeps its outputs in S3: the secret key is in the run's Secret while the run lives
    (mounted as a file, never an env value), and nowhere else: not in the Job, its pods, the
    handle's manifests, the dry run, the record, the pod's log, nor the command's output; the
    Secret is gone once the run ended and the outputs are in the bucket."""
    from fairing.api import TrainJob
    from fairing.kube.client import Kube

    bucket = s3_server.scoped_bucket
    s3_server.create_bucket(bucket)
    key, secret = s3_server.scoped_access_key, s3_server.scoped_secret_key
    (tmp_path / "save.py").write_text("import os\nopen(os.path.join(os.environ['FAIRING_OUTPUT_DIR'], 'm.bin'), 'wb').write(b'm')\n")
    name = f"rel-out-{uuid.uuid4().hex[:6]}"
    admin = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    seen: dict[str, bytes] = {}
    env = {"AWS_ENDPOINT_URL": s3_server.pod_endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "FAIRING_RUNS": str(tmp_path / "runs.db")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        job = TrainJob(str(tmp_path / "save.py"), registry=on_node.registry, base_image=on_node.base, deployer="job",
                       namespace=on_node.namespace, kubeconfig=str(on_node.kubeconfig), name=name, progress=False,
                       outputs=f"s3://{bucket}/scan", deployer_options={"mutators": on_node.mutators()})
        seen["TrainJob.dry_run()"] = json.dumps(job.dry_run(), default=str).encode()
        h = job.submit()
        try:
            secret_obj = admin.get("v1", "Secret", f"fairing-outputs-{h.run.id}", on_node.namespace)
            seen["the Job"] = json.dumps(admin.get("batch/v1", "Job", name, on_node.namespace)).encode()
            assert h.wait(timeout=300) == "Succeeded"
            seen["the pods"] = json.dumps(admin.list("v1", "Pod", on_node.namespace,
                                                     label_selector=f"job-name={name}")["items"]).encode()
            seen["handle.manifests()"] = json.dumps(h.manifests()).encode()
            seen["the pod's log"] = "\n".join(h.logs()).encode()
            seen["the run record"] = json.dumps(h.run.doc).encode()
            gone = admin.get("v1", "Secret", f"fairing-outputs-{h.run.id}", on_node.namespace)
        finally:
            h.delete()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert _scan(seen, {"S3 secret key": _forms(secret)}) == []
    # Positive controls: the Secret held the key (as a file), the pod mounted it, the upload happened.
    assert secret_obj is not None and secret.encode() in base64.b64decode(secret_obj["data"]["auth.json"])
    assert secret_obj["metadata"]["ownerReferences"][0]["name"] == name
    assert b"fairing-outputs-" in seen["the Job"] and b'"secretKeyRef"' not in seen["the Job"]
    assert gone is None
    assert [f["path"] for f in json.loads(seen["the run record"])["outputs"]["files"]] == ["m.bin"]

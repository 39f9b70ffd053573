"""Run outputs (issue 21): what a run writes to $FAIRING_OUTPUT_DIR outlives it, in the outputs
store, and comes back by run id. Local runs against the local store; the in-pod shim
(image_runtime/outputs.py) against real registries (plain and Bearer-token); faults a real part
produces (a closed port, a killed upload, a file still being written, a full volume)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fairing.image_runtime import outputs as shim

FAIR = [sys.executable, "-m", "fairing.cli"]
SHIM = Path(shim.__file__)

SAVE_MODEL = textwrap.dedent("""
    import os, sys
    d = os.environ.get("FAIRING_OUTPUT_DIR", "outputs")
    os.makedirs(os.path.join(d, "ckpt"), exist_ok=True)
    with open(os.path.join(d, "model.joblib"), "wb") as f:
        f.write(bytes(range(256)) * 4096)
    with open(os.path.join(d, "ckpt", "epoch-1.txt"), "w") as f:
        f.write("loss 0.5\\n")
    print("saved")
    if len(sys.argv) > 1 and sys.argv[1] == "fail":
        raise SystemExit("diverged at epoch 2")
""")
MODEL_BYTES = bytes(range(256)) * 4096


def fair(*args, env, cwd, timeout=300):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def local_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG"))}
    env.update(FAIRING_CACHE=str(tmp_path / "cache"), FAIRING_RUNS=str(tmp_path / "runs.db"), KUBECONFIG="")
    return env


def last_run(env, cwd) -> dict:
    r = fair("runs", "-o", "json", "--last", "1", env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


# --- local runs: the contract and fetching -----------------------------------------------------------

def test_a_local_run_keeps_its_outputs_and_fair_runs_outputs_returns_the_same_bytes(tmp_path, local_env):
    (tmp_path / "train.py").write_text(SAVE_MODEL)
    r = fair("train", "train.py", "--local-mode", "process", env=local_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = last_run(local_env, tmp_path)
    files = {f["path"]: f for f in run["outputs"]["files"]}
    assert set(files) == {"model.joblib", "ckpt/epoch-1.txt"}
    assert files["model.joblib"]["digest"] == "sha256:" + hashlib.sha256(MODEL_BYTES).hexdigest()
    assert files["model.joblib"]["mediaType"] == shim.MODEL_MEDIA_TYPE  # ModelPack: a model file
    show = fair("runs", "show", run["id"], env=local_env, cwd=tmp_path)
    assert f"model.joblib  {len(MODEL_BYTES)} bytes  sha256:" in show.stdout, show.stdout
    got = fair("runs", "outputs", run["id"][:6], "--dest", tmp_path / "got", env=local_env, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "got" / "model.joblib").read_bytes() == MODEL_BYTES
    assert (tmp_path / "got" / "ckpt" / "epoch-1.txt").read_text() == "loss 0.5\n"
    one = fair("runs", "outputs", run["id"], "--path", "nope.bin", env=local_env, cwd=tmp_path)
    assert one.returncode != 0 and "has no output 'nope.bin'" in one.stderr and "model.joblib" in one.stderr
    assert "Traceback" not in one.stderr


def test_a_failed_run_keeps_its_checkpoint(tmp_path, local_env):
    (tmp_path / "train.py").write_text(SAVE_MODEL)
    r = fair("train", "train.py", "fail", "--local-mode", "process", env=local_env, cwd=tmp_path)
    assert r.returncode != 0
    run = last_run(local_env, tmp_path)
    assert run["status"] == "Failed"
    assert {f["path"] for f in run["outputs"]["files"]} == {"model.joblib", "ckpt/epoch-1.txt"}
    import fairing.runs

    os.environ["FAIRING_RUNS"] = local_env["FAIRING_RUNS"]
    try:
        d = fairing.runs.outputs(run["id"], tmp_path / "ck", path="ckpt/epoch-1.txt")
    finally:
        del os.environ["FAIRING_RUNS"]
    assert (d / "ckpt" / "epoch-1.txt").read_text() == "loss 0.5\n"


def test_outputs_dir_works_outside_fairing(tmp_path, monkeypatch):
    import fairing

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAIRING_OUTPUT_DIR", raising=False)
    assert fairing.outputs_dir() == Path("outputs") and (tmp_path / "outputs").is_dir()
    monkeypatch.setenv("FAIRING_OUTPUT_DIR", str(tmp_path / "o2"))
    assert fairing.outputs_dir() == tmp_path / "o2" and (tmp_path / "o2").is_dir()


def test_bad_outputs_store_is_one_clear_error_before_anything_runs(tmp_path, local_env):
    (tmp_path / "train.py").write_text("print('ran')\n")
    r = fair("train", "train.py", "--local-mode", "process", "--outputs", "ftp://x/y", env=local_env, cwd=tmp_path)
    assert r.returncode != 0 and "unknown outputs store 'ftp://x/y'" in r.stderr and "Traceback" not in r.stderr
    assert "ran" not in r.stdout


KUBECONFIG_NOWHERE = textwrap.dedent("""
    apiVersion: v1
    kind: Config
    clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
    users: [{name: u, user: {token: not-a-real-token}}]
    contexts: [{name: x, context: {cluster: c, user: u, namespace: team}}]
    current-context: x
""")


@pytest.mark.parametrize("store", ["s3://bucket/runs", "pvc://claim/team"])
def test_a_dry_run_shows_the_outputs_env_and_a_redacted_secret(tmp_path, local_env, store):
    """`fair train --dry-run` on a cluster prints what the run would apply for its outputs: the
    store's env and volumes on the pod, and the run's credentials Secret with placeholders (never a
    value); a pvc:// store has no credentials, so no Secret, and the claim mounted. No API call (the
    kubeconfig's server is a closed port)."""
    import yaml

    (tmp_path / "train.py").write_text("print('ran')\n")
    (tmp_path / "kubeconfig").write_text(KUBECONFIG_NOWHERE)
    secret_key = "s3cr3t-value-never-shown"
    env = {**local_env, "KUBECONFIG": str(tmp_path / "kubeconfig"), "AWS_ACCESS_KEY_ID": "AKIDDRYRUN",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_ENDPOINT_URL": "http://10.0.0.1:8333"}
    r = fair("train", "train.py", "--dry-run", "--deployer", "job", "--registry", "registry.example.com/team",
             "--base-image", "registry.example.com/python:3.11", "--outputs", store, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert secret_key not in r.stdout + r.stderr and "AKIDDRYRUN" not in r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d and "kind" in d]
    job = next(d for d in docs if d["kind"] == "Job")
    run_id = job["metadata"]["labels"]["fairing.dev/run-id"]
    pod = job["spec"]["template"]["spec"]
    env_of = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env_of["FAIRING_OUTPUT_DIR"] == "/tmp/fairing-output"
    assert json.loads(env_of["FAIRING_OUTPUTS_STORE"])["kind"] == ("s3" if store.startswith("s3") else "dir")
    # The run's identity as a real run puts it on the pod and objects (no record is made).
    assert env_of["FAIRING_RUN_ID"] == run_id == job["spec"]["template"]["metadata"]["labels"]["fairing.dev/run-id"]
    assert env_of["FAIRING_IMAGE"] == pod["containers"][0]["image"]
    source_hash = job["metadata"]["labels"]["fairing.dev/source-hash"]
    assert job["metadata"]["annotations"]["fairing.dev/source-digest"].startswith("sha256:" + source_hash)
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if store.startswith("s3"):
        (sec,) = secrets
        assert docs.index(sec) < docs.index(job)  # created before the workload, as a real run does
        assert sec["metadata"]["name"] == f"fairing-outputs-{run_id}" and sec["metadata"]["namespace"] == "team"
        assert sec["data"] == {"auth.json": "<redacted: set at deploy from your store credentials>"}
        assert env_of["FAIRING_OUTPUTS_AUTH"].endswith("/auth.json")
        assert [v["secret"]["secretName"] for v in pod["volumes"]] == [f"fairing-outputs-{run_id}"]
    else:
        assert secrets == [] and "FAIRING_OUTPUTS_AUTH" not in env_of
        assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]] == ["claim"]


def test_a_dry_run_labels_its_manifests_as_a_run_would_and_records_nothing(tmp_path, local_env):
    """The source hash a dry run shows is the code's (the same code, the same hash; an edit, another),
    each dry run has its own run id, and no run record is made."""
    import yaml

    (tmp_path / "kubeconfig").write_text(KUBECONFIG_NOWHERE)
    env = {**local_env, "KUBECONFIG": str(tmp_path / "kubeconfig"), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def dry(code):
        (tmp_path / "train.py").write_text(code)
        r = fair("train", "train.py", "--dry-run", "--deployer", "job", "--registry", "registry.example.com/team",
                 "--base-image", "registry.example.com/python:3.11", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        job = next(d for d in yaml.safe_load_all(r.stdout) if d and d.get("kind") == "Job")
        return job["metadata"]["labels"]["fairing.dev/run-id"], job["metadata"]["labels"]["fairing.dev/source-hash"]

    (id1, h1), (id2, h2), (_, h3) = dry("print('a')\n"), dry("print('a')\n"), dry("print('b')\n")
    assert h1 == h2 != h3 and id1 != id2
    runs = fair("runs", "-o", "json", env=env, cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    assert json.loads(runs.stdout) == []


# --- the shim, against real stores -----------------------------------------------------------------

def run_shim(tmp_path, command, *, spec, creds=None, out_dir=None, run_id="r1", timeout=120, extra_env=None):
    out_dir = out_dir or tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
    env.update(FAIRING_OUTPUT_DIR=str(out_dir), FAIRING_OUTPUTS_STORE=json.dumps(spec), FAIRING_RUN_ID=run_id,
               **(extra_env or {}))
    if creds is not None:
        (tmp_path / "auth.json").write_text(json.dumps(creds))
        env["FAIRING_OUTPUTS_AUTH"] = str(tmp_path / "auth.json")
    return subprocess.run([sys.executable, str(SHIM), "--", *command], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def writer(tmp_path, body: str) -> list[str]:
    (tmp_path / "job.py").write_text(textwrap.dedent(body))
    return ["python3", "job.py"]


def test_registry_store_with_token_auth_keeps_an_oci_artifact_and_never_uploads_a_file_twice(tmp_path, token_registry):
    spec = {"kind": "registry", "url": token_registry.url, "repo": "outputs-test/runs"}
    creds = {"username": token_registry.username, "password": token_registry.password}
    cmd = writer(tmp_path, """
        import os
        d = os.environ["FAIRING_OUTPUT_DIR"]
        open(os.path.join(d, "model.safetensors"), "wb").write(b"w" * 3_000_000)
        open(os.path.join(d, "metrics.json"), "w").write('{"acc": 0.9}')
    """)
    r = run_shim(tmp_path, cmd, spec=spec, creds=creds, run_id="tok1")
    assert r.returncode == 0, r.stderr
    assert "outputs saved: 2 files" in r.stderr and token_registry.password not in r.stderr + r.stdout
    be = shim.RegistryBackend(token_registry.url, "outputs-test/runs", creds["username"], creds["password"])
    doc = be.get_run("tok1")
    assert doc["record"]["status"] == "Succeeded" and doc["record"]["exit_code"] == 0
    assert {f["path"] for f in doc["files"]} == {"model.safetensors", "metrics.json"}
    assert "tok1" in be.list_runs()
    # The artifact: artifactType, the record as config, one layer per file titled by its path.
    status, _, body = be._request("GET", "/v2/outputs-test/runs/manifests/run-tok1",
                                  headers={"Accept": shim.MANIFEST_MEDIA_TYPE})
    m = json.loads(body)
    assert m["artifactType"] == shim.ARTIFACT_TYPE and m["config"]["mediaType"] == shim.RECORD_MEDIA_TYPE
    assert {layer["annotations"][shim.TITLE]: layer["mediaType"] for layer in m["layers"]} == {
        "model.safetensors": shim.MODEL_MEDIA_TYPE, "metrics.json": shim.FILE_MEDIA_TYPE}
    dest = tmp_path / "fetched.bin"
    be.get_blob(next(f["digest"] for f in doc["files"] if f["path"] == "model.safetensors"), str(dest))
    assert dest.read_bytes() == b"w" * 3_000_000

    # A second run with the same model: its blob is not uploaded again (0 bytes of model data).
    class Counting(shim.RegistryBackend):
        uploaded = 0

        def put_blob(self, digest, size, path):
            Counting.uploaded += size
            super().put_blob(digest, size, path)

    again = Counting(token_registry.url, "outputs-test/runs", creds["username"], creds["password"])
    shim.save(str(tmp_path / "out"), again, "tok2", {"id": "tok2"})
    assert Counting.uploaded == 0
    # Wrong credentials: one line, no password, not retried forever.
    bad = run_shim(tmp_path, ["true"], spec=spec, creds={"username": "fairing", "password": "wrong"}, run_id="tok3")
    assert bad.returncode == shim.EXIT_NOT_SAVED and "outputs not saved:" in bad.stderr
    assert "wrong" not in bad.stderr


def test_an_unreachable_store_fails_the_run_after_retries(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: a real refused connection
    cmd = writer(tmp_path, """
        import os
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.pkl"), "wb").write(b"m")
    """)
    r = run_shim(tmp_path, cmd, spec={"kind": "registry", "url": f"http://127.0.0.1:{port}", "repo": "x/y"})
    assert r.returncode == shim.EXIT_NOT_SAVED, r.stderr
    assert r.stderr.count("retrying") >= 3
    assert r.stderr.strip().splitlines()[-1].startswith("fairing: outputs not saved: ")


def test_the_command_exit_code_wins_and_an_empty_dir_is_fine(tmp_path):
    store = tmp_path / "store"
    r = run_shim(tmp_path, ["python3", "-c", "raise SystemExit(7)"], spec={"kind": "dir", "path": str(store)})
    assert r.returncode == 7
    assert "no files in the outputs dir; the run's record is saved" in r.stderr
    doc = shim.DirBackend(str(store)).get_run("r1")
    assert doc["files"] == [] and doc["record"]["status"] == "Failed" and doc["record"]["exit_code"] == 7


def test_a_symlink_out_of_the_dir_is_refused_and_the_rest_kept(tmp_path):
    (tmp_path / "secret.txt").write_text("not an output")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pkl").write_bytes(b"m")
    (out / "leak").symlink_to(tmp_path / "secret.txt")
    (out / "alias.pkl").symlink_to(out / "model.pkl")  # inside: kept
    store = tmp_path / "store"
    r = run_shim(tmp_path, ["true"], spec={"kind": "dir", "path": str(store)}, out_dir=out)
    assert r.returncode == 0, r.stderr
    assert "leak points outside the outputs dir: not saved" in r.stderr
    doc = shim.DirBackend(str(store)).get_run("r1")
    assert sorted(f["path"] for f in doc["files"]) == ["alias.pkl", "model.pkl"] and doc["refused"] == ["leak"]


def test_a_file_still_being_written_is_not_kept_half_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # A process the command left behind keeps appending to its log while the shim saves.
    cmd = writer(tmp_path, f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time\\nf = open({str(out / 'live.log')!r}, 'ab', 0)\\n"
                          "t = time.time()\\nwhile time.time() - t < 60 and f.tell() < 1 << 30:\\n    f.write(b'x' * 65536)\\n    time.sleep(0.001)"],
                         start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    """)
    r = run_shim(tmp_path, cmd, spec={"kind": "dir", "path": str(tmp_path / "store")}, out_dir=out)
    subprocess.run(["pkill", "-f", str(out / "live.log")], check=False)
    assert r.returncode == shim.EXIT_NOT_SAVED, r.stderr
    assert "live.log kept changing while it was saved" in r.stderr
    assert shim.DirBackend(str(tmp_path / "store")).get_run("r1") is None  # no index: no half run


def test_an_upload_killed_half_way_leaves_no_tag_and_the_next_try_completes(tmp_path, registry_factory):
    reg = registry_factory()  # a private registry: its upload directory shows when bytes are arriving
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.bin").write_bytes(os.urandom(1 << 20) * 200)  # 200 MiB
    spec = {"kind": "registry", "url": reg.url, "repo": f"outputs-test/kill-{os.getpid()}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
    env.update(FAIRING_OUTPUT_DIR=str(out), FAIRING_OUTPUTS_STORE=json.dumps(spec), FAIRING_RUN_ID="k1")
    p = subprocess.Popen([sys.executable, str(SHIM), "--", "true"], env=env, stderr=subprocess.PIPE)

    def uploading() -> bool:
        try:
            return any(d.stat().st_size > 0 for d in reg.data_dir.rglob("_uploads/*/data"))
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 60
    while not uploading() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    p.kill()  # half-way: the blob's bytes are on the wire, the run's index is not written yet
    p.wait()
    be = shim.RegistryBackend(reg.url, spec["repo"])
    assert be.get_run("k1") is None and "k1" not in be.list_runs()
    r = subprocess.run([sys.executable, str(SHIM), "--", "true"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = be.get_run("k1")
    assert doc["files"][0]["size"] == 200 << 20


def test_a_full_store_volume_fails_the_run_with_the_reason(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(vol)], check=True)
    try:
        cmd = writer(tmp_path, """
            import os
            open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.pkl"), "wb").write(b"m" * 3_000_000)
        """)
        r = run_shim(tmp_path, cmd, spec={"kind": "dir", "path": str(vol / "store")})
        assert r.returncode == shim.EXIT_NOT_SAVED, r.stderr
        assert "outputs not saved:" in r.stderr and "No space left on device" in r.stderr
        assert not list((vol / "store" / "blobs" / "sha256").glob("*.part"))  # nothing half-written kept
        assert shim.DirBackend(str(vol / "store")).get_run("r1") is None
    finally:
        subprocess.run(["umount", str(vol)], check=False)


def test_only_rank_zero_saves():
    assert shim.is_rank_zero({})
    assert not shim.is_rank_zero({"RANK": "1"}) and shim.is_rank_zero({"RANK": "0"})
    assert not shim.is_rank_zero({"PET_NODE_RANK": "2"})
    chief = json.dumps({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "chief", "index": 0}})
    worker0 = json.dumps({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "worker", "index": 0}})
    assert shim.is_rank_zero({"TF_CONFIG": chief}) and not shim.is_rank_zero({"TF_CONFIG": worker0})


MARK = "0123456789abcdef"


def test_on_a_job_the_exit_line_comes_last_after_the_outputs_are_saved(tmp_path):
    """$FAIRING_EXIT_MARK (set on a Job's pod): the shim's very last output is
    FAIRING_EXIT:<nonce>:<code>, after the save said so; the command never sees the nonce."""
    store = tmp_path / "store"
    cmd = writer(tmp_path, """
        import os, sys
        print("mark seen by the command:", os.environ.get("FAIRING_EXIT_MARK"), flush=True)
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.pkl"), "w").write("m")
        sys.stdout.write("no newline")
    """)
    r = run_shim(tmp_path, cmd, spec={"kind": "dir", "path": str(store)}, extra_env={"FAIRING_EXIT_MARK": MARK})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"mark seen by the command: None\nno newlineFAIRING_EXIT:{MARK}:0\n"
    assert "outputs saved: 1 file" in r.stderr
    assert shim.DirBackend(str(store)).get_run("r1")["record"]["status"] == "Succeeded"


def test_without_a_store_the_exit_line_carries_the_command_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
    env.update(FAIRING_OUTPUT_DIR=str(tmp_path / "out"), FAIRING_EXIT_MARK=MARK)
    for command, code in ((["python3", "-c", "raise SystemExit(3)"], 3),
                          (["python3", "-c", "import os; os.kill(os.getpid(), 9)"], 137)):
        r = subprocess.run([sys.executable, str(SHIM), "--", *command], env=env, capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert r.returncode == code
        assert r.stdout.splitlines()[-1] == f"FAIRING_EXIT:{MARK}:{code}"
    # No mark (every other kind): the command is exec'd, nothing printed after it.
    del env["FAIRING_EXIT_MARK"]
    r = subprocess.run([sys.executable, str(SHIM), "--", "python3", "-c", "print('x')"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.stdout == "x\n" and r.returncode == 0


def _attached_shim(tmp_path, wait: str):
    """The shim as a Job's pod runs it with FAIRING_ATTACH_WAIT: stdin a pipe this test holds
    (the attach session), the command reporting what it sees and when it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
    env.update(FAIRING_OUTPUT_DIR=str(tmp_path / "out"), FAIRING_EXIT_MARK=MARK, FAIRING_ATTACH_WAIT=wait)
    body = ("import os, sys, time; print('started', time.time(), os.environ.get('FAIRING_ATTACH_WAIT'), "
            "repr(sys.stdin.read()), flush=True)")
    return subprocess.Popen([sys.executable, str(SHIM), "--", "python3", "-c", body], env=env, cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _started(out: str) -> tuple[float, str, str]:
    first = out.splitlines()[0].split(" ", 3)
    assert first[0] == "started", out
    return float(first[1]), first[2], first[3]


def test_attach_wait_starts_the_command_on_go_with_no_stdin_and_no_wait_env(tmp_path):
    """FAIRING_ATTACH_WAIT: nothing of the command runs (or prints) before the client's "go" on
    stdin; then it runs at once, with stdin /dev/null and the env var taken out."""
    p = _attached_shim(tmp_path, "30")
    time.sleep(0.8)
    assert p.poll() is None  # still waiting: the command has not run
    sent = time.time()
    p.stdin.write("go\nmore input the command must not see\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    started, wait_env, stdin = _started(out)
    assert sent <= started < sent + 5
    assert wait_env == "None" and stdin == "''"
    assert out.splitlines()[-1] == f"FAIRING_EXIT:{MARK}:0"


def test_attach_wait_ends_at_eof_or_at_the_timeout(tmp_path):
    """The attach session closed (EOF) or nobody attached: the command runs anyway, at once on
    EOF, after the wait's seconds otherwise (never longer)."""
    p = _attached_shim(tmp_path, "30")
    time.sleep(0.3)
    closed = time.time()
    p.stdin.close()
    p.stdin = None  # communicate() would flush it
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert _started(out)[0] < closed + 5
    t0 = time.time()
    p = _attached_shim(tmp_path, "1.5")  # stdin held open, nothing written
    p.wait(timeout=30)
    out, err = p.stdout.read(), p.stderr.read()
    p.stdin.close()
    assert p.returncode == 0, err
    assert 1.4 <= _started(out)[0] - t0 < 6

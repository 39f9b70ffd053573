"""The S3 outputs store backend (fairing/image_runtime/outputs_s3.py) against a real S3 server:
SeaweedFS's gateway, started by the rig (tests/rig/s3.py), with its own identities and signature
checks. Nothing is mocked; each test works under a prefix of its own."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fairing.image_runtime.outputs_s3 import S3Backend, S3Error

BUCKET = "fairing-outputs-test"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.create_bucket(BUCKET)


@pytest.fixture
def store(s3_server, bucket):
    return s3_server.backend(bucket, "tests/" + uuid.uuid4().hex[:12])


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """`size` bytes that differ per seed (so blobs of other tests never collide); returns the digest."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)   # 1 MiB
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            f.write(piece)
            sha.update(piece)
            left -= len(piece)
    return "sha256:" + sha.hexdigest()


def test_blob_round_trip_is_idempotent(store, tmp_path):
    src = tmp_path / "model.bin"
    digest = make_file(src, 6 * 1024 * 1024 + 123, seed=1)
    assert not store.has_blob(digest)
    store.put_blob(digest, src.stat().st_size, str(src))
    assert store.has_blob(digest)
    store.put_blob(digest, src.stat().st_size, str(src))   # the same content again: fine
    dest = tmp_path / "back" / "model.bin"
    dest.parent.mkdir()
    store.get_blob(digest, str(dest))
    assert dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["model.bin"]   # no .part left behind


def test_missing_blob_is_a_clear_final_error(store, tmp_path):
    digest = "sha256:" + "ab" * 32
    dest = tmp_path / "x"
    with pytest.raises(S3Error) as e:
        store.get_blob(digest, str(dest))
    assert not e.value.retryable
    assert digest in str(e.value) and store.describe() in str(e.value) and "NoSuchKey" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_server_refuses_a_body_that_is_not_its_digest(store, tmp_path):
    src = tmp_path / "f"
    make_file(src, 1000, seed=2)
    wrong = "sha256:" + "cd" * 32
    with pytest.raises(S3Error) as e:
        store.put_blob(wrong, 1000, str(src))
    assert not e.value.retryable and "XAmzContentSHA256Mismatch" in str(e.value), e.value
    assert "changed after the digest was taken" in str(e.value)
    assert not store.has_blob(wrong)


def test_get_verifies_what_it_receives(store, tmp_path):
    # A damaged store: an object under a digest it does not hash to, written with the store's own
    # signer (a put_blob would be refused by the server, as the test above shows).
    body = b"not what the name says"
    digest = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    store._call("PUT", store._blob_key(digest), body=body, size=len(body),
                payload_hash=hashlib.sha256(body).hexdigest(), what="planting a bad blob")
    with pytest.raises(S3Error) as e:
        store.get_blob(digest, str(tmp_path / "out"))
    assert "damaged" in str(e.value) and not e.value.retryable
    assert os.listdir(tmp_path) == []


def test_runs(store, s3_server, bucket):
    assert store.get_run("absent") is None
    assert store.list_runs() == []
    # The same store through the address pods on the real node use (the gateway listens on 0.0.0.0).
    pods_view = S3Backend(s3_server.pod_endpoint, bucket, store.prefix, access_key=s3_server.access_key,
                          secret_key=s3_server.secret_key)
    pods_view.put_run("from-node-address", {"via": "node"})
    assert store.get_run("from-node-address") == {"via": "node"}
    ids = ["from-node-address"] + [f"run-{i}" for i in range(5)]
    for i, run_id in enumerate(ids[1:]):
        store.put_run(run_id, {"id": run_id, "outputs": {"model.bin": f"sha256:{i:064x}"}})
    assert store.get_run("run-3") == {"id": "run-3", "outputs": {"model.bin": f"sha256:{3:064x}"}}
    assert sorted(store.list_runs()) == ids
    assert sorted(store.list_runs(page_size=2)) == ids          # three pages of two
    # A prefix that merely starts like this one is another store.
    assert s3_server.backend(bucket, store.prefix + "x").list_runs() == []
    with pytest.raises(ValueError):
        store.put_run("a/b", {})


def test_multipart_upload_streams_parts(store, tmp_path):
    # The > 5 GiB path, made reachable with small parts (S3's minimum part size is 5 MiB).
    store.multipart_threshold = store.part_size = 5 * 1024 * 1024
    src = tmp_path / "big"
    digest = make_file(src, 12 * 1024 * 1024 + 7, seed=3)   # three parts, the last short
    store.put_blob(digest, src.stat().st_size, str(src))
    assert store.has_blob(digest)
    store.get_blob(digest, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == src.read_bytes()


def test_keys_with_spaces_and_unicode_are_signed_right(s3_server, bucket, tmp_path):
    store = s3_server.backend(bucket, f"dir with space/ünïcødé+plus&amp=eq~tilde %41/{uuid.uuid4().hex[:6]}")
    src = tmp_path / "f"
    digest = make_file(src, 4096, seed=4)
    store.put_blob(digest, 4096, str(src))
    assert store.has_blob(digest)
    store.get_blob(digest, str(tmp_path / "g"))
    store.put_run("run ä 1+2", {"ok": True})
    assert store.get_run("run ä 1+2") == {"ok": True}
    assert store.list_runs() == ["run ä 1+2"]


def test_wrong_secret_or_key_says_which_and_leaks_nothing(s3_server, bucket):
    wrong = "wrong-" + s3_server.secret_key[6:]
    bad = S3Backend(s3_server.endpoint, bucket, "p", access_key=s3_server.access_key, secret_key=wrong)
    with pytest.raises(S3Error) as e:
        bad.put_run("r", {})
    msg = str(e.value)
    print(msg)
    assert "check the secret key" in msg and "SignatureDoesNotMatch" in msg and not e.value.retryable
    assert wrong not in msg and s3_server.secret_key not in msg and "Signature=" not in msg
    assert wrong not in repr(bad) and "\n" not in msg

    unknown = S3Backend(s3_server.endpoint, bucket, access_key="NOSUCHKEY123", secret_key=wrong)
    with pytest.raises(S3Error) as e:
        unknown.get_run("r")
    assert "check the access key" in str(e.value) and not e.value.retryable, e.value


def test_missing_bucket_says_create_it(s3_server):
    name = "fairing-missing-" + uuid.uuid4().hex[:8]
    store = s3_server.backend(name)
    for call in (lambda: store.put_run("r", {}), lambda: store.get_run("r"), store.list_runs):
        with pytest.raises(S3Error) as e:
            call()
        assert str(e.value) == f"bucket {name} does not exist at {s3_server.endpoint}: create it"
        assert not e.value.retryable


def test_scoped_identity_keeps_to_its_bucket(s3_server, bucket, tmp_path):
    own = s3_server.backend(s3_server.scoped_bucket, "tests/" + uuid.uuid4().hex[:8], scoped=True)
    src = tmp_path / "f"
    digest = make_file(src, 2048, seed=5)
    own.put_blob(digest, 2048, str(src))
    own.put_run("r", {"n": 1})
    assert own.get_run("r") == {"n": 1} and own.list_runs() == ["r"]

    other = s3_server.backend(bucket, "tests/scoped", scoped=True)
    for call in (lambda: other.put_run("r", {}), lambda: other.get_run("r"), other.list_runs):
        with pytest.raises(S3Error) as e:
            call()
        msg = str(e.value)
        assert not e.value.retryable and "AccessDenied" in msg and f"s3://{bucket}/tests/scoped" in msg, msg
        assert s3_server.scoped_access_key in msg and s3_server.scoped_secret_key not in msg


def test_unreachable_endpoint_is_retryable(tmp_path):
    from tests.rig.state import free_port

    store = S3Backend(f"http://127.0.0.1:{free_port()}", "b", access_key="k", secret_key="s3cr3t", timeout=5)
    with pytest.raises(S3Error) as e:
        store.has_blob("sha256:" + "0" * 64)
    assert e.value.retryable and "ConnectionRefusedError" in str(e.value) and "s3cr3t" not in str(e.value)
    assert store.describe() == "s3://b"


MEMORY_CHECK = textwrap.dedent("""
    import sys, time
    from fairing.image_runtime.outputs_s3 import S3Backend

    def peak_kb():   # VmHWM: this process's peak RSS (unlike ru_maxrss, not inherited from pytest's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    endpoint, key, secret, bucket, digest, size, path, dest = sys.argv[1:]
    store = S3Backend(endpoint, bucket, "tests/memory-check", access_key=key, secret_key=secret)
    base = peak_kb()
    t = time.monotonic()
    store.put_blob(digest, int(size), path)
    put = time.monotonic() - t
    after_put = peak_kb()
    t = time.monotonic()
    store.get_blob(digest, dest)
    print(base, after_put, peak_kb(), put, time.monotonic() - t)
""")


def test_put_and_get_stream_in_bounded_memory(s3_server, bucket, tmp_path):
    """A 300 MB file goes up and comes back in a process whose peak RSS stays far below its size
    (a pod with a 512Mi limit saves multi-GB files). VmHWM is the kernel's own high-water mark."""
    size = 300 * 1024 * 1024
    src = tmp_path / "sparse.bin"
    with open(src, "wb") as f:
        f.truncate(size)   # sparse: no disk written, reads are zeros
    sha, zeros = hashlib.sha256(), bytes(1 << 20)
    for _ in range(size >> 20):
        sha.update(zeros)
    digest = "sha256:" + sha.hexdigest()
    dest = tmp_path / "back.bin"
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", MEMORY_CHECK, s3_server.endpoint, s3_server.access_key,
                          s3_server.secret_key, bucket, digest, str(size), str(src), str(dest)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    base_kb, put_kb, get_kb, put_s, get_s = (float(x) for x in out.stdout.split())
    print(f"300 MB: put {put_s:.1f}s, get {get_s:.1f}s; peak RSS {base_kb / 1024:.0f} MB at start, "
          f"{put_kb / 1024:.0f} MB after put, {get_kb / 1024:.0f} MB after get ({time.monotonic() - t:.1f}s in all)")
    assert dest.stat().st_size == size
    assert put_kb - base_kb < 32 * 1024 and get_kb - base_kb < 32 * 1024   # KiB: 32 MB, a tenth of the file

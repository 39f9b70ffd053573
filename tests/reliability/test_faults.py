"""Faults a user will meet: a registry that restarts during a push or throttles, an API server
that restarts while we wait, a container engine that is gone, a full disk under the cache.
Every part is real (registry processes, an HTTP proxy, a second kube-apiserver, tmpfs)."""
from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from fairing.builders.append import AppendBuilder
from fairing.errors import BuildError
from fairing.oci.cache import sha256_file
from fairing.preprocessors.python import PythonPreprocessor

from .conftest import clean_env, error_lines, fair, manifest_digest, pull, tags, training_dir
from .proxy import ThrottlingProxy


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# --- registry restarted mid-push -------------------------------------------------------------------
def _stored_manifests(reg, repo: str) -> list[str]:
    """Manifest revisions the registry has stored for `repo`, read from its own storage."""
    d = Path(reg.data_dir) / "docker/registry/v2/repositories" / repo / "_manifests/revisions/sha256"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _stop_on_first_upload(reg, *, restart_after: float | None = None):
    """A builder progress hook that stops the registry just as the first layer upload begins
    (other blobs are in flight on the other workers); optionally starts it again later."""
    fired = threading.Event()

    def hook(msg: str) -> None:
        if msg.startswith("uploading layer") and not fired.is_set():
            fired.set()
            reg.stop()
            if restart_after is not None:
                threading.Timer(restart_after, reg.start).start()

    return hook, fired


def test_registry_down_mid_push_tags_nothing_and_a_retry_succeeds(tmp_path, base_image, rel_cache):
    from tests.rig.registry import start_registry

    reg = start_registry(tmp_path / "reg")
    try:
        ctx = PythonPreprocessor().prepare(training_dir(tmp_path, data_bytes=3 << 20, marker=_uid()))
        repo = "reliability/restart"
        hook, fired = _stop_on_first_upload(reg)
        # Base on the shared registry, target the private one: the 40 MB base layer and the code
        # layer both have to be uploaded, so the push is well under way when the registry dies.
        builder = AppendBuilder(base_image.docker, cache_dir=rel_cache, progress=hook, retries=1)
        with pytest.raises(BuildError) as exc:
            builder.build(ctx, f"{reg.host}/{repo}:v1")
        assert fired.is_set()
        assert re.fullmatch(rf"registry {re.escape(reg.host)} did not answer .+ after 2 attempts \(ConnectionError\)",
                            exc.value.message), exc.value.message
        assert exc.value.hint == "check the registry is running and reachable, then run the build again"

        reg.start()  # same port, same storage
        assert tags(reg.url, repo) in (None, [])  # no tag, complete or not
        assert _stored_manifests(reg, repo) == []  # and no untagged manifest either

        image = AppendBuilder(base_image.docker, cache_dir=rel_cache).build(ctx, f"{reg.host}/{repo}:v1")
        assert tags(reg.url, repo) == ["v1"]
        assert manifest_digest(reg.url, repo, "v1") == image.digest
        pulled = pull(reg.url, repo, "v1")  # every blob present and matching its digest
        assert len(pulled.layers) == 2
        assert any(m.name == "app/data.bin" for m in pulled.layer_members()[-1])
    finally:
        reg.stop()


def test_registry_restarted_mid_push_is_ridden_out(tmp_path, base_image, rel_cache, caplog):
    from tests.rig.registry import start_registry

    reg = start_registry(tmp_path / "reg")
    try:
        ctx = PythonPreprocessor().prepare(training_dir(tmp_path, data_bytes=3 << 20, marker=_uid()))
        repo = "reliability/restart-quick"
        hook, fired = _stop_on_first_upload(reg, restart_after=1.0)
        caplog.set_level(logging.INFO, logger="fairing.oci.registry")
        image = AppendBuilder(base_image.docker, cache_dir=rel_cache, progress=hook).build(ctx, f"{reg.host}/{repo}:v1")
        assert fired.is_set()
        retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("retrying", "upload session"))]
        assert retries, "the registry was down for a second, yet nothing was retried"
        print(f"\n[figure] registry restart mid-push: {len(retries)} retried requests/sessions, build succeeded")
        assert tags(reg.url, repo) == ["v1"]
        assert manifest_digest(reg.url, repo, "v1") == image.digest
        pull(reg.url, repo, "v1")
    finally:
        reg.stop()


# --- a registry that throttles ---------------------------------------------------------------------
def _http_date_in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


THROTTLE_CASES = {
    # name: (which requests, how many, Retry-After, minimum wait the client must have honoured)
    "first requests": (None, 3, "1", 0.95),
    "blob uploads": (lambda m, p: m == "POST" and "/blobs/uploads/" in p and "mount=" not in p, 2, "1", 0.95),
    "manifest push": (lambda m, p: m == "PUT" and "/manifests/" in p, 2, "1", 0.95),
    # An HTTP-date two seconds ahead (1 s resolution): at least one second must pass.
    "http-date": (None, 2, lambda: _http_date_in(2), 0.9),
}


@pytest.mark.parametrize("case", list(THROTTLE_CASES))
def test_throttling_registry_is_retried_after_the_delay_it_asks_for(tmp_path, registry, base_image, rel_cache, case):
    match, failures, retry_after, min_wait = THROTTLE_CASES[case]
    with ThrottlingProxy(registry.url, failures=failures, match=match,
                         retry_after=retry_after) as proxy:
        repo = f"reliability/throttle-{_uid()}"
        ctx = PythonPreprocessor().prepare(training_dir(tmp_path, marker=_uid()))
        # One upload at a time, so the gap after each throttled answer is that request's own wait.
        builder = AppendBuilder(f"{proxy.host}/fairing/python:3.11", cache_dir=rel_cache, jobs=1)
        t0 = time.monotonic()
        image = builder.build(ctx, f"{proxy.host}/{repo}:v1")
        elapsed = time.monotonic() - t0
        injected = proxy.injected
        waits = proxy.waits_after_throttling()
        print(f"\n[figure] throttle {case}: {len(injected)} x {sorted({h.status for h in injected})} injected, "
              f"{len(proxy.hits)} requests in all, waits {[round(w, 2) for w in waits]}, build {elapsed:.1f}s")
        assert len(injected) == failures
        assert {h.status for h in injected} == ({429, 503} if failures > 1 else {429})
        assert len(waits) == failures and min(waits) >= min_wait, waits
        assert elapsed >= failures * min_wait
        # Each throttled request was sent again (same method and path) and then got through.
        for h in injected:
            assert any(not o.injected and o.method == h.method and o.path.split("?")[0] == h.path.split("?")[0]
                       and o.at > h.at for o in proxy.hits)
    # The image is complete in the real registry behind the proxy.
    assert manifest_digest(registry.url, repo, "v1") == image.digest
    pull(registry.url, repo, "v1")


def test_throttling_without_end_gives_up_with_a_clear_error_and_no_tag(tmp_path, registry, base_image, rel_cache):
    with ThrottlingProxy(registry.url, failures=1000, retry_after="1", statuses=(503,),
                         match=lambda m, p: m == "PUT" and "/manifests/" in p) as proxy:
        repo = f"reliability/throttle-forever-{_uid()}"
        ctx = PythonPreprocessor().prepare(training_dir(tmp_path, marker=_uid()))
        builder = AppendBuilder(f"{proxy.host}/fairing/python:3.11", cache_dir=rel_cache, retries=2)
        with pytest.raises(BuildError) as exc:
            builder.build(ctx, f"{proxy.host}/{repo}:v1")
        assert exc.value.message == f"registry {proxy.host} answered HTTP 503 to PUT manifest {repo}:v1: UNAVAILABLE: slow down"
        assert len(proxy.injected) == 3  # the first try and two retries, then it stopped
    assert tags(registry.url, repo) in (None, [])


# --- the container engine is gone ------------------------------------------------------------------
def _stale_socket(path: Path) -> Path:
    """A unix socket file nobody listens on: what a crashed engine leaves behind."""
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


@pytest.mark.parametrize("socket_state", ["missing", "stale"])
def test_engine_socket_gone_is_one_clear_error(tmp_path, socket_state, registry, base_image):
    sock = tmp_path / "engine.sock"
    if socket_state == "stale":
        _stale_socket(sock)
    host = f"unix://{sock}"
    work = tmp_path / "work"
    training_dir(work)
    env = clean_env(DOCKER_HOST=host)
    # The docker builder, explicitly asked for, with a registry to push to.
    r = fair("build", "proj", "--builder", "docker", "--registry", f"{registry.host}/reliability",
             "--image-name", f"engine-gone-{_uid()}", "--base-image", base_image.docker, cwd=work, env=env)
    msg, hint = error_lines(r, 3)
    assert msg == f"no Docker engine at {host}; start one or use --builder append"
    assert hint.startswith("set DOCKER_HOST to a running Docker or Podman API socket; cause: ")
    # A local container run, explicitly asked for.
    r = fair("train", "proj/train.py", "--local-mode", "container", cwd=work, env=env)
    msg, hint = error_lines(r, 4)
    assert msg == f"no Docker/Podman API answered ({host})"
    assert hint == "start one (e.g. `podman system service`) and set DOCKER_HOST, or use local_mode=process"
    assert list((tmp_path / "work-tmpdir").iterdir()) == []


# --- a full disk under the cache -------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs): needs root and mount(2); skipped with the reason otherwise."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _cache_is_sound(cache_dir: Path) -> list[str]:
    """Every cached layer verifies against its recorded digest, and no temp files are left.
    Returns the DiffIDs present."""
    layers = cache_dir / "layers"
    names = sorted(p.name for p in layers.iterdir()) if layers.exists() else []
    assert not [n for n in names if n.startswith(".")], f"leftover temp files in the cache: {names}"
    found = []
    for meta in sorted(layers.glob("*.json")):
        info = json.loads(meta.read_text())
        blob = meta.with_suffix("").with_suffix(".tar.gz")
        assert blob.exists(), f"{meta.name} has no blob"
        assert sha256_file(blob) == info["digest"], f"{blob.name} does not match its digest"
        found.append(info["diff_id"])
    assert len(names) == 2 * len(found), names  # every blob has its metadata and vice versa
    return found


def test_disk_full_in_the_cache_is_clear_keeps_the_cache_sound_and_the_next_run_rebuilds(
        tmp_path, small_disk, registry, base_image):
    work = tmp_path / "work"
    a = training_dir(work, name="a", data_bytes=400 << 10, marker=_uid())
    b = training_dir(work, name="b", data_bytes=400 << 10, marker=_uid())
    image_name = f"diskfull-{_uid()}"
    repo = f"reliability/{image_name}"
    env = clean_env(FAIRING_CACHE=small_disk)
    common = ["--registry", f"{registry.host}/reliability", "--image-name", image_name,
              "--base-image", base_image.docker, "-o", "json"]

    ok = fair("build", a, *common, cwd=work, env=env)
    assert ok.returncode == 0, ok.stderr
    digest_a = json.loads(ok.stdout)["digest"]
    before = _cache_is_sound(small_disk)
    assert len(before) == 1
    tags_before = tags(registry.url, repo)

    filler = _fill(small_disk)
    r = fair("build", b, *common, cwd=work, env=env)
    msg, hint = error_lines(r, 3)
    assert re.fullmatch(rf"no space left on device while writing {re.escape(str(small_disk))}/layers/\S+", msg), msg
    assert hint == f"free some disk space, or point FAIRING_CACHE at a larger disk (cache: {small_disk})"
    assert _cache_is_sound(small_disk) == before  # the good entry survived, nothing half-written
    assert tags(registry.url, repo) == tags_before  # nothing pushed for b
    assert list((work.parent / "work-tmpdir").iterdir()) == []

    # A torn entry, as a crash or another writer on a full disk could leave one: a's layer cut short.
    blob = next((small_disk / "layers").glob("*.tar.gz"))
    blob.write_bytes(blob.read_bytes()[:1000])

    filler.unlink()  # space again
    r = fair("build", b, *common, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    r = fair("build", a, *common, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == digest_a  # rebuilt byte for byte
    assert len(_cache_is_sound(small_disk)) == 2  # the torn entry was replaced, b's was added
    for t in tags(registry.url, repo):
        pull(registry.url, repo, t)


# --- the API server restarts while we wait ---------------------------------------------------------
def _recording_kube(kubeconfig, namespace):
    """A Kube whose watches record what they yield and where they resume from: an observer
    only, every request still goes to the real API server (`first_request_delay` holds back a
    watch's first request, to widen a race window on purpose)."""
    from fairing.kube.client import Kube, Watch

    class RecordingWatch(Watch):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.events: list[tuple[float, str, str | None]] = []  # (time, type, resourceVersion)
            self.relists: list[str | None] = []  # the resourceVersion held when a (re-)list happened
            self.relisted_at: list[float] = []

        def _relist(self):
            self.relists.append(self.resource_version)
            self.relisted_at.append(time.monotonic())
            return super()._relist()

        def __iter__(self):
            delay = getattr(self.kube, "first_request_delay", 0)
            if delay:
                time.sleep(delay)  # the watch's first request answered late (see test_load.py)
            for etype, obj in super().__iter__():
                self.events.append((time.monotonic(), etype, (obj.get("metadata") or {}).get("resourceVersion")))
                yield etype, obj

    class RecordingKube(Kube):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.watches: list[RecordingWatch] = []

        def watch(self, api_version, kind, namespace=None, **kw):
            from fairing.kube.client import resource_for

            res = resource_for(api_version, kind)
            w = RecordingWatch(self, res, self._ns(res, namespace), **kw)
            self.watches.append(w)
            return w

    return RecordingKube(kubeconfig, namespace=namespace)


def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _wait_through_an_outage(kube, kubeconfig: str, outage, recover) -> dict:
    """Deploy a Job whose pod hangs, start handle.wait() in a thread against `kubeconfig`, call
    `outage()` (the API server it talks to goes away), let the Job finish through the shared API
    server (kwok completes the pod once the hang label is gone, the job controller marks the Job),
    check wait() is still waiting, call `recover()`, and collect what the wait saw."""
    from fairing.deployers import pod
    from fairing.deployers.k8s.job import JobDeployer, job_state
    from tests.rig.kube import OUTCOME_LABEL, fake_image

    name = f"rel-restart-{_uid()}"
    admin = kube.kube()
    k = _recording_kube(kubeconfig, kube.namespace)
    handle = JobDeployer(kube.namespace, kube=k, name=name,
                         mutators=[pod.labels({OUTCOME_LABEL: "hang"})]).deploy(fake_image(name))
    try:
        pod_name = _until(lambda: next((p["metadata"]["name"] for p in admin.list(
            "v1", "Pod", kube.namespace, label_selector=f"job-name={name}")["items"]
            if (p.get("status") or {}).get("phase") == "Running"), None), 60, "the pod to run")
        out: dict = {}

        def waiter():
            try:
                out["status"] = handle.wait(timeout=240)
            except BaseException as e:  # handed to the test thread
                out["error"] = e

        t = threading.Thread(target=waiter, daemon=True)
        t.start()
        _until(lambda: out or len(k.watches) == 2 and all(w.resource_version and w._resp is not None
                                                          for w in k.watches), 30,
               "both watches (Job and pods) to start")
        assert not out, f"wait() ended before the outage: {out}"
        # The wait ends on whichever of its two watches shows the finish first: the Job's condition,
        # or its pod's end (the verdict read from the pod, a second earlier). Both are followed.
        rv_before = max(int(w.resource_version) for w in k.watches)
        rv_held = min(int(w.resource_version) for w in k.watches)

        outage()
        down = time.monotonic()
        admin.patch("v1", "Pod", pod_name, {"metadata": {"labels": {OUTCOME_LABEL: None}}}, kube.namespace)
        _until(lambda: job_state(admin.get("batch/v1", "Job", name, kube.namespace)) == "Succeeded", 60,
               "the Job to complete")
        time.sleep(1)
        waiting = t.is_alive() and not out
        recover()
        t.join(120)
        assert not t.is_alive(), "wait() did not return after the API server came back"
        return {"status": out.get("status"), "error": out.get("error"), "waiting_during_outage": waiting,
                "rv_before": rv_before, "rv_held": rv_held,
                "after": sorted(e for w in k.watches for e in w.events if e[0] > down),
                # The lists made after the outage (a watch's first list, before it, is not a re-list).
                "relists": [rv for w in k.watches for rv, at in zip(w.relists, w.relisted_at) if at > down],
                "reconnects": sum(w.reconnects for w in k.watches),
                "outage": time.monotonic() - down}
    finally:
        admin.delete("batch/v1", "Job", name, kube.namespace, propagation="Background")


def test_api_server_restart_during_wait_resumes_from_its_resource_version(kube):
    """An HA pair: the wait talks through a TCP load balancer to API server A (ours, on the shared
    etcd). A stops; the reconnect lands on B (the shared API server), whose watch cache holds the
    resourceVersion the wait had, so the watch resumes there: the next events are the Job's own
    updates, no re-list."""
    from tests.rig.kube import APISERVER_PORT, private_apiserver

    from .tcplb import TcpBalancer

    with private_apiserver() as api:
        lb = TcpBalancer([int(api.server.rsplit(":", 1)[1])])
        try:
            kc = Path(api.kubeconfig).read_text().replace(api.server, f"https://127.0.0.1:{lb.port}")
            kubeconfig = Path(api.kubeconfig).with_name(f"lb-{lb.port}.kubeconfig")
            kubeconfig.write_text(kc)

            def outage():
                lb.backends = [APISERVER_PORT]  # new connections go to the other replica...
                api.stop()  # ...and A goes down, cutting the open watches

            res = _wait_through_an_outage(kube, str(kubeconfig), outage, lambda: None)
        finally:
            lb.close()
    print(f"\n[figure] API server failover: {res['reconnects']} watch reconnects, Job events after: "
          f"{[e[1] for e in res['after']]}, relists {res['relists']}")
    assert res["error"] is None and res["status"] == "Succeeded", res
    assert res["reconnects"] >= 1
    assert res["relists"] == []  # it resumed; it never re-listed
    assert res["after"] and all(e[1] == "MODIFIED" and int(e[2]) > res["rv_before"] for e in res["after"]), res


def test_restart_of_the_only_api_server_relists_and_sees_the_finish(kube):
    """One API server, stopped and started again. A restarted kube-apiserver's watch cache starts
    at the current etcd revision, so it answers the wait's resume (with its old resourceVersion)
    with 410 Gone; the wait then re-lists and finds the Job finished: nothing is lost, and it
    did not return while the server was down."""
    from tests.rig.kube import private_apiserver

    with private_apiserver() as api:
        res = _wait_through_an_outage(kube, str(api.kubeconfig), api.stop, api.start)
    print(f"\n[figure] API server restart: down {res['outage']:.1f}s, {res['reconnects']} watch reconnects, "
          f"Job events after: {[e[1] for e in res['after']]}, relists {res['relists']}")
    assert res["waiting_during_outage"]
    assert res["error"] is None and res["status"] == "Succeeded", res
    assert res["reconnects"] >= 1
    # Re-lists made with a resourceVersion in hand: the resume was tried from it and refused with
    # 410 (see the docstring). One per watch at most (the Job's, the pods'): the first to see the
    # finish ends the wait.
    assert 1 <= len(res["relists"]) <= 2 and all(int(rv) >= res["rv_held"] for rv in res["relists"]), res
    # The first thing the wait saw after the outage is a re-listed object, newer than what it had
    # (later events are the controllers' own bookkeeping before the wait stopped watching).
    assert res["after"][0][1] == "SYNC" and int(res["after"][0][2]) > res["rv_before"], res["after"]

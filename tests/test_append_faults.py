"""A registry that goes away in the middle of a push: the build either retries and succeeds, or
fails with a clear message; in neither case does a tag point at an incomplete image."""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import time

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.context import BuildContext
from fairing.errors import BuildError

ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fairing-cache")


def _ctx() -> BuildContext:
    return BuildContext(files={"main.py": b"print('survived')\n"}, entrypoint=("python3", "main.py"))


def _upload_in_progress(reg) -> bool:
    """True once the registry has started writing an upload's bytes to its storage. The registry
    moves and deletes upload directories while we walk them: anything that vanishes under the walk
    was just committed, so the push is under way too."""
    try:
        for p in reg.data_dir.rglob("_uploads/*/data"):
            if p.stat().st_size > 0:
                return True
    except FileNotFoundError:
        return True
    return False


def _stop_on_first_upload(reg, restart_after: float | None):
    """A progress callback that stops `reg` while the first blob upload (the base layer, ~40 MB)
    is on the wire, and optionally starts it again later."""
    fired = threading.Event()
    done = threading.Event()

    def bounce():
        # try/finally: whatever the watch meets, the registry is stopped (a watcher that died
        # silently let a push finish, and the test then blamed the product).
        try:
            deadline = time.monotonic() + 10
            while not _upload_in_progress(reg) and time.monotonic() < deadline:
                time.sleep(0.002)
        finally:
            reg.stop()
            try:
                if restart_after is not None:
                    time.sleep(restart_after)
                    reg.start()
            finally:
                done.set()

    def progress(msg: str) -> None:
        if msg.startswith("uploading layer") and not fired.is_set():
            fired.set()
            threading.Thread(target=bounce, daemon=True).start()

    return progress, fired, done


def test_registry_restarted_mid_push_build_retries_and_the_image_is_complete(registry, base_image, registry_factory, cache, tmp_path, caplog):
    reg = registry_factory()
    progress, fired, done = _stop_on_first_upload(reg, restart_after=1.5)
    builder = AppendBuilder(base_image.docker, cache_dir=cache, progress=progress, retries=6)
    with caplog.at_level(logging.INFO, logger="fairing.oci.registry"):
        img = builder.build(_ctx(), f"{reg.host}/team/job:v1")
    assert fired.is_set() and done.wait(30)
    assert any("retrying" in r.getMessage() or "session" in r.getMessage() for r in caplog.records), "the push never noticed the outage"
    # The tag exists and every blob it names is there: a full pull with digest checks succeeds.
    m = requests.get(f"{reg.url}/v2/team/job/manifests/v1", headers={"Accept": ACCEPT})
    assert m.status_code == 200 and m.headers["Docker-Content-Digest"] == img.digest
    for blob in [m.json()["config"], *m.json()["layers"]]:
        assert requests.head(f"{reg.url}/v2/team/job/blobs/{blob['digest']}").status_code == 200
    out = tmp_path / "pulled"
    r = subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reg.host}/team/job:v1", f"oci:{out}:v1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_registry_gone_mid_push_fails_clearly_and_leaves_no_tag(registry, base_image, registry_factory, cache):
    # On a loaded machine the watcher thread can be starved until the whole push is done: then the
    # registry never went away mid-push and the scenario did not happen. Try it on a fresh registry
    # again (up to 3 times); the assertions below are only about a push the registry died under.
    for attempt in range(3):
        reg = registry_factory()
        progress, fired, done = _stop_on_first_upload(reg, restart_after=None)
        builder = AppendBuilder(base_image.docker, cache_dir=cache, progress=progress, retries=2)
        try:
            builder.build(_ctx(), f"{reg.host}/team/job:v1")
        except BuildError as err:
            e = err
            break
        done.wait(15)
    else:
        pytest.fail("the push finished before the registry could be stopped, 3 times")
    assert fired.is_set()
    assert reg.host in str(e) and e.hint  # names the registry and says what to do
    assert "Traceback" not in str(e)
    reg.start()
    r = requests.get(f"{reg.url}/v2/team/job/manifests/v1", headers={"Accept": ACCEPT})
    assert r.status_code == 404  # no tag at all, so none pointing at missing blobs
    tags = requests.get(f"{reg.url}/v2/team/job/tags/list")
    assert tags.status_code == 404 or not (json.loads(tags.content).get("tags") or [])
    # and running the same build again now succeeds
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(_ctx(), f"{reg.host}/team/job:v1")
    assert requests.get(f"{reg.url}/v2/team/job/manifests/v1", headers={"Accept": ACCEPT}).headers["Docker-Content-Digest"] == img.digest

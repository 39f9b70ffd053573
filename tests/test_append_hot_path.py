"""The edit-rebuild loop: within a short while (oci.registry.CACHE_TTL) a process reuses the
registry ping, the auth token, the base image's manifest and config, and what it knows the target
repository holds, so a code-change rebuild sends only the new layer, the config and the manifest.

Counted on the wire: a real recording reverse proxy (tests/reliability/proxy.py, injecting
nothing) sits in front of the real rig registry, and every request of the rebuild is listed."""
from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest

from fairing.builders.append import AppendBuilder
from fairing.context import BuildContext
from tests.reliability.proxy import ThrottlingProxy


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fairing-cache")


def project(root: Path, version: str) -> BuildContext:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(f"print('version {version}')\n")
    os.utime(root / "main.py", (1_600_000_000, 1_600_000_000))
    return BuildContext(files={"main.py": root / "main.py"}, entrypoint=("python3", "main.py"),
                        requirements=("six==1.16.0",))


def kind(method: str, path: str) -> str:
    """`HEAD blob`, `POST upload`, `PUT manifest`, `GET ping`...: what a request was for."""
    path = path.split("?", 1)[0]
    if path == "/v2/":
        return f"{method} ping"
    if "/blobs/uploads/" in path:
        return f"{method} upload"
    return f"{method} {re.search(r'/(blobs|manifests)/', path).group(1)[:-1]}"


def via(proxy: ThrottlingProxy, ref: str, host: str) -> str:
    return ref.replace(host, proxy.host, 1)


def rebuild_requests(upstream, base_ref: str, cache, tmp_path) -> tuple[list, list]:
    """(hits of a first build, hits of a code-change rebuild in the same process)."""
    with ThrottlingProxy(upstream.url, failures=0) as proxy:
        base = via(proxy, base_ref, upstream.host)
        target = f"{proxy.host}/test/hot-{uuid.uuid4().hex[:10]}"
        first = AppendBuilder(base, cache_dir=cache).build(project(tmp_path / "v1", "1"), f"{target}:v1")
        n = len(proxy.hits)
        second = AppendBuilder(base, cache_dir=cache).build(project(tmp_path / "v2", "2"), f"{target}:v2")
        hits = list(proxy.hits)
    assert first.digest != second.digest and second.ref == f"{target}@{second.digest}"
    assert second.stats.layers_uploaded == 1  # only the code layer
    return hits[:n], hits[n:]


EXPECTED = Counter({"HEAD blob": 2, "POST upload": 2, "PUT upload": 2, "HEAD manifest": 1, "PUT manifest": 1})


def test_code_change_rebuild_sends_only_the_code_layer_config_and_manifest(registry, base_image, cache, tmp_path):
    first, second = rebuild_requests(registry, base_image.docker, cache, tmp_path)
    assert Counter(kind(h.method, h.path) for h in first)["GET ping"] == 1
    # The code layer and the config: HEAD (absent), POST, PUT each; the tag's HEAD and the manifest.
    # No ping, no base manifest or config read, no HEAD for base or dependency layers.
    assert Counter(kind(h.method, h.path) for h in second) == EXPECTED, [(h.method, h.path) for h in second]


def test_token_registry_rebuild_reuses_the_token(token_registry, base_image, cache, tmp_path, monkeypatch):
    auth = base64.b64encode(f"{token_registry.username}:{token_registry.password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    with ThrottlingProxy(token_registry.url, failures=0) as proxy:  # credentials are filed by the proxy's host
        (tmp_path / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": auth}}}))
        base = via(proxy, base_image.token, token_registry.host)
        target = f"{proxy.host}/test/hot-{uuid.uuid4().hex[:10]}"
        AppendBuilder(base, cache_dir=cache).build(project(tmp_path / "v1", "1"), f"{target}:v1")
        n = len(proxy.hits)
        AppendBuilder(base, cache_dir=cache).build(project(tmp_path / "v2", "2"), f"{target}:v2")
        first, second = proxy.hits[:n], proxy.hits[n:]
    assert Counter(kind(h.method, h.path) for h in second) == EXPECTED
    # Every request of the rebuild carried a token the first build already had: none was fetched.
    tokens = {h.auth for h in first if h.auth}
    assert tokens and all(h.auth in tokens for h in second) and all(h.status != 401 for h in second)


def test_a_registry_that_lost_its_blobs_within_the_ttl_gets_them_again(registry_factory, base_image, cache, tmp_path):
    """What the process remembers is only a shortcut: a registry restarted empty at the same address
    refuses the manifest (blob unknown), and the push sends the blobs again instead of failing."""
    import requests

    first = registry_factory()
    target = f"{first.host}/test/lost-{uuid.uuid4().hex[:8]}"
    AppendBuilder(base_image.docker, cache_dir=cache).build(project(tmp_path / "v1", "1"), f"{target}:v1")
    first.stop()
    empty = registry_factory(port=int(first.host.rsplit(":", 1)[1]))
    img = AppendBuilder(base_image.docker, cache_dir=cache).build(project(tmp_path / "v2", "2"), f"{target}:v2")
    name = target.split("/", 1)[1]
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    m = requests.get(f"{empty.url}/v2/{name}/manifests/v2", headers=accept, timeout=30).json()
    for d in [m["config"]["digest"]] + [x["digest"] for x in m["layers"]]:
        assert requests.head(f"{empty.url}/v2/{name}/blobs/{d}", timeout=30).status_code == 200
    assert img.digest == requests.head(f"{empty.url}/v2/{name}/manifests/v2", headers=accept, timeout=30).headers["Docker-Content-Digest"]

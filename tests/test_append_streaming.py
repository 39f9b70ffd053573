"""The append builder sends each layer to the registry as soon as it is made, and the manifest only
after every blob landed: real registry, real wheels (six), nothing mocked."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from fairing.builders.append import AppendBuilder
from fairing.context import BuildContext
from fairing.errors import ConfigError
from fairing.oci.image import DOCKER_MANIFEST, OCI_MANIFEST

ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])
REQS = ("six==1.16.0",)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fairing-cache")


def _repo(host: str) -> tuple[str, str]:
    name = f"test/stream-{uuid.uuid4().hex[:10]}"
    return name, f"{host}/{name}"


def _blob_there(url: str, name: str, digest: str) -> bool:
    return requests.head(f"{url}/v2/{name}/blobs/{digest}").status_code == 200


def test_layers_land_before_publishing_and_the_stats_count_them(registry, base_image, cache):
    name, target = _repo(registry.host)
    builder = AppendBuilder(base_image.docker, cache_dir=cache)
    ctx = BuildContext(files={"main.py": b"import six\nprint(six.__version__)\n"}, entrypoint=("python3", "main.py"),
                       requirements=REQS)
    t = builder.target(f"{target}:v1", ctx)
    img = builder.image(ctx, t)
    base = builder._load_base()
    ours = img.layers[len(base.layers):]  # six's layer(s) and the code layer
    deps = ours[:-1]
    assert deps
    # The dependency layers were sent while the image was being made: they reach the repository
    # without publishing, while no tag (no manifest) exists yet.
    deadline = time.monotonic() + 30
    while not all(_blob_there(registry.url, name, layer.digest) for layer in deps) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_blob_there(registry.url, name, layer.digest) for layer in deps)
    assert requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": ACCEPT}).status_code == 404

    built = builder.publish(img, t)
    m = requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": ACCEPT})
    assert m.status_code == 200 and m.headers["Docker-Content-Digest"] == built.digest == img.digest
    # Stats stay truthful: layers sent early count as uploaded, the base's as reused (mounted or
    # there), and the bytes are exactly our layers + config + manifest.
    s = built.stats
    assert s.layers_uploaded == len(ours) and s.layers_skipped == len(base.layers)
    assert s.bytes_uploaded == sum(layer.size for layer in ours) + len(img.config_bytes) + len(img.manifest_bytes())
    assert s.phases["sending"] > 0 and "upload" in s.phases


def test_a_build_failing_after_layers_were_sent_leaves_no_manifest(registry, base_image, cache):
    # A path leaving the image fails the code layer, the last one made: the dependency layers
    # were already on their way. Blobs without a manifest may stay (the registry's GC removes
    # them); no tag, no manifest, no upload thread left behind.
    name, target = _repo(registry.host)
    ctx = BuildContext(files={"main.py": b"print(1)\n", "../escape.py": b"x = 1\n"}, entrypoint=("python3", "main.py"),
                       requirements=REQS)
    with pytest.raises(ConfigError, match="invalid path in image"):
        AppendBuilder(base_image.docker, cache_dir=cache).build(ctx, f"{target}:v1")
    assert requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": ACCEPT}).status_code == 404
    tags = requests.get(f"{registry.url}/v2/{name}/tags/list")
    assert tags.status_code == 404 or not (tags.json().get("tags") or [])
    assert not [th for th in threading.enumerate() if th.name.startswith("fairing-push")]

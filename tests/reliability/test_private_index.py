"""A company's package index behind its own CA, beside a registry with another CA.

The README once said "set REQUESTS_CA_BUNDLE to your registry's CA"; requests then trusts only that
CA, and fairing's wheel downloader distrusted every package index. Now pip's own settings
(PIP_INDEX_URL / PIP_CERT, or pip.conf) reach the resolver (uv) and the downloader, and every CA
given is added to the default roots. Each build here starts from an empty FAIRING_CACHE, so the
private index really answers (its log of served paths says so)."""
from __future__ import annotations

import io
import json
import tarfile
import uuid

import pytest

from tests.rig import pyindex

from .conftest import clean_env, error_lines, fair, pull


@pytest.fixture
def index(tmp_path):
    wheel = pyindex.make_wheel(tmp_path / "wheels", "fairing-probe", "1.0",
                               {"fairing_probe/__init__.py": "VALUE = 42\n"})
    idx = pyindex.serve(tmp_path / "index", [wheel])
    yield idx
    idx.stop()


def _world(tmp_path, secure_registry):
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir(exist_ok=True)
    auth = __import__("base64").b64encode(f"{secure_registry.username}:{secure_registry.password}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {secure_registry.host: {"auth": auth}}}))
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "train.py").write_text("import fairing_probe\nprint('probe', fairing_probe.VALUE)\n")
    return docker_config, proj


def _has_probe(secure_registry, image_ref: str) -> bool:
    repo, digest = image_ref.split("/", 1)[1].split("@")
    img = pull(secure_registry.url, repo, digest, auth=(secure_registry.username, secure_registry.password),
               verify=secure_registry.ca_file)
    for blob in img.layers:
        with tarfile.open(fileobj=io.BytesIO(blob)) as t:
            if any(n.endswith("fairing_probe/__init__.py") for n in t.getnames()):
                return True
    return False


@pytest.mark.parametrize("how", ["env", "pip.conf"])
def test_private_index_with_its_own_ca_beside_a_registry_with_another(how, index, secure_registry, base_image,
                                                                     tmp_path):
    docker_config, proj = _world(tmp_path, secure_registry)
    env = clean_env(DOCKER_CONFIG=docker_config, HOME=tmp_path / "home", FAIRING_CACHE=tmp_path / "cache")
    if how == "env":
        # The README's old advice (REQUESTS_CA_BUNDLE = the registry's CA) plus pip's own variables.
        env.update(REQUESTS_CA_BUNDLE=secure_registry.ca_file, PIP_INDEX_URL=index.url, PIP_CERT=str(index.ca_file))
    else:
        # pip.conf names the mirror and its CA; fairing's own setting names the registry's CA.
        conf = tmp_path / "pip.conf"
        conf.write_text(f"[global]\nindex-url = {index.url}\ncert = {index.ca_file}\n")
        env.update(PIP_CONFIG_FILE=conf, FAIRING_CA_FILE=secure_registry.ca_file)
        env.pop("PIP_CERT", None)  # as in pip, the variable (set on some machines) beats the file
    image_name = f"probe-{uuid.uuid4().hex[:6]}"
    r = fair("build", "proj", "-r", "fairing-probe==1.0", "--registry", f"{secure_registry.host}/private-index",
             "--image-name", image_name, "--base-image", base_image.secure, "-o", "json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["image"]
    # The private index answered (resolve: the project page; download: the wheel itself) ...
    assert "/simple/fairing-probe/" in index.served, index.served
    assert "/files/fairing_probe-1.0-py3-none-any.whl" in index.served, index.served
    # ... and the package is in the image pushed to the TLS registry signed by the other CA.
    assert _has_probe(secure_registry, ref)


def test_an_index_whose_ca_is_not_given_is_one_clear_error(index, secure_registry, base_image, tmp_path):
    docker_config, proj = _world(tmp_path, secure_registry)
    env = clean_env(DOCKER_CONFIG=docker_config, HOME=tmp_path / "home", FAIRING_CACHE=tmp_path / "cache",
                    FAIRING_CA_FILE=secure_registry.ca_file, PIP_INDEX_URL=index.url)
    r = fair("build", "proj", "-r", "fairing-probe==1.0", "--registry", f"{secure_registry.host}/private-index",
             "--base-image", base_image.secure, cwd=tmp_path, env=env)
    err, hint = error_lines(r, 3)
    assert "certificate" in (err + (hint or "")).lower(), (err, hint)
    assert "/files/fairing_probe-1.0-py3-none-any.whl" not in index.served

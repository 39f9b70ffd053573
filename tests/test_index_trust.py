"""pip's index settings as fairing reads them, and CA bundles that add to the default roots.

The end-to-end proof (a private index over TLS with its own CA, beside the rig's TLS registry) is
tests/reliability/test_private_index.py; these pin the rules it relies on, with no network."""
from __future__ import annotations

import os
import subprocess

import pytest

from fairing import trust
from fairing.builders.deps import index
from fairing.builders.deps.pip import untrusted_index
from fairing.errors import ConfigError


def _ca(tmp_path, name="ca"):
    crt = tmp_path / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", str(tmp_path / f"{name}.key"), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt


def test_pip_settings_come_from_files_in_pips_order_and_the_environment_wins(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://user.example/simple\ntrusted-host = a.example b.example:8080\n")
    explicit = tmp_path / "explicit.conf"
    explicit.write_text("[global]\ncert = /corp/ca.pem\n[install]\nextra-index-url = https://x.example/simple\n"
                        "    https://y.example/simple\n")
    env = {"HOME": str(home), "PIP_CONFIG_FILE": str(explicit), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    got = index.read(env)
    assert got.index_url == "https://user.example/simple"
    assert got.extra_urls == ("https://x.example/simple", "https://y.example/simple")
    assert got.cert == "/corp/ca.pem" and got.sources["cert"] == str(explicit)
    assert got.is_trusted("https://b.example:8080/simple/x/") and not got.is_trusted("https://c.example/")
    # The variable beats the file, as in pip; PIP_CONFIG_FILE=os.devnull loads no file at all.
    assert index.read({**env, "PIP_INDEX_URL": "https://env.example/simple"}).index_url == "https://env.example/simple"
    assert index.read({**env, "PIP_CONFIG_FILE": os.devnull}) == index.Index()


def test_uv_gets_pips_settings_unless_its_own_are_set():
    idx = index.Index(index_url="https://mirror.example/simple", extra_urls=("https://extra.example/simple",),
                      trusted_hosts=("plain.example",))
    assert index.uv_args(idx, {}) == ["--index-url", "https://mirror.example/simple",
                                      "--extra-index-url", "https://extra.example/simple",
                                      "--allow-insecure-host", "plain.example"]
    assert index.uv_args(idx, {"UV_INDEX_URL": "https://uv.example/simple"})[:2] == \
        ["--extra-index-url", "https://extra.example/simple"]
    assert index.uv_args(index.Index(), {}) == []  # PyPI as configured by default: nothing to say


def test_a_ca_is_added_to_the_default_roots_not_put_in_their_place(tmp_path):
    ca = _ca(tmp_path)
    key_and_cert = tmp_path / "with-key.pem"
    key_and_cert.write_bytes((tmp_path / "ca.key").read_bytes() + ca.read_bytes())
    path = trust.bundle([("ca_file", key_and_cert)], tmp_path / "cache")
    data = open(path, "rb").read()
    assert ca.read_bytes().strip() in data
    for roots in trust.default_roots():  # certifi's roots and the system store stay trusted
        first = roots.read_bytes().split(b"-----END CERTIFICATE-----")[0]
        assert first[first.index(b"-----BEGIN CERTIFICATE-----"):] in data
    assert b"PRIVATE KEY" not in data  # only certificates are copied
    # Content-addressed: the same inputs give the same file; no extra CA gives no bundle.
    assert trust.bundle([("ca_file", key_and_cert)], tmp_path / "cache") == path
    assert trust.bundle([("ca_file", None)], tmp_path / "cache") is None


def test_a_wrong_ca_file_is_one_line_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as e:
        trust.bundle([("ca_file", tmp_path / "missing.pem")], tmp_path / "cache")
    assert e.value.message == f"ca_file {tmp_path / 'missing.pem'} does not exist" and e.value.hint
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        trust.bundle([("PIP_CERT", tmp_path / "empty.pem")], tmp_path / "cache")


def test_requests_ca_bundle_alone_no_longer_hides_pypi(tmp_path):
    """$REQUESTS_CA_BUNDLE = a registry's CA (the README's old advice): the index bundle holds it
    *and* the default roots, so PyPI stays trusted."""
    ca = _ca(tmp_path, "registry")
    path = index.ca_bundle(index.Index(), tmp_path / "cache", environ={"REQUESTS_CA_BUNDLE": str(ca)})
    data = open(path, "rb").read()
    assert ca.read_bytes().strip() in data and data.count(b"BEGIN CERTIFICATE") > 10


def test_an_untrusted_index_is_named_without_its_credentials():
    err = untrusted_index("Could not fetch URL https://ci:s3cret@mirror.corp:8443/simple/x/: There was a problem "
                          "confirming the ssl certificate")
    assert err is not None and "mirror.corp:8443" in err.message and "s3cret" not in str(err)
    assert "PIP_CERT" in err.hint
    assert untrusted_index("ERROR: No matching distribution found for x==1") is None

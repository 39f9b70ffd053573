"""The plain kubeconfig path (fairing.kube.plain): a token or client-certificate kubeconfig is read
and spoken to without importing the `kubernetes` package (its import was ~0.15 s of a `fair list`,
~0.07 s of `fair train`); every other kubeconfig still works through the official loader. Against
the rig's real API server."""
import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fairing.errors import DeployError
from fairing.kube.client import Kube

CHECKOUT = str(Path(__file__).resolve().parents[1])


def _in_fresh_process(kubeconfig: Path, extra: str = "") -> list[str]:
    """List Jobs with a Kube of `kubeconfig` in a new interpreter; its printed lines."""
    code = textwrap.dedent(f"""
        import sys
        from fairing.kube.client import Kube
        k = Kube({str(kubeconfig)!r})
        print(k.list("batch/v1", "Job")["kind"], k.namespace)
        print("kubernetes imported" if "kubernetes" in sys.modules else "kubernetes not imported")
    """) + extra
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": CHECKOUT})
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_token_and_client_certificate_kubeconfigs_do_not_import_the_official_client(kube):
    assert _in_fresh_process(kube.sa_kubeconfig) == [f"JobList {kube.namespace}", "kubernetes not imported"]
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    assert "client-certificate-data" in admin["users"][0]["user"]  # the other plain case
    assert _in_fresh_process(kube.kubeconfig)[1] == "kubernetes not imported"


def test_files_next_to_the_kubeconfig_and_the_official_client_on_demand(kube, tmp_path):
    """certificate-authority / client-certificate / client-key as files, relative to the
    kubeconfig's folder; `.api` (typed APIs: attach, proxy) still gives the official client."""
    doc = yaml.safe_load(kube.kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    (tmp_path / "pki").mkdir()
    for section, key in ((cluster, "certificate-authority"), (user, "client-certificate"), (user, "client-key")):
        (tmp_path / "pki" / f"{key}.pem").write_bytes(base64.b64decode(section.pop(key + "-data")))
        section[key] = f"pki/{key}.pem"
    cfg = tmp_path / "files.kubeconfig"
    cfg.write_text(yaml.safe_dump(doc))
    lines = _in_fresh_process(cfg, 'print(type(k.api).__name__, k.configuration.host == k.server)\n')
    assert lines[1:] == ["kubernetes not imported", "ApiClient True"]


def test_a_wrong_ca_is_a_tls_error_not_a_fallback(kube, tmp_path):
    """The plain path verifies the server as the official client does."""
    doc = yaml.safe_load(kube.sa_kubeconfig.read_text())
    other = yaml.safe_load(kube.kubeconfig.read_text())["users"][0]["user"]["client-certificate-data"]
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = other  # a certificate, but not the server's CA
    cfg = tmp_path / "wrong-ca.kubeconfig"
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(DeployError, match="TLS verification of the API server .* failed"):
        Kube(cfg).list("batch/v1", "Job")


def test_an_exec_plugin_kubeconfig_goes_through_the_official_loader(kube, tmp_path):
    """An exec credential plugin (as EKS, GKE and OIDC logins use) is the official client's job:
    the same ServiceAccount token, handed out by a real plugin process."""
    doc = yaml.safe_load(kube.sa_kubeconfig.read_text())
    token = doc["users"][0]["user"].pop("token")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(textwrap.dedent(f"""
        import json
        print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                          "status": {{"token": {token!r}}}}}))
    """))
    doc["users"][0]["user"]["exec"] = {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                       "command": sys.executable, "args": [str(plugin)],
                                       "interactiveMode": "Never"}
    cfg = tmp_path / "exec.kubeconfig"
    cfg.write_text(yaml.safe_dump(doc))
    assert _in_fresh_process(cfg) == [f"JobList {kube.namespace}", "kubernetes imported"]

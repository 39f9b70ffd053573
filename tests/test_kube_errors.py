"""The API server's failures are typed by kind (fairing.errors: Unreachable, Unauthorized,
Forbidden, Gone...), as well as being DeployErrors with the same one-line message and fix: the
watch's retries and the log reader decide on the type, never on the words. Real API servers."""
from __future__ import annotations

import pytest
import yaml

from fairing import errors
from fairing.kube import errors as kube_errors
from fairing.kube.client import Kube, default_plural, resource_for


def _kubeconfig(kube, tmp_path, *, server: str | None = None, token: str | None = None):
    cfg = yaml.safe_load(kube.sa_kubeconfig.read_text())
    if server:
        cfg["clusters"][0]["cluster"]["server"] = server
    if token:
        cfg["users"][0]["user"]["token"] = token
    path = tmp_path / "edited.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_forbidden_unauthorized_and_unreachable_are_types(kube, tmp_path):
    with pytest.raises(kube_errors.Forbidden) as e:
        Kube(kube.sa_kubeconfig).list("v1", "Pod", "kube-system")
    assert isinstance(e.value, errors.Forbidden) and isinstance(e.value, errors.DeployError)
    assert e.value.exit_code == 4 and e.value.message.startswith("forbidden: ")

    with pytest.raises(kube_errors.Unauthorized) as e:
        Kube(_kubeconfig(kube, tmp_path, token="not-a-real-token")).get("v1", "Pod", "x")
    assert e.value.message == f"the API server {kube.server} rejected the credentials (401 Unauthorized)"

    with pytest.raises(kube_errors.Unreachable) as e:
        Kube(_kubeconfig(kube, tmp_path, server="https://127.0.0.1:1")).get("v1", "Pod", "x")
    assert e.value.message == "cannot reach the Kubernetes API server at https://127.0.0.1:1 (connection refused)"
    assert isinstance(e.value, errors.Unreachable) and not isinstance(e.value, errors.Forbidden)


def test_watch_gives_up_at_once_on_a_fresh_forbidden(kube):
    """Forbidden right away is an answer, not a restarting server: no retry, no wait."""
    w = Kube(kube.sa_kubeconfig).watch("v1", "Pod", "kube-system")
    with pytest.raises(kube_errors.Forbidden):
        next(iter(w))
    assert w.reconnects == 0


def test_resource_table_plurals_and_scope():
    assert resource_for("v1", "Namespace").namespaced is False
    assert resource_for("batch/v1", "CronJob").plural == "cronjobs"
    assert resource_for("serving.kserve.io/v1beta1", "InferenceService").path("ns", "m") == \
        "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/m"
    assert "KServe" in resource_for("serving.kserve.io/v1beta1", "InferenceService").install_hint
    # Kinds fairing does not use get the API server's own plural rule, and a CRD hint.
    assert [default_plural(k) for k in ("Logs", "NetworkPolicy", "Gateway")] == ["logses", "networkpolicies", "gateways"]
    assert resource_for("example.com/v1", "Widget").install_hint == "install the CustomResourceDefinition for Widget (example.com/v1)"

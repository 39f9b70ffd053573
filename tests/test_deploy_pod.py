"""Pod-spec mutators: composable, container-by-name, validated before anything reaches a cluster,
and secrets only referenced. (The stored objects are checked on the real API server in
test_deploy_job.py; these tests cover the mutators' own rules.)"""
import base64
import json

import pytest

from fairing.deployers import pod
from fairing.errors import ConfigError

IMAGE = "127.0.0.1:5443/team/train@sha256:" + "2" * 64


def template(*, sidecar_first=True):
    containers = [{"name": "main", "image": IMAGE}]
    if sidecar_first:
        containers.insert(0, {"name": "proxy", "image": "127.0.0.1:5000/envoy:1"})
    return {"metadata": {}, "spec": {"containers": containers}}


def containers(tpl):
    return {c["name"]: c for c in tpl["spec"]["containers"]}


def test_mutators_compose_and_touch_only_main():
    tpl = template()
    out = pod.apply(tpl, [pod.cpu("500m", limit=2), pod.memory("1Gi"), pod.gpu(2), pod.gpu(1, vendor="amd"),
                          pod.env({"EPOCHS": 3, "DEBUG": True}), pod.env(LR="0.1")])
    main, proxy = containers(out)["main"], containers(out)["proxy"]
    assert main["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                 "limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "2", "amd.com/gpu": "1"}}
    assert main["env"] == [{"name": "EPOCHS", "value": "3"}, {"name": "DEBUG", "value": "true"},
                           {"name": "LR", "value": "0.1"}]
    assert proxy == {"name": "proxy", "image": "127.0.0.1:5000/envoy:1"}
    assert tpl == template(), "the input template must not be modified"


def test_other_container_by_name():
    out = pod.apply(template(), [pod.cpu("100m", container="proxy")])
    assert containers(out)["proxy"]["resources"] == {"requests": {"cpu": "100m"}}
    assert "resources" not in containers(out)["main"]
    with pytest.raises(ConfigError, match="no container named 'trainer'.*proxy, main"):
        pod.apply(template(), [pod.cpu(1, container="trainer")])


@pytest.mark.parametrize("value,hint", [("4GB", "4Gi"), ("2 cores", "quantity"), ("-1", "negative"), ("1.5.2", "quantity")])
def test_bad_quantities_are_config_errors(value, hint):
    with pytest.raises(ConfigError) as e:
        pod.memory(value)
    assert repr(value) in e.value.message
    assert hint in e.value.message + (e.value.hint or "")


def test_quantity_forms_and_limit_below_request():
    assert pod.quantity(0.5) == "0.5" and pod.quantity(2) == "2" and pod.quantity("1e3") == "1e3"
    with pytest.raises(ConfigError, match="cpu limit 1 is below the request 2"):
        pod.cpu("2", limit="1")
    with pytest.raises(ConfigError, match="memory limit 512Mi is below the request 1Gi"):
        pod.memory("1Gi", limit="512Mi")


def test_gpu_validation():
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="GPU count"):
            pod.gpu(bad)
    with pytest.raises(ConfigError, match="unknown GPU vendor 'ati'"):
        pod.gpu(1, vendor="ati")
    out = pod.apply(template(), [pod.gpu(1, vendor="example.com/tpu")])
    assert containers(out)["main"]["resources"]["limits"] == {"example.com/tpu": "1"}
    stripped = pod.strip_gpus(pod.apply(template(), [pod.gpu(2), pod.cpu(1)]))
    assert containers(stripped)["main"]["resources"] == {"requests": {"cpu": "1"}, "limits": {}}


def test_env_from_secret_references_never_values():
    out = pod.apply(template(), [
        pod.env_from_secret("wandb", {"WANDB_API_KEY": "key"}),
        pod.env_from_secret("db-creds"),
        pod.env_from_configmap("settings", ["MODE"], prefix="APP_"),
    ])
    main = containers(out)["main"]
    assert {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}} in main["env"]
    assert {"name": "APP_MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}} in main["env"]
    assert main["envFrom"] == [{"secretRef": {"name": "db-creds"}}]
    assert all("value" not in e for e in main["env"])
    with pytest.raises(ConfigError, match="invalid Secret name 'Bad_Name'"):
        pod.env_from_secret("Bad_Name")
    with pytest.raises(ConfigError, match="environment variable name '1X'"):
        pod.env({"1X": "a"})


def test_volumes():
    out = pod.apply(template(), [pod.pvc("data", "/data"), pod.secret_volume("tls", "/etc/tls"),
                                 pod.configmap_volume("cfg", "/etc/cfg", items={"a.yaml": "a.yaml"}),
                                 pod.empty_dir("/scratch", size_limit="10Gi", memory=True)])
    vols = {v["name"]: v for v in out["spec"]["volumes"]}
    assert vols["pvc-data"]["persistentVolumeClaim"] == {"claimName": "data"}
    assert vols["secret-tls"]["secret"] == {"secretName": "tls", "defaultMode": 0o400}
    assert vols["cm-cfg"]["configMap"]["items"] == [{"key": "a.yaml", "path": "a.yaml"}]
    assert vols["scratch-scratch"]["emptyDir"] == {"sizeLimit": "10Gi", "medium": "Memory"}
    mounts = {m["mountPath"]: m for m in containers(out)["main"]["volumeMounts"]}
    assert set(mounts) == {"/data", "/etc/tls", "/etc/cfg", "/scratch"} and mounts["/etc/tls"]["readOnly"]
    assert "volumeMounts" not in containers(out)["proxy"]
    with pytest.raises(ConfigError, match="must be absolute"):
        pod.pvc("data", "data")
    with pytest.raises(ConfigError, match="/data is already a mount point"):
        pod.apply(template(), [pod.pvc("data", "/data"), pod.pvc("other", "/data")])


def test_scheduling_and_identity():
    out = pod.apply(template(), [pod.node_selector({"gpu-type": "a100"}), pod.toleration("nvidia.com/gpu"),
                                 pod.toleration("dedicated", "ml", effect="NoExecute", seconds=60),
                                 pod.service_account("trainer")])
    assert out["spec"]["nodeSelector"] == {"gpu-type": "a100"}
    assert out["spec"]["tolerations"] == [
        {"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"},
        {"operator": "Equal", "key": "dedicated", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 60}]
    assert out["spec"]["serviceAccountName"] == "trainer"
    with pytest.raises(ConfigError, match="taint effect"):
        pod.toleration("x", effect="Never")


def test_image_pull_secret_reference_and_local_login(tmp_path, monkeypatch):
    out = pod.apply(template(), [pod.image_pull_secret("regcred")])
    assert out["spec"]["imagePullSecrets"] == [{"name": "regcred"}]

    m = pod.image_pull_secret()
    out = pod.apply(template(), [m])
    assert out["spec"]["imagePullSecrets"] == [{"name": "fairing-pull-127-0-0-1-5443"}]

    # The Secret's content comes from the local login (docker's config.json format).
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {"127.0.0.1:5443": {"auth": base64.b64encode(b"alice:s3cret-pw").decode()}}}))
    doc = json.loads(pod.dockerconfigjson("127.0.0.1:5443", "team/train"))
    assert base64.b64decode(doc["auths"]["127.0.0.1:5443"]["auth"]) == b"alice:s3cret-pw"
    with pytest.raises(ConfigError, match="no local credentials for registry 127.0.0.1:9999") as e:
        pod.dockerconfigjson("127.0.0.1:9999")
    assert "login" in e.value.hint

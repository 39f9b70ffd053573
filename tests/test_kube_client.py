"""Client setup and the errors users meet: API server down, Forbidden by RBAC, namespace missing,
CRD not installed, invalid names, a broken kubeconfig; and a watch that survives an API server
restart. All against real API servers (a private second one where a test needs to kill it)."""
import socket
import threading
import time

import pytest
import yaml

from fairing.deployers.k8s.job import JobDeployer
from fairing.deployers.k8s.kubeflow import KubeflowDeployer
from fairing.deployers.k8s.kubeflow import TFJobDeployer
from fairing.errors import ConfigError, DeployError
from fairing.kube.client import CRDNotInstalled, Kube, load_configuration
from tests.rig.kube import OUTCOME_LABEL, fake_image, private_apiserver, require_simulation


# --- configuration ---------------------------------------------------------------------------------
def test_namespace_from_argument_context_and_default(kube, tmp_path):
    assert Kube(kube.sa_kubeconfig).namespace == kube.namespace  # the context's namespace
    assert Kube(kube.sa_kubeconfig, namespace="other").namespace == "other"
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    del cfg["contexts"][0]["context"]["namespace"]
    plain = tmp_path / "plain.kubeconfig"
    plain.write_text(yaml.safe_dump(cfg))
    assert Kube(plain).namespace == "default"


def test_kubeconfig_from_env_and_missing_context(kube, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kube.sa_kubeconfig))
    k = Kube()
    assert k.server == kube.server and k.namespace == kube.namespace
    with pytest.raises(ConfigError, match="context 'nope' not found") as e:
        Kube(context="nope")
    assert "fairing-sa" in e.value.hint


def test_in_cluster_config_from_the_service_account_files(kube, tmp_path, monkeypatch):
    """Inside a pod there is no kubeconfig: the service-account token, CA and namespace files plus
    KUBERNETES_SERVICE_HOST/PORT decide. Laid out here for the rig's ServiceAccount and API server."""
    import kubernetes.config.incluster_config as ic

    import fairing.kube.client as client

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    kc = yaml.safe_load(kube.sa_kubeconfig.read_text())
    (sa / "token").write_text(kc["users"][0]["user"]["token"])
    (sa / "namespace").write_text(kube.namespace + "\n")
    (sa / "ca.crt").write_bytes(__import__("base64").b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]))
    monkeypatch.setattr(client, "SA_DIR", sa)
    monkeypatch.setattr(ic, "SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr(ic, "SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    host, port = kube.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    k = Kube()
    assert (k.namespace, k.source) == (kube.namespace, "in-cluster service account")
    assert k.list("batch/v1", "Job")["kind"] == "JobList"  # really authenticated as the SA

    (sa / "ca.crt").write_text("")
    with pytest.raises(ConfigError, match="in-cluster configuration is incomplete: Cert file exists but empty"):
        Kube()


def test_no_configuration_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="no Kubernetes configuration found"):
        Kube()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="kubeconfig .*absent does not exist"):
        Kube()


# --- errors from the API server ---------------------------------------------------------------------
def test_forbidden_names_verb_resource_namespace_and_fix(kube):
    d = JobDeployer("default", kubeconfig=kube.sa_kubeconfig)
    with pytest.raises(DeployError) as e:
        d.deploy(fake_image("forbidden"))
    msg = e.value.message
    assert msg == f"forbidden: system:serviceaccount:{kube.namespace}:fairing cannot create jobs.batch in namespace 'default'"
    assert "kubectl create role" in e.value.hint and "--verb=create --resource=jobs.batch" in e.value.hint
    assert f"--serviceaccount={kube.namespace}:fairing" in e.value.hint
    # Reading is forbidden outside the namespace too, and says so.
    with pytest.raises(DeployError, match="cannot list pods in namespace 'kube-system'"):
        Kube(kube.sa_kubeconfig).list("v1", "Pod", "kube-system")


def test_namespace_missing(kube):
    d = JobDeployer("fairing-no-such-namespace", kubeconfig=kube.kubeconfig)
    with pytest.raises(DeployError) as e:
        d.deploy(fake_image("no-namespace"))
    assert e.value.message == "namespace 'fairing-no-such-namespace' does not exist"
    assert "kubectl create namespace fairing-no-such-namespace" in e.value.hint


class MPIJobDeployer(KubeflowDeployer):
    """A Kubeflow kind whose CRD the rig does not install (kubeflow.org/v1 itself is served)."""
    kind = "MPIJob"
    deployer_name = "mpijob"
    container_name = "mpi"
    replica_field = "mpiReplicaSpecs"
    replica_types = (("Launcher", "launcher", 1, False), ("Worker", "workers", 1, True))
    kind_options = ("launcher", "workers")


def test_crd_not_installed(kube):
    with pytest.raises(CRDNotInstalled) as e:
        MPIJobDeployer(kubeconfig=kube.sa_kubeconfig).deploy(fake_image("mpi"))
    assert e.value.message == f"MPIJob CRD (kubeflow.org/v1) is not installed on {kube.server}"
    # A whole API group that is absent, through the same path the TFJob deployer uses.
    tf = TFJobDeployer(kubeconfig=kube.sa_kubeconfig)
    tf.api_version = "kubeflow.org/v9"
    with pytest.raises(CRDNotInstalled, match=r"TFJob CRD \(kubeflow.org/v9\) is not installed") as e:
        tf.deploy(fake_image("tf-v9"))
    assert "training operator" in e.value.hint


def test_invalid_names_fail_before_any_call(kube):
    with pytest.raises(ConfigError, match="invalid Job name 'My_Job'"):
        JobDeployer(kubeconfig="/nonexistent", name="My_Job")
    with pytest.raises(ConfigError, match="invalid namespace"):
        Kube(kube.kubeconfig, namespace="Team")


def test_already_exists(kube):
    d = JobDeployer(kubeconfig=kube.sa_kubeconfig, name="twice-" + str(int(time.time())))
    h = d.deploy(fake_image("twice"))
    try:
        with pytest.raises(DeployError, match=f"Job '{h.name}' already exists in namespace"):
            d.deploy(fake_image("twice"))
    finally:
        h.delete()


def test_api_server_rejects_what_validation_missed(kube):
    """The server's own validation message comes through as one line."""
    k = Kube(kube.sa_kubeconfig)
    bad = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad-restart"},
           "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "main", "image": "x"}]}}}}
    with pytest.raises(DeployError, match="rejected Job 'bad-restart':.*restartPolicy"):
        k.create(bad)


# --- API server down ----------------------------------------------------------------------------------
def test_api_server_down_is_one_clear_error(kube):
    require_simulation(kube, "a private API server to stop")
    with private_apiserver() as api:
        d = JobDeployer(kubeconfig=api.sa_kubeconfig)
        h = d.deploy(fake_image("down-1"))
        h.delete()
        api.stop()
        t = time.monotonic()
        with pytest.raises(DeployError) as e:
            JobDeployer(kubeconfig=api.sa_kubeconfig).deploy(fake_image("down-2"))
        elapsed = time.monotonic() - t
    assert e.value.message == f"cannot reach the Kubernetes API server at {api.server} (connection refused)"
    assert "kubectl cluster-info" in e.value.hint
    # Not a behaviour benchmark: a generous bound that only a retry loop or hang would exceed.
    assert elapsed < 5


def test_no_retry_storm_on_a_dropping_server(kube, tmp_path):
    """A server that accepts and drops connections gets exactly one attempt per call
    (urllib3 would otherwise retry). A plain TCP listener stands in for a crashing API server:
    the real one can't be made to drop connections on demand."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(c)
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    cfg = yaml.safe_load(kube.sa_kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{srv.getsockname()[1]}"
    path = tmp_path / "dropping.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    try:
        with pytest.raises(DeployError, match="cannot reach the Kubernetes API server"):
            Kube(path).get("batch/v1", "Job", "x")
    finally:
        srv.close()
    assert len(accepted) == 1


def test_wait_survives_an_api_server_restart(kube):
    """The watch behind wait() breaks when its API server dies and resumes from its
    resourceVersion when it is back; the job's outcome (decided meanwhile) is not missed."""
    require_simulation(kube, "a private API server to stop")
    with private_apiserver() as api:
        d = JobDeployer(kubeconfig=api.sa_kubeconfig, labels={OUTCOME_LABEL: "hang"}, active_deadline_seconds=12)
        h = d.deploy(fake_image("restart"))
        errors, results = [], []

        def waiter():
            try:
                results.append(h.wait(timeout=120))
            except DeployError as e:
                errors.append(e)
        t = threading.Thread(target=waiter)
        t.start()
        try:
            time.sleep(1.5)
            api.stop()
            assert not api.healthy()
            time.sleep(3)
            api.start()
            t.join(130)
        finally:
            Kube(kube.kubeconfig).delete("batch/v1", "Job", h.name, h.namespace)  # via the shared server
    assert not results and len(errors) == 1
    assert "ran longer than its activeDeadlineSeconds (12s)" in errors[0].message


def test_watch_from_a_compacted_version_relists(kube):
    """A resourceVersion the server no longer has (410 Gone) makes the watch re-list: the current
    objects come back as SYNC events instead of an error."""
    def watch_from_1(kubeconfig):
        w = Kube(kubeconfig).watch("v1", "Node", resource_version="1")
        threading.Timer(3, w.stop).start()
        return {n for t, n in ((t, o["metadata"]["name"]) for t, o in w) if t == "SYNC"}

    if kube.external:  # a real cluster compacted revision 1 long ago
        assert watch_from_1(kube.kubeconfig)
        return
    # On a young control plane the API server's watch cache may still hold revision 1 (no 410);
    # a freshly started API server's cache begins at etcd's current revision, so 1 is too old there.
    with private_apiserver() as api:
        synced = watch_from_1(api.kubeconfig)
    assert synced >= {"kwok-node-0", "kwok-gpu-0"}

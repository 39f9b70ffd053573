"""KServe on the rig's real node (tests/rig/kserve.py: KServe v0.15.2's own controller manager and
webhooks, RawDeployment, modelcars on). `--deployer inferenceservice` in its two forms:
(a) fairing's serving image as the predictor container; (b) a modelcar of a registered model
version (`storageUri: oci://`), served by the endpoint's own ServingRuntime. In both, KServe's
controller makes the Deployment and Service and sets Ready; predictions go through the Service it
made (API server proxy): plain HTTP V1 and tritonclient v2. And KServe not installed: one line."""
from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAIR = [sys.executable, "-m", "fairing.cli"]
ISVC = ("serving.kserve.io/v1beta1", "InferenceService")

SCALER = textwrap.dedent('''
    import os

    class Scaler:
        inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        outputs = [{"name": "output-0", "datatype": "FP64", "shape": [-1, 2]}]

        def load(self, model_dir):
            # The factor comes from the model dir when there is one (the modelcar form).
            path = os.path.join(model_dir, "factor.txt")
            self.factor = float(open(path).read()) if os.path.exists(path) else 10.0
            self.model_dir = model_dir

        def predict(self, rows):
            return [[v * self.factor for v in r] for r in rows]
''')


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def fair(*args, env, cwd, timeout=600):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def admin_kube(on_node):
    from fairing.kube.client import Kube

    return Kube(str(on_node.admin_kubeconfig), namespace=on_node.namespace)


def made_by_the_controller(admin, name: str) -> dict:
    """The Deployment KServe's controller made for the predictor: owned by the InferenceService
    (fairing never creates it), and the InferenceService Ready by the controller's own conditions."""
    isvc = admin.get(*ISVC, name)
    conds = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conds.get("Ready") == "True" and conds.get("PredictorReady") == "True", isvc["status"]
    dep = admin.get("apps/v1", "Deployment", f"{name}-predictor")
    assert dep is not None, f"no Deployment {name}-predictor"
    (owner,) = dep["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("InferenceService", name, isvc["metadata"]["uid"])
    assert dep["status"].get("availableReplicas") == 1
    return dep


def gone(admin, *objects, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    for obj in objects:
        while admin.get(*obj) is not None and time.monotonic() < deadline:
            time.sleep(1)
        assert admin.get(*obj) is None, f"{obj} still there {timeout:.0f} s after the delete"


def triton(on_node, tmp_path, name: str):
    """tritonclient (not ours) on the Service KServe made, through the API server's proxy."""
    import tritonclient.http as httpclient
    import yaml

    cfg = yaml.safe_load(Path(on_node.kubeconfig).read_text())
    server = cfg["clusters"][0]["cluster"]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
    auth = {"Authorization": "Bearer " + cfg["users"][0]["user"]["token"]}
    url = f"{server['server'].removeprefix('https://')}/api/v1/namespaces/{on_node.namespace}/services/{name}-predictor:80/proxy"
    client = httpclient.InferenceServerClient(url, ssl=True,
                                              ssl_context_factory=lambda: ssl.create_default_context(cafile=str(ca)))
    return client, auth


def infer(client, auth, model: str):
    import numpy as np
    import tritonclient.http as httpclient

    x = np.array([[1.0, 2.0], [3.5, -1.0]], dtype=np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary tensors, the client's default
    return x, client.infer(model, [inp], headers=auth).as_numpy("output-0")


def test_own_image_inferenceservice_is_made_ready_by_kserve(kserve, on_node, tmp_path):
    """(a) fairing's serving image as the custom predictor: KServe's controller makes the
    Deployment and Service; V1 (fairing's client) and v2 (tritonclient, binary) answer through it."""
    import numpy as np

    from fairing.serving import PredictionEndpoint

    (tmp_path / "scaler.py").write_text(SCALER)
    name = uid("ks-own")
    ep = PredictionEndpoint(f"{tmp_path / 'scaler.py'}:Scaler", name=name, base_image=on_node.base,
                            registry=on_node.registry, deployer="inferenceservice", kubeconfig=str(kserve.kubeconfig),
                            namespace=kserve.namespace, mutators=on_node.mutators(), timeout=300, out=lambda s: None)
    admin = admin_kube(on_node)
    try:
        ep.create()
        dep = made_by_the_controller(admin, name)
        (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "kserve-container"]
        assert c["image"] == ep.image.ref  # the image fairing built, pinned by digest
        assert ep.status() == "Ready"
        assert ep.predict([[1, 2], [3, 4]]) == [[10.0, 20.0], [30.0, 40.0]]  # V1, plain HTTP via the proxy
        client, auth = triton(on_node, tmp_path, name)
        assert client.is_model_ready(name, headers=auth)
        x, out = infer(client, auth, name)
        np.testing.assert_allclose(out, x.astype(np.float64) * 10)
        client.close()
    finally:
        ep.delete()
    assert admin.get(*ISVC, name) is None
    # What the controller made goes with it (garbage collection of the owned objects).
    gone(admin, ("apps/v1", "Deployment", f"{name}-predictor"))


def test_modelcar_of_a_registered_version_serves_through_a_kserve_runtime(kserve, on_node, tmp_path, monkeypatch):
    """(b) train (a local run) -> register -> promote -> `fair deploy --deployer inferenceservice
    --model NAME@champion --modelcar`: the version's files become an OCI image whose /models KServe
    mounts by its modelcar sidecar; the runtime is the endpoint's ServingRuntime (fairing's image)."""
    import numpy as np

    (tmp_path / "train.py").write_text(textwrap.dedent("""
        import os
        open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "factor.txt"), "w").write("3")
        print("accuracy=0.9")
    """))
    (tmp_path / "scaler.py").write_text(SCALER)
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=str(tmp_path / "store"),
                          PYTHONPATH=str(ROOT))
    r = fair("train", "train.py", "--local-mode", "process", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = json.loads(fair("runs", "-o", "json", "--last", "1", env=env, cwd=tmp_path).stdout)[0]
    model = uid("car")
    assert fair("models", "register", model, "--run", run["id"], env=env, cwd=tmp_path).returncode == 0
    assert fair("models", "promote", model, "1", env=env, cwd=tmp_path).returncode == 0

    name = uid("ks-car")
    env["KUBECONFIG"] = str(kserve.kubeconfig)
    r = fair("deploy", "scaler.py:Scaler", "--name", name, "--deployer", "inferenceservice", "--model",
             f"{model}@champion", "--modelcar", "--registry", on_node.registry, "--base-image", on_node.base,
             "-n", kserve.namespace, "-o", "json", env=env, cwd=tmp_path)
    admin = admin_kube(on_node)
    try:
        assert r.returncode == 0, r.stdout + r.stderr + kserve.controller_log()
        isvc = admin.get(*ISVC, name)
        uri = isvc["spec"]["predictor"]["model"]["storageUri"]
        assert uri.startswith(f"oci://{on_node.registry}/") and "-modelcar@sha256:" in uri, uri
        # The deploy's run record names the version and the modelcar that holds it.
        record = json.loads(fair("runs", "show", json.loads(r.stdout)["run_id"], "-o", "json", env=env, cwd=tmp_path).stdout)
        assert record["model"]["resolved"] == f"{model}:1" and record["model"]["modelcar"] == uri.removeprefix("oci://")
        dep = made_by_the_controller(admin, name)
        pod = dep["spec"]["template"]
        # KServe's modelcar injection: the sidecar runs the modelcar image, nothing copies the files.
        assert pod["metadata"]["annotations"].get("internal.serving.kserve.io/storage-initializer-sourceuri") == uri
        pods = admin.list("v1", "Pod", label_selector=f"serving.kserve.io/inferenceservice={name}")["items"]
        (p,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        containers = {c["name"]: c["image"] for c in p["spec"]["containers"]}
        assert containers["modelcar"] == uri.removeprefix("oci://")
        assert [c["name"] for c in p["spec"].get("initContainers") or []] == ["modelcar-init"]
        rt = admin.get("serving.kserve.io/v1alpha1", "ServingRuntime", name)
        assert rt["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
        # The served model reads the version's file from KServe's /mnt/models: factor 3, not the default 10.
        client, auth = triton(on_node, tmp_path, name)
        x, out = infer(client, auth, name)
        np.testing.assert_allclose(out, x.astype(np.float64) * 3)
        client.close()
        from fairing.deployers.k8s.kserve import InferenceServiceDeployer

        handle = InferenceServiceDeployer(kserve.namespace, kubeconfig=str(kserve.kubeconfig)).attach(name)
        assert handle.status() == "Ready"
        assert handle.predict([[1, 1]]) == [[3.0, 3.0]]  # V1, plain HTTP through the Service KServe made
        st = fair("status", name, "-n", kserve.namespace, env={**env, "KUBECONFIG": str(on_node.admin_kubeconfig)},
                  cwd=tmp_path)
        # `fair status` reads the replica's /metrics: the version and the run that made it, served here.
        assert f"model: {model}:1 from run {run['id']}" in st.stdout and "requests: 2" in st.stdout, st.stdout + st.stderr
    finally:
        # The test ServiceAccount: `fair delete` skips the kinds it may not read (trainjobs, once
        # Trainer's CRDs are on the rig).
        d = fair("delete", name, "-n", kserve.namespace, env=env, cwd=tmp_path)
    assert d.returncode == 0, d.stdout + d.stderr
    assert admin.get(*ISVC, name) is None
    # The endpoint's ServingRuntime and the Deployment go with it (owned by the InferenceService).
    gone(admin, ("serving.kserve.io/v1alpha1", "ServingRuntime", name), ("apps/v1", "Deployment", f"{name}-predictor"))


def test_a_failed_serving_build_leaves_no_modelcar_tag(kserve, on_node, registry, tmp_path):
    """`--modelcar` whose serving image cannot be built (a requirement no index has): the build's
    error, and no modelcar tag in the registry (the modelcar is pushed only after the serving image
    is built; it used to be pushed first and stay behind)."""
    (tmp_path / "scaler.py").write_text(SCALER)
    (tmp_path / "train.py").write_text("import os\nopen(os.path.join(os.environ['FAIRING_OUTPUT_DIR'], 'factor.txt'), 'w').write('3')\n")
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=str(tmp_path / "store"),
                          PYTHONPATH=str(ROOT))
    assert fair("train", "train.py", "--local-mode", "process", env=env, cwd=tmp_path).returncode == 0
    run = json.loads(fair("runs", "-o", "json", "--last", "1", env=env, cwd=tmp_path).stdout)[0]
    assert fair("models", "register", "m", "--run", run["id"], env=env, cwd=tmp_path).returncode == 0
    repo = f"kserve-nobuild-{uuid.uuid4().hex[:6]}"
    env["KUBECONFIG"] = str(kserve.kubeconfig)
    r = fair("deploy", "scaler.py:Scaler", "--deployer", "inferenceservice", "--model", "m:1", "--modelcar",
             "--registry", f"{registry.host}/{repo}", "--base-image", on_node.base,
             "-r", "no-such-package-fairing-test==0.0.1", "-n", kserve.namespace, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "error: no wheel of the requirements" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "modelcar" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not has_tags(registry, f"{repo}/fairing-scaler-modelcar")
    assert not has_tags(registry, f"{repo}/fairing-scaler")


def test_a_serving_runtime_fairing_did_not_make_is_left_alone(kserve, on_node):
    """The modelcar form makes a ServingRuntime named like the endpoint: one that someone else made
    is refused before anything is applied (neither it nor an InferenceService changes)."""
    from fairing.context import BuiltImage
    from fairing.deployers.k8s.kserve import InferenceServiceDeployer
    from fairing.deployers.template import pod_template
    from fairing.errors import DeployError
    from fairing.preprocessors.serve import ServePreprocessor

    class Echo:
        def predict(self, rows):
            return rows

    name = uid("ks-theirs")
    admin = admin_kube(on_node)
    theirs = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
              "metadata": {"name": name, "namespace": kserve.namespace},
              "spec": {"supportedModelFormats": [{"name": "theirs"}],
                       "containers": [{"name": "kserve-container", "image": "example.invalid/theirs:1"}]}}
    admin.create(theirs)
    try:
        ctx = ServePreprocessor().prepare(Echo, name=name)
        digest = "sha256:" + "ab" * 32
        ref = f"{on_node.registry}/never-pulled@{digest}"
        image = BuiltImage(ref=ref, digest=digest, context=ctx, pod_template=pod_template(ref, ctx))
        d = InferenceServiceDeployer(kserve.namespace, kubeconfig=str(kserve.kubeconfig), name=name,
                                     modelcar=f"oci://{on_node.registry}/never-pulled-modelcar@{digest}")
        with pytest.raises(DeployError) as e:
            d.deploy(image)
        assert f"ServingRuntime {name!r} in namespace {kserve.namespace!r} exists and was not created by fairing" \
            in e.value.message
        assert admin.get(*ISVC, name) is None
        kept = admin.get("serving.kserve.io/v1alpha1", "ServingRuntime", name)
        assert kept["spec"]["containers"][0]["image"] == "example.invalid/theirs:1"
    finally:
        admin.delete("serving.kserve.io/v1alpha1", "ServingRuntime", name)


@pytest.fixture(scope="module")
def bare_apiserver(kube, tmp_path_factory):
    """A real kube-apiserver on the rig's etcd under its own key prefix: an empty cluster where
    KServe is not installed (as in tests/test_deploy_trainjob.py)."""
    from tests.rig import kube as rig
    from tests.rig.state import Service, free_port

    pki = kube.pki
    port = free_port()
    argv = rig._apiserver_argv(pki, port) + [f"--etcd-prefix=/fairing-bare-{uuid.uuid4().hex[:8]}"]  # noqa: SLF001
    svc = Service(f"kube/apiserver-bare-{port}", argv)
    svc.ensure(lambda: rig.https_ok(f"https://127.0.0.1:{port}/readyz", pki), port=port, timeout=120)
    cfg = rig.write_kubeconfig(tmp_path_factory.mktemp("bare") / "admin.kubeconfig", f"https://127.0.0.1:{port}",
                               pki.ca_crt, user="fairing-admin", cert=pki.admin_crt, key=pki.admin_key,
                               namespace="default")
    yield cfg
    svc.stop()
    svc.log.unlink(missing_ok=True)


def has_tags(registry, repo: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{registry.url}/v2/{repo}/tags/list", timeout=10) as r:
            return bool(json.loads(r.read()).get("tags"))
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
        return False


def test_kserve_not_installed_is_one_line_and_pushes_nothing(bare_apiserver, registry, tmp_path):
    """Asked for inferenceservice where KServe is not installed: one line and the hint, exit 4, no
    traceback; checked before the build, and with --modelcar before the modelcar is pushed:
    nothing reaches the registry and nothing is created."""
    (tmp_path / "scaler.py").write_text(SCALER)
    (tmp_path / "train.py").write_text("import os\nopen(os.path.join(os.environ['FAIRING_OUTPUT_DIR'], 'f'), 'w').write('1')\n")
    repo = f"kserve-missing-{uuid.uuid4().hex[:6]}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG"))},
           "PYTHONPATH": str(ROOT), "FAIRING_RUNS": str(tmp_path / "runs.db"), "FAIRING_OUTPUTS": str(tmp_path / "store")}
    assert fair("train", "train.py", "--local-mode", "process", env=env, cwd=tmp_path).returncode == 0
    run = json.loads(fair("runs", "-o", "json", "--last", "1", env=env, cwd=tmp_path).stdout)[0]
    assert fair("models", "register", "m", "--run", run["id"], env=env, cwd=tmp_path).returncode == 0
    env["KUBECONFIG"] = str(bare_apiserver)
    for extra in ([], ["--model", "m:1", "--modelcar"]):
        r = fair("deploy", "scaler.py:Scaler", "--deployer", "inferenceservice", "--registry",
                 f"{registry.host}/{repo}", "--base-image", "127.0.0.1:5000/none:1", *extra, env=env, cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
        assert r.returncode == 4, r.stdout + r.stderr
        assert lines[0].startswith("error: KServe is not installed on https://127.0.0.1:"), r.stderr
        assert "InferenceService API" in lines[0] and lines[1].startswith("hint: install KServe"), r.stderr
        assert len(lines) == 2 and "Traceback" not in r.stderr
    # Neither the serving image nor the modelcar was pushed (the CLI names them <registry>/fairing-NAME[-modelcar]).
    assert not has_tags(registry, f"{repo}/fairing-scaler") and not has_tags(registry, f"{repo}/fairing-scaler-modelcar")

"""Serving on the test control plane (real kube-apiserver + controllers, kwok nodes), as the
namespace-scoped ServiceAccount with the minimal Role.

kwok runs no containers, so nothing here sends a prediction to a pod (kwok's pod IPs are not
reachable, and must not be dialled); what is checked is what the API server and the controllers
do with our objects: accepted and validated (including the KServe CRD schema), rolled out until
kwok reports the pods ready, updated in place, and deleted without leftovers."""
from __future__ import annotations

import time
import uuid

import pytest

from fairing.deployers import pod

from fairing.context import BuiltImage
from fairing.deployers.template import pod_template
from fairing.deployers.k8s.kserve import InferenceServiceDeployer
from fairing.deployers.k8s.deployment import ServingDeployer
from fairing.errors import DeployError
from fairing.preprocessors.serve import ServePreprocessor
from fairing.serving import PredictionEndpoint, PredictionError


class Echo:
    def predict(self, rows):
        return rows


def image_for(name: str, digest_byte: str = "ab") -> BuiltImage:
    """A serving image value. kwok never pulls it, so the digest needs no registry behind it;
    the build itself is covered by the local round trip."""
    ctx = ServePreprocessor().prepare(Echo, name=name)
    digest = "sha256:" + digest_byte * 32
    ref = f"127.0.0.1:5000/fairing-test/serve-{name}@{digest}"
    return BuiltImage(ref=ref, digest=digest, context=ctx, pod_template=pod_template(ref, ctx))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def resources(cpu, memory):
    """The shared pod mutators, as a user would pass them."""
    return [pod.cpu(cpu, cpu), pod.memory(memory)]


@pytest.fixture
def admin(kube):
    return kube.kube(admin=True)


def pods_of(admin, name):
    return admin.list("v1", "Pod", label_selector=f"fairing.dev/serving={name}")["items"]


def wait_no_pods(admin, name, timeout=60):
    deadline = time.monotonic() + timeout
    while pods_of(admin, name):
        assert time.monotonic() < deadline, f"pods of {name} still there after {timeout}s"
        time.sleep(0.5)


def test_endpoint_on_the_cluster_rolls_out_updates_and_deletes(kube, admin, registry, base_image):
    """The user path: PredictionEndpoint builds (append builder, real registry), applies the
    Deployment + Service as the least-privileged ServiceAccount, waits for kwok's ready pods."""
    name = unique("echo")
    printed = []
    ep = PredictionEndpoint(Echo, name=name, base_image=base_image.docker, registry=registry.host,
                            target=f"{registry.host}/fairing-test/serve-echo", deployer="serving",
                            kubeconfig=str(kube.sa_kubeconfig), namespace=kube.namespace, replicas=2,
                            mutators=resources("250m", "256Mi"), timeout=120, out=printed.append)
    ep.create()
    try:
        assert ep.status() == "Ready"
        assert ep.image.ref.startswith(f"{registry.host}/fairing-test/serve-echo@sha256:")
        proxy = f"/api/v1/namespaces/{kube.namespace}/services/{name}:http/proxy"
        assert ep.url.endswith(proxy)
        assert any(ep.url in line for line in printed) and any(f"/v1/models/{name}:predict" in l for l in printed)

        dep = admin.get("apps/v1", "Deployment", name)
        svc = admin.get("v1", "Service", name)
        assert dep["status"]["readyReplicas"] == 2
        main = dep["spec"]["template"]["spec"]["containers"][0]
        assert main["image"] == ep.image.ref  # pinned by digest
        assert main["resources"]["limits"] == {"cpu": "250m", "memory": "256Mi"}
        assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        pods = pods_of(admin, name)
        assert len(pods) == 2 and all(p["spec"]["containers"][0]["image"] == ep.image.ref for p in pods)

        # `fair status/logs/delete NAME` find it again through attach().
        from fairing import workloads

        again = workloads.attach(name, {"kubeconfig": str(kube.sa_kubeconfig), "namespace": kube.namespace,
                                        "deployer": "serving"})
        assert again.status() == "Ready" and again.model_name == name
        lines = list(again.logs())  # kwok runs no containers: each replica says why there is no log
        assert len(lines) == 2 and all("not available" in line for line in lines)

        # Deploying again rolls the same Deployment to the new image (no "already exists").
        gen = dep["metadata"]["generation"]
        newer = image_for(name, "cd")
        handle = ServingDeployer(kube.namespace, kubeconfig=str(kube.sa_kubeconfig), name=name, replicas=2).deploy(newer)
        assert handle.wait(120) == "Ready"
        dep = admin.get("apps/v1", "Deployment", name)
        assert dep["metadata"]["generation"] > gen
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == newer.ref
        assert {p["spec"]["containers"][0]["image"] for p in pods_of(admin, name)
                if not p["metadata"].get("deletionTimestamp")} == {newer.ref}
    finally:
        ep.delete()
    assert ep.status() == "Deleted"
    assert admin.get("apps/v1", "Deployment", name) is None
    assert admin.get("v1", "Service", name) is None
    wait_no_pods(admin, name)
    # Predicting on a deleted endpoint: the API server's proxy answers 404 (nothing is dialled).
    with pytest.raises(PredictionError) as e:
        ep.predict([[1]])
    assert e.value.status == 404 and name in e.value.message


def test_no_ready_pod_is_a_clear_predict_error(kube):
    """replicas=0: the Service has no endpoints, so the API server answers 503 without dialling."""
    name = unique("empty")
    d = ServingDeployer(kube.namespace, kubeconfig=str(kube.sa_kubeconfig), name=name, replicas=0)
    handle = d.deploy(image_for(name))
    try:
        assert handle.wait(60) == "Ready"
        with pytest.raises(PredictionError) as e:
            handle.predict([[1, 2]])
        assert e.value.status == 503 and "no ready pod behind the Service" in e.value.message
    finally:
        handle.delete()


def test_server_side_validation_and_nothing_half_created(kube, admin):
    name = unique("bad")
    sa = dict(kubeconfig=str(kube.sa_kubeconfig))
    # The API server validates the rendered objects without creating anything.
    answered = ServingDeployer(kube.namespace, name=name, **sa).validate(image_for(name))
    assert [o["kind"] for o in answered] == ["Deployment", "Service"]
    assert admin.get("apps/v1", "Deployment", name) is None
    # A mount of a volume the pod lacks: the Deployment is refused after the Service was applied,
    # so the Service goes too.
    def dangling_mount(t):
        for c in t["spec"]["containers"]:
            if c["name"] == "main":
                c["volumeMounts"] = [{"name": "weights", "mountPath": "/weights"}]
        return t

    d = ServingDeployer(kube.namespace, name=name, mutators=[dangling_mount], **sa)
    with pytest.raises(DeployError) as e:
        d.deploy(image_for(name))
    assert f"rejected Deployment '{name}'" in e.value.message and "volumeMounts[0].name" in e.value.message
    assert admin.get("v1", "Service", name) is None
    assert admin.get("apps/v1", "Deployment", name) is None


def test_a_foreign_service_is_not_taken_over(kube, admin):
    name = unique("taken")
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                  "spec": {"ports": [{"port": 80}], "selector": {"app": "someone-else"}}})
    try:
        with pytest.raises(DeployError) as e:
            ServingDeployer(kube.namespace, kubeconfig=str(kube.sa_kubeconfig), name=name).deploy(image_for(name))
        assert "exists and was not created by fairing" in e.value.message
        assert admin.get("v1", "Service", name)["spec"]["selector"] == {"app": "someone-else"}
        assert admin.get("apps/v1", "Deployment", name) is None
    finally:
        admin.delete("v1", "Service", name)


def test_inferenceservice_custom_predictor_on_the_crd(kube, admin):
    name = unique("isvc")
    d = InferenceServiceDeployer(kube.namespace, kubeconfig=str(kube.sa_kubeconfig), name=name, replicas=1,
                                 max_replicas=3, mutators=resources("500m", "512Mi"))
    image = image_for(name)
    (checked,) = d.validate(image)  # server-side dry run against the KServe CRD schema
    assert checked["spec"]["predictor"]["containers"][0]["name"] == "kserve-container"
    assert admin.get("serving.kserve.io/v1beta1", "InferenceService", name) is None
    handle = d.deploy(image)
    try:
        stored = admin.get("serving.kserve.io/v1beta1", "InferenceService", name)
        pred = stored["spec"]["predictor"]
        kc = pred["containers"][0]
        assert kc["image"] == image.ref and kc["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
        assert kc["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert pred["minReplicas"] == 1 and pred["maxReplicas"] == 3
        assert stored["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
        assert handle.url.endswith(f"/services/{name}-predictor:80/proxy")
        # Ready comes from KServe's controller, on the real node: tests/test_kserve.py.
    finally:
        handle.delete()
    assert admin.get("serving.kserve.io/v1beta1", "InferenceService", name) is None


def test_inferenceservice_model_format_and_schema_rejection(kube, admin):
    name = unique("sk")
    d = InferenceServiceDeployer(kube.namespace, kubeconfig=str(kube.sa_kubeconfig), name=name,
                                 model_format="sklearn", storage_uri="pvc://models/iris", protocol_version="v2")
    handle = d.deploy()
    try:
        model = admin.get("serving.kserve.io/v1beta1", "InferenceService", name)["spec"]["predictor"]["model"]
        # What fairing wrote; KServe's defaulting webhook adds resources (and an empty name) when KServe's manager runs on
        # the shared rig (tests/rig/kserve.py), so only these keys are compared.
        mine = {k: model[k] for k in ("modelFormat", "storageUri", "protocolVersion")}
        assert mine == {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://models/iris", "protocolVersion": "v2"}
        assert set(model) <= {"modelFormat", "storageUri", "protocolVersion", "resources", "name"}, model
        assert handle.model_name == name
    finally:
        handle.delete()
    # The CRD schema really is enforced: a wrong type in the predictor is refused with the field named.
    bad = d.render()[0]
    bad["metadata"]["name"] = unique("sk-bad")
    bad["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(DeployError) as e:
        admin.create(bad)
    assert "minReplicas" in e.value.message


def test_an_image_the_nodes_cannot_pull_stops_create_at_once(kube, admin):
    """kwok's rig stage puts pods labelled fairing.test/outcome=imagepull into ImagePullBackOff, as
    a node would for a registry it cannot reach. create() stops with the reason (no waiting for the
    timeout) and removes what it made."""
    name = unique("nopull")
    image = image_for(name)
    ep = PredictionEndpoint(Echo, name=name, image=image, deployer="serving", kubeconfig=str(kube.sa_kubeconfig),
                            namespace=kube.namespace, mutators=[pod.labels({"fairing.test/outcome": "imagepull"})],
                            timeout=120, out=lambda s: None)
    started = time.monotonic()
    with pytest.raises(DeployError) as e:
        ep.create()
    assert time.monotonic() - started < 60
    assert f"cannot pull image {image.ref}" in e.value.message
    assert "image pull secret" in e.value.hint
    assert admin.get("apps/v1", "Deployment", name) is None
    assert admin.get("v1", "Service", name) is None

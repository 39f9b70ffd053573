"""Serving without a cluster or an engine: the manifests the deployers render (what `--dry-run`
prints), the client's payload encoding, and input validation. The round trips are in
test_serving_local.py (Podman) and test_serving_cluster.py (API server + kwok)."""
from __future__ import annotations

import json

import pytest

from fairing.deployers import pod
import yaml

from fairing.context import BuiltImage
from fairing.deployers.template import pod_template
from fairing.deployers.k8s.kserve import InferenceServiceDeployer
from fairing.deployers.local.endpoint import LocalServingDeployer
from fairing.deployers.k8s.deployment import ServingDeployer
from fairing.errors import ConfigError
from fairing.preprocessors.serve import ServePreprocessor
from fairing.serving import (
    HttpTransport, ModelClient, PredictionEndpoint, PredictionError, v2_outputs, v2_request, v2_tensor,
)

DIGEST = "sha256:" + "ab" * 32


class Iris:
    def predict(self, rows):
        return [0 for _ in rows]


def built(name="iris", **kw) -> BuiltImage:
    ctx = ServePreprocessor().prepare(Iris, name=name, **kw)
    ref = f"127.0.0.1:5000/fairing-{name}@{DIGEST}"
    return BuiltImage(ref=ref, digest=DIGEST, context=ctx, pod_template=pod_template(ref, ctx))


def resources(cpu, memory):
    """The shared pod mutators, as a user would pass them."""
    return [pod.cpu(cpu, cpu), pod.memory(memory)]


def sidecar(t):
    t["spec"]["containers"].insert(0, {"name": "proxy", "image": "envoy:v1"})
    return t


def test_serving_renders_a_deployment_and_service():
    dep, svc = ServingDeployer("team-a", name="iris", replicas=3, mutators=[sidecar, *resources("500m", "1Gi")]).render(built())
    assert dep["kind"] == "Deployment" and svc["kind"] == "Service"
    assert dep["metadata"]["namespace"] == svc["metadata"]["namespace"] == "team-a"
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["proxy", "main"]  # found by name, not position
    main = pod["containers"][1]
    assert main["image"].endswith(DIGEST)
    assert main["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert "readinessProbe" not in pod["containers"][0]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["MODEL_NAME"] == "iris" and env["PORT"] == "8080"
    # The selector matches the pod labels, and the Service selects the same pods.
    sel = spec["selector"]["matchLabels"]
    assert sel.items() <= spec["template"]["metadata"]["labels"].items()
    assert svc["spec"]["selector"] == sel
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fairing"
    # Each replica says where Prometheus scrapes it (the README's scrape config keeps such pods).
    assert spec["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    # Renders to YAML (what --dry-run prints) and never carries secrets in env values.
    assert "kind: Deployment" in yaml.safe_dump_all([dep, svc])


def test_inferenceservice_custom_predictor():
    (isvc,) = InferenceServiceDeployer("ns", replicas=2, max_replicas=4,
                                       mutators=[sidecar, *resources("1", "2Gi")]).render(built())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == "iris"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    pred = isvc["spec"]["predictor"]
    assert pred["minReplicas"] == 2 and pred["maxReplicas"] == 4
    names = [c["name"] for c in pred["containers"]]
    assert names == ["proxy", "kserve-container"]
    kc = pred["containers"][1]
    assert kc["image"].endswith(DIGEST) and kc["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert kc["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert kc["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert "restartPolicy" not in pred
    assert pred["annotations"]["prometheus.io/port"] == "8080"  # KServe copies them to its pods


def test_a_mutator_can_turn_scraping_off():
    def no_scrape(t):
        t.setdefault("metadata", {}).setdefault("annotations", {})["prometheus.io/scrape"] = "false"
        return t

    (dep, _) = ServingDeployer("ns", mutators=[no_scrape]).render(built())
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "false"


def test_inferenceservice_model_format_needs_no_image():
    (isvc,) = InferenceServiceDeployer("ns", name="iris-sk", model_format="sklearn", storage_uri="gs://bucket/iris",
                                       protocol_version="v2", mutators=resources("1", "1Gi")).render()
    model = isvc["spec"]["predictor"]["model"]
    assert model == {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://bucket/iris", "protocolVersion": "v2",
                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}
    assert "containers" not in isvc["spec"]["predictor"]


def test_inferenceservice_modelcar_is_a_runtime_of_the_serving_image():
    """The modelcar form: the predictor asks for fairing's model format from the endpoint's own
    ServingRuntime, whose container is the serving image reading KServe's /mnt/models."""
    car = "oci://127.0.0.1:5000/t/fairing-iris-modelcar@" + DIGEST
    isvc, rt = InferenceServiceDeployer("ns", modelcar=car, mutators=resources("1", "1Gi")).render(built())
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "fairing"} and model["runtime"] == "iris" and model["storageUri"] == car
    assert model["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert "containers" not in isvc["spec"]["predictor"]
    assert rt["kind"] == "ServingRuntime" and rt["metadata"]["name"] == "iris" and rt["metadata"]["namespace"] == "ns"
    assert rt["spec"]["supportedModelFormats"] == [{"name": "fairing", "version": "1", "autoSelect": False}]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container" and c["image"].endswith(DIGEST) and "resources" not in c
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["FAIRING_MODEL_DIR"] == "/mnt/models" and env["MODEL_NAME"] == "iris"
    # Before the modelcar exists (a dry run), the URI says what will be there.
    isvc, _ = InferenceServiceDeployer("ns", modelcar=True).render(built())
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("oci://<modelcar")


def test_prediction_endpoint_render_is_a_dry_run():
    ep = PredictionEndpoint(Iris, name="iris", registry="127.0.0.1:5000", base_image="b:1", deployer="serving",
                            namespace="ns", replicas=2)
    dep, svc = ep.render()
    assert dep["spec"]["replicas"] == 2
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("127.0.0.1:5000/fairing-iris:")  # the tag the build would push
    ep = PredictionEndpoint(name="iris-sk", deployer="inferenceservice", model_format="sklearn",
                            storage_uri="pvc://models/iris", namespace="ns")
    assert ep.build() is None
    assert ep.render()[0]["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/iris"
    local = LocalServingDeployer(name="iris-local").render(built())[0]
    assert local["kind"] == "LocalServing" and local["spec"]["ports"][0]["hostIP"] == "127.0.0.1"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: ServingDeployer("ns", name="Iris_Model"), "invalid endpoint name 'Iris_Model'"),
        (lambda: ServingDeployer("ns", name="1iris"), "must start with a letter"),
        (lambda: ServingDeployer("ns", replicas=-1), "replicas must be a whole number"),
        (lambda: ServingDeployer("ns", replicas="2"), "replicas must be a whole number"),
        (lambda: ServingDeployer("ns", replica=2), "unknown option for the serving deployer: replica"),
        (lambda: ServingDeployer("ns", service_port=0), "invalid port 0"),
        (lambda: LocalServingDeployer(host_port=70000), "invalid port 70000"),
        (lambda: LocalServingDeployer(gpus=1), "unknown option for the local serving deployer: gpus"),
        (lambda: PredictionEndpoint(Iris, deployer="serving", replicaz=3), "unknown option for the serving deployer"),
        (lambda: InferenceServiceDeployer("ns", name="x" * 50), "at most 45"),
        (lambda: InferenceServiceDeployer("ns", replicas=3, max_replicas=2), "max_replicas=2 is below replicas=3"),
        (lambda: InferenceServiceDeployer("ns", deployment_mode="Fast"), "unknown KServe deployment mode"),
        (lambda: InferenceServiceDeployer("ns", model_format="sklearn"), "needs storage_uri"),
        (lambda: InferenceServiceDeployer("ns", storage_uri="gs://b/m"), "needs model_format"),
        (lambda: InferenceServiceDeployer("ns", modelcar="127.0.0.1:5000/m@" + DIGEST), "is not an oci:// image reference"),
        (lambda: InferenceServiceDeployer("ns", modelcar=True, model_format="sklearn", storage_uri="oci://r/m"),
         "give one"),
        (lambda: InferenceServiceDeployer("ns", modelcar=True).deploy(built()), "needs the modelcar built first"),
        (lambda: PredictionEndpoint(Iris, deployer="inferenceservice", modelcar=True), "needs the model to put in it"),
        (lambda: PredictionEndpoint(Iris, deployer="serving", model_ref="iris@champion", modelcar=True),
         "served by KServe, not by the serving deployer"),
        (lambda: PredictionEndpoint(Iris, deployer="seldon"), "unknown serving deployer 'seldon'"),
        (lambda: PredictionEndpoint(Iris, deployer="serving", protocol="v3"), "unknown protocol 'v3'"),
        (lambda: PredictionEndpoint(deployer="serving"), "needs a model"),
        (lambda: PredictionEndpoint(deployer="serving", model_format="sklearn", storage_uri="gs://x"),
         "model_format works with the inferenceservice deployer"),
        (lambda: PredictionEndpoint(Iris, deployer="serving").build(), "no registry"),
        (lambda: PredictionEndpoint(Iris, registry="r:5000", deployer="serving").build(), "needs a base image"),
        (lambda: PredictionEndpoint(Iris, deployer="local").predict([1]), "has not been created"),
        (lambda: ServingDeployer("ns").deploy(BuiltImage(ref="r/x:latest", digest="", context=built().context,
                                                         pod_template=built().pod_template)), "not pinned by digest"),
        (lambda: ServingDeployer("ns").render(BuiltImage(ref="r/x@" + DIGEST, digest=DIGEST)), "serving context"),
    ],
)
def test_bad_options_fail_before_anything_happens(make, words):
    with pytest.raises(ConfigError) as e:
        make()
    assert words in e.value.message and e.value.hint


# --- client payloads ---------------------------------------------------------------------------------

def test_v2_encoding_of_lists_and_numpy():
    np = pytest.importorskip("numpy")
    assert v2_tensor("x", [[1, 2], [3, 4]]) == {"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}
    assert v2_tensor("x", [0.5, 1])["datatype"] == "FP64"
    assert v2_tensor("x", ["a", "b"])["datatype"] == "BYTES"
    assert v2_tensor("x", [True, False])["datatype"] == "BOOL"
    t = v2_tensor("x", np.zeros((2, 3), dtype=np.float32))
    assert t["shape"] == [2, 3] and t["datatype"] == "FP32" and len(t["data"]) == 6
    assert v2_tensor("x", np.array([1, 2], dtype=np.uint8))["datatype"] == "UINT8"
    req = v2_request({"a": [1, 2], "b": [[1.5]]})
    assert [(i["name"], i["shape"]) for i in req["inputs"]] == [("a", [2]), ("b", [1, 1])]
    with pytest.raises(ConfigError, match="ragged"):
        v2_tensor("x", [[1, 2], [3]])
    with pytest.raises(ConfigError, match="mixes"):
        v2_tensor("x", [1, "a"])
    assert v2_outputs({"outputs": [{"name": "o", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]}) == [[1, 2], [3, 4]]
    assert v2_outputs({"outputs": [{"name": "a", "shape": [1], "data": [1]},
                                   {"name": "b", "shape": [], "data": ["x"]}]}) == {"a": [1], "b": "x"}


def test_client_errors_quote_the_server(tmp_path):
    """A real HTTP server on loopback answering like a model server that rejects the payload."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/v1/"):
                body, status = json.dumps({"error": "the model rejected the input: ValueError: bad"}).encode(), 422
            else:
                body, status = b"<html>gateway timeout</html>", 504
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ModelClient(HttpTransport(f"http://127.0.0.1:{server.server_address[1]}"), "iris")
        with pytest.raises(PredictionError) as e:
            client.predict([[1, 2]])
        assert e.value.status == 422 and e.value.server_message == "the model rejected the input: ValueError: bad"
        assert "model 'iris' answered 422" in e.value.message and "instances" in e.value.hint
        with pytest.raises(PredictionError) as e:
            client.predict([[1, 2]], protocol="v2")
        assert e.value.status == 504 and "gateway timeout" in e.value.message
        with pytest.raises(ConfigError, match="must be a list"):
            client.predict({"a": 1})
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ModelClient.for_url(f"http://127.0.0.1:{port}", "iris", timeout=2)
    from fairing.errors import DeployError

    with pytest.raises(DeployError) as e:
        client.predict([[1]])
    assert f"cannot reach the model server at http://127.0.0.1:{port}" in e.value.message

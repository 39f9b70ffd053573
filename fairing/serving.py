"""Serving for users: `PredictionEndpoint(MyModel, ...).create()`, `.predict(data)`, `.delete()`,
and `ModelClient`, the small HTTP client for fairing's model server (KServe V1 and Open Inference v2).

The client talks through a transport: plain HTTP for a local container (or any URL), or the
Kubernetes API server's service proxy for a cluster Service, so predict() works wherever
`kubectl` works, without a port-forward or an Ingress."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

from .errors import ConfigError, DeployError, FairingError

PROTOCOLS = ("v1", "v2")


class PredictionError(FairingError):
    """The model server answered with an error; `status` is its HTTP status, `server_message` its
    JSON "error" text."""

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None,
                 server_message: str | None = None):
        super().__init__(message, hint)
        self.status = status
        self.server_message = server_message


# ----------------------------------------------------------------------------- transports


class HttpTransport:
    """Requests to a base URL (a local container's published port, an Ingress, a port-forward)."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, session=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session

    @property
    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        import requests

        try:
            r = self.session.request(method, self.url(path), json=body, timeout=self.timeout)
        except requests.ConnectionError as exc:
            raise DeployError(f"cannot reach the model server at {self.base_url}: {_short(exc)}",
                              hint="is it still running? check handle.status() and handle.logs()") from None
        except requests.Timeout:
            raise DeployError(f"the model server at {self.base_url} did not answer within {self.timeout:g}s",
                              hint="a slow model needs a bigger timeout=; check handle.logs()") from None
        return r.status_code, r.content


class ServiceProxyTransport:
    """Requests through the API server: /api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>.
    Uses fairing.kube's configured client, so any kubeconfig auth works (certs, tokens, exec)."""

    def __init__(self, kube, namespace: str, service: str, port: int | str, *, timeout: float = 60.0):
        self.kube = kube
        self.namespace = namespace
        self.service = service
        self.port = port
        self.timeout = timeout
        self.base_path = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"

    @property
    def base_url(self) -> str:
        return self.kube.server.rstrip("/") + self.base_path

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        api = self.kube.api
        try:
            method, url, hdrs, body, _ = api.param_serialize(
                method, self.base_path + path, header_params=headers, body=body, auth_settings=["BearerToken"])
            resp = api.call_api(method, url, header_params=hdrs, body=body, _request_timeout=(5.0, self.timeout))
            # Any status comes back as is: from the model server, or from the proxy itself.
            return resp.status, resp.read()
        except Exception as exc:  # noqa: BLE001 - transport failures get the kube layer's wording
            raise self.kube.translate(exc, ("proxy", None, self.namespace, self.service)) from None


def _short(exc: Exception) -> str:
    text = str(exc)
    return "connection refused" if "refused" in text.lower() else text.split(":")[-1].strip()[:200] or type(exc).__name__


# ----------------------------------------------------------------------------- payloads

_NUMPY_V2 = {"b": "BOOL", "i1": "INT8", "i2": "INT16", "i4": "INT32", "i8": "INT64", "u1": "UINT8",
             "u2": "UINT16", "u4": "UINT32", "u8": "UINT64", "f2": "FP16", "f4": "FP32", "f8": "FP64"}


def jsonable(data: Any) -> Any:
    """numpy arrays/scalars, pandas frames, tuples -> plain JSON values."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, Mapping):
        return {str(k): jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [jsonable(v) for v in data]
    if hasattr(data, "to_numpy"):  # pandas
        return jsonable(data.to_numpy())
    if hasattr(data, "tolist"):
        return data.tolist()
    if isinstance(data, bytes):
        return data.decode()
    raise ConfigError(f"cannot send a {type(data).__name__} to the model as JSON",
                      hint="pass lists, numbers, strings, dicts or numpy arrays")


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flatten(value: Any, shape: list[int], where: str) -> list:
    if not shape:
        return [value]
    if not isinstance(value, list) or len(value) != shape[0]:
        raise ConfigError(f"{where} is ragged: rows have different lengths",
                          hint="every row must have the same number of values (a rectangular array)")
    out: list = []
    for v in value:
        out.extend(_flatten(v, shape[1:], where))
    return out


def _datatype(flat: list, dtype=None) -> str:
    if dtype is not None:
        kind = getattr(dtype, "kind", "")
        if kind == "b":
            return "BOOL"
        if kind in "iuf":
            return _NUMPY_V2.get(f"{kind}{dtype.itemsize}", "FP64")
        return "BYTES"
    if flat and all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP64"
    if all(isinstance(v, str) for v in flat):
        return "BYTES"
    raise ConfigError("the input mixes strings, numbers and booleans",
                      hint="an Open Inference Protocol tensor has one datatype; send one kind of value")


def v2_tensor(name: str, data: Any) -> dict:
    """One Open Inference Protocol input tensor from a nested list or numpy array."""
    dtype = getattr(data, "dtype", None)
    value = jsonable(data)
    shape = _shape(value)
    flat = _flatten(value, shape, f"input {name!r}")
    return {"name": name, "shape": shape, "datatype": _datatype(flat, dtype), "data": flat}


def v2_request(data: Any) -> dict:
    """A dict of name -> array gives one input per name; anything else is one input 'input-0'."""
    if isinstance(data, Mapping) and not hasattr(data, "to_numpy"):
        if not data:
            raise ConfigError("no inputs to send", hint="pass rows, an array, or {name: array}")
        return {"inputs": [v2_tensor(str(k), v) for k, v in data.items()]}
    return {"inputs": [v2_tensor("input-0", data)]}


def _reshape(flat: list, shape: list[int]) -> Any:
    if not shape:
        return flat[0] if flat else None
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def v2_outputs(response: dict) -> Any:
    """One output -> its data shaped as declared; several -> {name: data}."""
    outs = response.get("outputs")
    if not isinstance(outs, list) or not outs:
        raise PredictionError("the model server's v2 answer has no outputs", hint="check the server's version")
    shaped = {o.get("name"): _reshape(o.get("data") or [], list(o.get("shape") or [])) for o in outs}
    return next(iter(shaped.values())) if len(shaped) == 1 else shaped


# ----------------------------------------------------------------------------- the client

_HINTS = {
    400: "the body must be JSON",
    404: "check the model name (MODEL_NAME) the server was started with",
    422: 'check the payload: V1 wants {"instances": [...]} with rows the model accepts; '
         "v2 wants inputs with name, shape, datatype and data",
    500: "the model's predict raised; the server log (handle.logs()) has the traceback",
    503: "the model is not ready: if it failed to load, the server log (handle.logs()) has the traceback",
}


class ModelClient:
    """predict/ready/metadata against one model on fairing's model server (or any KServe V1 / Open
    Inference Protocol v2 server)."""

    def __init__(self, transport, model_name: str, *, protocol: str = "v1"):
        self.transport = transport
        self.model_name = model_name
        self.protocol = _check_protocol(protocol)

    @classmethod
    def for_url(cls, url: str, model_name: str, **kw) -> "ModelClient":
        timeout = kw.pop("timeout", 60.0)
        return cls(HttpTransport(url, timeout=timeout), model_name, **kw)

    @property
    def url(self) -> str:
        return self.transport.base_url

    def predict_url(self, protocol: str | None = None) -> str:
        protocol = _check_protocol(protocol or self.protocol)
        path = f"/v1/models/{self.model_name}:predict" if protocol == "v1" else f"/v2/models/{self.model_name}/infer"
        return self.transport.url(path)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, raw = self.transport.request(method, path, body)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = None
        if 200 <= status < 300 and isinstance(payload, dict):
            return payload
        message = payload.get("error") if isinstance(payload, dict) else None
        if message is None:  # not our server's JSON: a proxy error page, or something else on the port
            text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)
            message = text[:300] or "(empty body)"
            if status == 503 and "no endpoints available" in text:
                message = "no ready pod behind the Service yet"
        raise PredictionError(
            f"model {self.model_name!r} answered {status} to {method} {path}: {message}",
            hint=_HINTS.get(status, "see the server log (handle.logs())"),
            status=status, server_message=message)

    def predict(self, data: Any, *, protocol: str | None = None, raw: bool = False) -> Any:
        """V1: `data` is the list of instances; returns the predictions list. v2: `data` is an array
        (or {name: array}); returns the output data shaped as declared (or {name: data}).
        raw=True returns the whole JSON answer."""
        protocol = _check_protocol(protocol or self.protocol)
        if protocol == "v1":
            instances = jsonable(data)
            if not isinstance(instances, list):
                raise ConfigError(f"V1 instances must be a list (one item per row), got {type(data).__name__}",
                                  hint="wrap a single row in a list: predict([row])")
            out = self._call("POST", f"/v1/models/{self.model_name}:predict", {"instances": instances})
            return out if raw else out.get("predictions")
        out = self._call("POST", f"/v2/models/{self.model_name}/infer", v2_request(data))
        return out if raw else v2_outputs(out)

    def ready(self) -> bool:
        """True when the model answers ready; False while loading; PredictionError when it failed."""
        try:
            self._call("GET", f"/v2/models/{self.model_name}/ready")
            return True
        except PredictionError as exc:
            if exc.status == 503 and exc.server_message and "failed to load" in exc.server_message:
                raise
            if exc.status in (502, 503, 504):
                return False
            raise

    def metadata(self) -> dict:
        return self._call("GET", f"/v2/models/{self.model_name}")


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use protocol='v1' (KServe V1) or 'v2' (Open Inference Protocol)")
    return protocol


# ----------------------------------------------------------------------------- the one-call API

DEPLOYER_ALIASES = {"local": "fairing.deployers.local_serving:LocalServingDeployer",
                    "serving": "fairing.deployers.serving:ServingDeployer",
                    "inferenceservice": "fairing.deployers.kserve:InferenceServiceDeployer",
                    "kserve": "fairing.deployers.kserve:InferenceServiceDeployer"}


def load_deployer(name: str):
    import importlib

    if name not in DEPLOYER_ALIASES:
        raise ConfigError(f"unknown serving deployer {name!r}",
                          hint="choose one of: serving (Deployment+Service), inferenceservice (KServe), local")
    module, _, attr = DEPLOYER_ALIASES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


class PredictionEndpoint:
    """A model behind an HTTP endpoint in one call.

        ep = PredictionEndpoint(IrisModel, base_image="127.0.0.1:5000/fairing/python:3.11",
                                registry="127.0.0.1:5000", deployer="local",
                                requirements=["scikit-learn==1.5.2"], files=["model.joblib"])
        ep.create()                       # build, deploy, wait until ready, print the URL
        ep.predict([[5.1, 3.5, 1.4, 0.2]])
        ep.delete()

    `model` is a class (or instance) with predict(), or "model.py:ClassName". `deployer` is
    "serving" (Deployment + Service), "inferenceservice" (KServe) or "local" (a container through
    the Docker/Podman API). Extra keyword arguments go to the deployer (namespace, replicas,
    mutators, kubeconfig, ...). `image=` skips the build and deploys an image already built for
    this model (a BuiltImage)."""

    def __init__(self, model: Any = None, *, name: str | None = None, base_image: str | None = None,
                 registry: str | None = None, target: str | None = None, deployer: str = "serving",
                 builder: str | Any = "append", requirements=None, files=None, storage_uri: str | None = None,
                 protocol: str = "v1", timeout: float = 600.0, builder_options: Mapping | None = None,
                 image=None, out: Callable[[str], None] | None = print, settings: Mapping | None = None,
                 **deployer_options):
        from .preprocessors.serve import check_name, default_name

        # KServe's own runtimes (deployer="inferenceservice", model_format="sklearn") need no image.
        self.model_format = deployer_options.get("model_format")
        if model is None and image is None and not self.model_format:
            raise ConfigError("PredictionEndpoint needs a model", hint="pass the model class or 'model.py:ClassName'")
        if self.model_format:
            if deployer not in ("inferenceservice", "kserve"):
                raise ConfigError(f"model_format works with the inferenceservice deployer, not {deployer!r}",
                                  hint="pass deployer='inferenceservice', or give your own model class instead")
            deployer_options.setdefault("storage_uri", storage_uri)
            storage_uri = None
        self.model = model
        self.name = check_name(name or (default_name(model) if model is not None else "model"))
        self.base_image = base_image
        self.registry = registry
        self.target = target
        self.deployer_name = deployer
        self.builder = builder
        self.requirements = requirements
        self.files = files
        self.storage_uri = storage_uri
        self.protocol = _check_protocol(protocol)
        self.timeout = timeout
        self.builder_options = dict(builder_options or {})
        self.deployer_options = dict(deployer_options)
        self.image = image
        self.out = out or (lambda s: None)
        self.handle = None
        self.context = None  # the BuildContext, once built
        self.settings = settings  # effective settings, for where the run is tracked (mlflow, experiment)
        self.run = None  # the run record (fairing.runs), once created
        # Made now so a typo in an option fails before any build (constructing talks to nothing).
        self._deployer = load_deployer(deployer)(name=self.name, **self.deployer_options)

    # -- stages -------------------------------------------------------------------------------------
    def prepare(self):
        from .preprocessors.serve import ServePreprocessor

        return ServePreprocessor().prepare(self.model, name=self.name, files=self.files,
                                           requirements=self.requirements, storage_uri=self.storage_uri)

    def build(self):
        if self.image is not None or self.model_format:
            return self.image
        ctx = self.context = self.prepare()
        target = self.target
        if target is None:
            if not self.registry:
                raise ConfigError("no registry to push the serving image to",
                                  hint="pass registry='host:port' (e.g. 127.0.0.1:5000) or target='registry/repo:tag'")
            from .builders.base import default_image_name

            target = default_image_name(self.registry, self.name, ctx)
        builder = self.builder
        if isinstance(builder, str):
            from . import plugins

            if not self.base_image and builder == "append":
                raise ConfigError("the append builder needs a base image with Python",
                                  hint="pass base_image='registry/python:3.11' (an image with python on PATH)")
            opts = dict(self.builder_options)
            if self.base_image:
                opts.setdefault("base_image", self.base_image)
            builder = plugins.load("builder", builder)(**opts)
        self.image = builder.build(ctx, target)
        return self.image

    def deployer(self):
        return self._deployer

    def render(self) -> list[dict]:
        """The manifests `create()` would apply (for dry runs); builds nothing when image= is set."""
        image = self.image
        if image is None and not self.model_format:
            from .context import BuiltImage

            from .builders.base import default_image_name

            ctx = self.prepare()
            # The tag the build would push (content hash); the digest is only known after building.
            ref = self.target or default_image_name(self.registry or "REGISTRY", self.name, ctx)
            image = BuiltImage(ref=ref, digest="", context=ctx, pod_template=_template_for(ctx, ref))
        return self.deployer().render(image)

    # -- the verbs ----------------------------------------------------------------------------------
    def create(self, wait: bool = True, *, keep_on_failure: bool = False) -> "PredictionEndpoint":
        """Build, deploy and (with wait) block until the model answers ready, then print the URL.
        If it never gets ready, the end of the server log is printed and the endpoint is deleted
        (keep_on_failure=True leaves it for debugging)."""
        from .runs import hook

        self.run = run = hook.start_for_endpoint(self)
        try:
            image = self.build()
            if getattr(self, "context", None) is not None:
                run.packaged(self.context)
            if image is not None:
                run.built(image, base_image=self.base_image)
            hook.tag(self.deployer(), run, image)
            self.handle = self.deployer().deploy(image)
            run.deployed(self.handle, status="Deployed")
        except BaseException as e:
            run.fail(e)
            raise
        if wait:
            try:
                self.handle.wait(self.timeout)
            except BaseException as exc:
                if isinstance(exc, FairingError):
                    self._print_log_tail()
                # Don't leave a broken endpoint running behind an exception the caller may not catch.
                if not keep_on_failure:
                    try:
                        self.handle.delete()
                    except Exception:  # noqa: BLE001 - the original error is the one to report
                        pass
                run.fail(exc)
                raise
            run.finish("Ready")
        self.out(f"model {self.name!r} is being served at {self.url}")
        self.out(f"  V1: POST {self.client().predict_url('v1')}")
        self.out(f"  v2: POST {self.client().predict_url('v2')}")
        return self

    def _print_log_tail(self, lines: int = 20) -> None:
        try:
            # Access-log lines (the readiness polls) would push the traceback out of view.
            tail = [line for line in self.handle.logs() if line.strip() and "uvicorn.access" not in line][-lines:]
        except Exception:  # noqa: BLE001 - best effort: no logs is not a second error
            return
        if tail:
            self.out(f"last lines of the model server log ({self.name}):")
            for line in tail:
                self.out("  " + line)

    @property
    def url(self) -> str:
        return self._require_handle().url

    def client(self) -> ModelClient:
        return self._require_handle().client(protocol=self.protocol)

    def predict(self, data: Any, *, protocol: str | None = None, raw: bool = False) -> Any:
        return self.client().predict(data, protocol=protocol or self.protocol, raw=raw)

    def logs(self, follow: bool = False):
        return self._require_handle().logs(follow=follow)

    def status(self) -> str:
        return self._require_handle().status()

    def delete(self) -> None:
        if self.handle is not None:
            self.handle.delete()

    def _require_handle(self):
        if self.handle is None:
            raise ConfigError("the endpoint has not been created", hint="call create() first")
        return self.handle


def _template_for(ctx, image_ref: str) -> dict:
    from .context import pod_template

    return pod_template(image_ref, ctx)

"""`ModelClient`, the small HTTP client for fairing's model server (KServe V1 and Open Inference
v2), used by every serving handle (`handle.client()`, `handle.predict()`).

The client talks through a transport: plain HTTP for a local container (or any URL), or the
Kubernetes API server's service proxy for a cluster Service, so predict() works wherever
`kubectl` works, without a port-forward or an Ingress."""
from __future__ import annotations

import json
from typing import Any, Mapping

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


class PodProxyTransport(ServiceProxyTransport):
    """Requests to one pod through the API server: /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>
    (needs `get` on pods/proxy). How `fair status` reads every replica's /metrics, not one the
    Service picked."""

    def __init__(self, kube, namespace: str, pod: str, port: int | str, *, timeout: float = 60.0):
        super().__init__(kube, namespace, pod, port, timeout=timeout)
        self.base_path = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy"


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


def _datatype(flat: list, dtype=None) -> str:
    """numpy's dtype when there is one; else the codec's rule, refusing mixed kinds (one tensor
    has one datatype)."""
    from .image_runtime import model_server as codec

    if dtype is not None:
        kind = getattr(dtype, "kind", "")
        if kind == "b":
            return "BOOL"
        if kind in "iuf":
            return _NUMPY_V2.get(f"{kind}{dtype.itemsize}", "FP64")
        return "BYTES"
    datatype = codec.datatype_of(flat)
    if datatype == "BYTES" and not all(isinstance(v, str) for v in flat) or None in flat:
        raise ConfigError("the input mixes strings, numbers and booleans",
                          hint="an Open Inference Protocol tensor has one datatype; send one kind of value")
    return datatype


def _rectangular(value: Any, shape: list[int]) -> bool:
    """Does every row at every level have the length the first one has?"""
    if not shape:
        return not isinstance(value, list)
    return isinstance(value, list) and len(value) == shape[0] and all(_rectangular(v, shape[1:]) for v in value)


def v2_tensor(name: str, data: Any) -> dict:
    """One Open Inference Protocol input tensor from a nested list or numpy array."""
    from .image_runtime import model_server as codec

    dtype = getattr(data, "dtype", None)
    value = jsonable(data)
    shape = codec.shape_of(value)
    if not _rectangular(value, shape):
        raise ConfigError(f"input {name!r} is ragged: rows have different lengths",
                          hint="every row must have the same number of values (a rectangular array)")
    flat = codec.flatten(value)
    return {"name": name, "shape": shape, "datatype": _datatype(flat, dtype), "data": flat}


def v2_request(data: Any) -> dict:
    """A dict of name -> array gives one input per name; anything else is one input 'input-0'."""
    if isinstance(data, Mapping) and not hasattr(data, "to_numpy"):
        if not data:
            raise ConfigError("no inputs to send", hint="pass rows, an array, or {name: array}")
        return {"inputs": [v2_tensor(str(k), v) for k, v in data.items()]}
    return {"inputs": [v2_tensor("input-0", data)]}


def v2_outputs(response: dict) -> Any:
    """One output -> its data shaped as declared; several -> {name: data}."""
    outs = response.get("outputs")
    if not isinstance(outs, list) or not outs:
        raise PredictionError("the model server's v2 answer has no outputs", hint="check the server's version")
    from .image_runtime import model_server as codec

    shaped = {o.get("name"): codec.reshape(o.get("data") or [], list(o.get("shape") or [])) for o in outs}
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
        self.protocol = check_protocol(protocol)

    @classmethod
    def for_url(cls, url: str, model_name: str, **kw) -> "ModelClient":
        timeout = kw.pop("timeout", 60.0)
        return cls(HttpTransport(url, timeout=timeout), model_name, **kw)

    @property
    def url(self) -> str:
        return self.transport.base_url

    def predict_url(self, protocol: str | None = None) -> str:
        protocol = check_protocol(protocol or self.protocol)
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
        protocol = check_protocol(protocol or self.protocol)
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


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use protocol='v1' (KServe V1) or 'v2' (Open Inference Protocol)")
    return protocol



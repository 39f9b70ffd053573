"""fairing model server: runs inside the serving image (copied there as `fairing_model_server.py`).

Self-contained on purpose: the image has the user's model, starlette, uvicorn (and cloudpickle for
a pickled model), never fairing itself. Speaks two protocols over one model:

  KServe V1                         GET  /v1/models/<name>          POST /v1/models/<name>:predict
  Open Inference Protocol (v2)      GET  /v2/health/live|ready      GET  /v2/models/<name>[/ready]
                                    POST /v2/models/<name>/infer
v2 infer also speaks the binary tensor data extension both ways (what tritonclient sends by
default): `Inference-Header-Content-Length: N` says the first N bytes are the JSON and the rest is
raw little-endian tensor data. A model may declare `inputs` / `outputs` (lists of {"name",
"datatype", "shape"}); the v2 model metadata reports them.

Configuration comes from the environment (set by fairing's serve preprocessor):
  MODEL_NAME            name in the URLs                    PORT             listen port (8080)
  FAIRING_MODEL         "module:Class" importable from the working directory, or
  FAIRING_MODEL_PICKLE  path of a cloudpickled class (or instance)
  FAIRING_MODEL_DIR     directory given to `load(model_dir)` (default: the working directory)
  FAIRING_STORAGE_URI   http(s):// or file: URI fetched into FAIRING_MODEL_DIR before load()
  MODEL_INIT_MODE       "async" (set by KServe's modelcar injection): the model dir appears a moment
                        after start (a link into the modelcar sidecar); load() waits for it, up to
                        FAIRING_MODEL_DIR_TIMEOUT seconds (300)
  FAIRING_PYTHON        "3.11": the Python that pickled the model; a different one is a load error
  FAIRING_MAX_BATCH_SIZE, FAIRING_MAX_LATENCY_MS   adaptive batching (off unless the size is > 1)
  FAIRING_RUN_ID        the fairing run that deployed it   FAIRING_IMAGE    its image ref@digest
                        (both label every metric, so live behaviour traces back to the run)
  FAIRING_MODEL_VERSION the registered version in the image (iris:3), FAIRING_MODEL_DIGEST its digest
  FAIRING_MODEL_FOLLOW  "iris@champion": follow the alias (fair deploy --model iris@champion). With
                        FAIRING_OUTPUTS_STORE (+ FAIRING_OUTPUTS_AUTH, the run's Secret), the alias is
                        read every FAIRING_MODEL_FOLLOW_SECONDS (20); when it moves, the new version's
                        files are fetched (checked by digest) into a fresh dir, load() runs on a new
                        model object, and only then does it replace the old one. Requests in flight
                        finish on the old one; a version that fails to load is logged and the old
                        one keeps serving.

Adaptive batching (opt-in, like Triton's dynamic batcher): with FAIRING_MAX_BATCH_SIZE=N (> 1), rows
of concurrent requests (V1 instances, or a v2 request's one input) are queued and given to ONE
predict() call, up to N rows, waiting at most FAIRING_MAX_LATENCY_MS (default 5) after the first
queued request for others to join; each request gets its own rows of the output back, in order.
preprocess/postprocess still run per request. A predict() whose output is not one row per input
row (a dict, a scalar, another length) is called again for each request on its own, so batching
never changes an answer. Requests larger than N rows, and v2 requests with several inputs, are
not batched.

GET /metrics is Prometheus text (prometheus_client, when the image has it): requests and errors by
protocol and status code, latency and batch-size histograms, labelled with the model name, image
digest and run id. Without prometheus_client the server works and /metrics answers 404 saying so.

Where a blocking hook runs: predict/preprocess/postprocess that are plain functions start on a
worker thread, so a slow model never stalls the event loop (health checks, other requests). A hook
whose last INLINE_AFTER calls each took under INLINE_SECONDS (1 ms) runs on the event loop itself
from then on, as KServe's ModelServer runs every blocking predict: for a fast model the thread
handoff costs more than the predict, and under the GIL it waits up to the interpreter's switch
interval (5 ms) whenever the loop is busy, which became the p99. An inline call that takes longer
sends the hook back to the worker threads until it is fast again for twice as many calls; so a
model that turns slow stalls the loop for one call at most.

The model is loaded once, in a background thread, so liveness answers while a big model loads.
Until load() returns the server is live but not ready; if load() raises it stays not ready and
every readiness/predict call answers 503 with the load error (and the log says so)."""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import os
import shutil
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

# starlette is imported where the app is made: fairing's client imports this module for the
# tensor codec below (one codec for both sides) and has no starlette.

log = logging.getLogger("fairing.model_server")

SERVER_NAME = "fairing-model-server"
SERVER_VERSION = "1"
DEFAULT_MODEL_DIR = "/mnt/models"  # KServe's convention for fetched model files

# Open Inference Protocol tensor types and the JSON values each accepts.
_INT = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOAT = ("FP16", "FP32", "FP64")
DATATYPES = ("BOOL", "BYTES", *_INT, *_FLOAT)
# The binary extension's element encodings (little-endian); BYTES is length-prefixed, see below.
_STRUCT = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
           "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d"}
BINARY_HEADER = "Inference-Header-Content-Length"


class PayloadError(Exception):
    """The request is wrong (400 for unparsable, 422 for well-formed but invalid)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- model loading


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def fetch_storage(uri: str, model_dir: Path) -> Path:
    """Copy what `uri` points at into `model_dir` (made if missing) and return `model_dir`.

    file: a directory is used in place (nothing copied), a file is copied in; http(s): the body is
    saved under the URL's basename. .tar.gz/.tgz/.tar/.zip archives are unpacked into model_dir."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        src = Path(urllib.parse.unquote(parsed.path if parsed.scheme else uri))
        if not src.exists():
            raise FileNotFoundError(f"storage URI {uri} does not exist inside the container")
        if src.is_dir():
            return src
        model_dir.mkdir(parents=True, exist_ok=True)
        dst = model_dir / src.name
        shutil.copyfile(src, dst)
    elif parsed.scheme in ("http", "https"):
        name = Path(urllib.parse.unquote(parsed.path)).name or "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        dst = model_dir / name
        log.info("fetching %s -> %s", uri, dst)
        with urllib.request.urlopen(uri, timeout=300) as resp, open(dst, "wb") as out:
            shutil.copyfileobj(resp, out)
    else:
        raise ValueError(f"unsupported storage URI scheme {parsed.scheme!r} in {uri} (use http, https or file)")
    _unpack(dst, model_dir)
    return model_dir


def _unpack(path: Path, into: Path) -> None:
    import tarfile
    import zipfile

    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            tar.extractall(into, filter="data")  # "data" refuses absolute paths and ../ escapes
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            zf.extractall(into)  # zipfile already strips absolute paths and ..
    else:
        return
    path.unlink()


def resolve_model(env: dict[str, str]) -> Any:
    """The user's class (or instance) named by the environment."""
    # The user's modules (files shipped next to the model) live in the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    pickled = env.get("FAIRING_MODEL_PICKLE")
    if pickled:
        want = env.get("FAIRING_PYTHON")
        have = f"{sys.version_info.major}.{sys.version_info.minor}"
        if want and want != have:
            raise RuntimeError(
                f"the model was pickled with Python {want} but this image runs Python {have}; "
                f"use a base image with Python {want}"
            )
        import cloudpickle  # noqa: F401  (the pickle references cloudpickle's reconstructors)

        with open(pickled, "rb") as f:
            return __import__("pickle").load(f)
    ref = env.get("FAIRING_MODEL")
    if not ref or ":" not in ref:
        raise RuntimeError("set FAIRING_MODEL=module:Class or FAIRING_MODEL_PICKLE=path to say which model to serve")
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any) -> Any:
    return obj() if inspect.isclass(obj) else obj


def _call_load(model: Any, model_dir: Path) -> None:
    load = getattr(model, "load", None)
    if load is None:
        return
    try:
        params = [
            p for p in inspect.signature(load).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        params = []
    load(str(model_dir)) if params else load()


def wait_for_dir(model_dir: Path, timeout: float) -> None:
    """A KServe modelcar: the sidecar links its /models into this pod's /mnt/models once it runs,
    which may be after this server started. Wait for a non-empty directory (not ready till then)."""
    import time

    deadline = time.monotonic() + timeout
    while not (model_dir.is_dir() and any(model_dir.iterdir())):
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"model dir {model_dir} still missing or empty after {timeout:.0f} s "
                                    "(is the modelcar sidecar running?)")
        time.sleep(0.5)
    log.info("model dir %s is there", model_dir)


class ModelState:
    """The one model this server serves, and where its loading stands. `model` is replaced whole
    (one attribute write) when a followed alias moves: a request reads it once and keeps it."""

    def __init__(self, name: str, factory=None, env: dict[str, str] | None = None, *,
                 max_batch_size: int | None = None, max_latency_ms: float | None = None):
        self.name = name
        self.env = dict(os.environ if env is None else env)
        size = max_batch_size if max_batch_size is not None else int(self.env.get("FAIRING_MAX_BATCH_SIZE") or 0)
        wait = max_latency_ms if max_latency_ms is not None else float(self.env.get("FAIRING_MAX_LATENCY_MS") or 5)
        if size < 0 or wait < 0:
            raise ValueError(f"max_batch_size ({size}) and max_latency_ms ({wait}) must not be negative")
        self.max_batch_size = size if size > 1 else 0  # 0: no batching
        self.max_latency_ms = wait
        self._factory = factory  # for in-process use: a class or instance instead of the env
        self.model: Any = None
        self.ready = False
        self.error: str | None = None
        self.loaded = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        # The registered version served now (iris:3), its document digest and run; a follower moves them.
        self.version = self.env.get("FAIRING_MODEL_VERSION") or ""
        self.digest = self.env.get("FAIRING_MODEL_DIGEST") or ""
        self.model_run = self.env.get("FAIRING_MODEL_RUN") or ""
        self.on_switch: list = []  # callbacks (version, run) after a switch: the metrics' labels

    def start(self) -> None:
        """Load once in a background thread; calling again is a no-op."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        try:
            log.info("loading model %r", self.name)
            obj = self._factory if self._factory is not None else resolve_model(self.env)
            model = _instantiate(obj)
            if not callable(getattr(model, "predict", None)):
                raise TypeError(f"{type(model).__name__} has no predict() method")
            model_dir = Path(self.env.get("FAIRING_MODEL_DIR") or os.getcwd())
            uri = self.env.get("FAIRING_STORAGE_URI")
            if uri:
                model_dir = fetch_storage(uri, Path(self.env.get("FAIRING_MODEL_DIR") or DEFAULT_MODEL_DIR))
            if self.env.get("MODEL_INIT_MODE") == "async":
                wait_for_dir(model_dir, float(self.env.get("FAIRING_MODEL_DIR_TIMEOUT") or 300))
            _call_load(model, model_dir)
            self.model = model
            self.ready = True
            log.info("model %r is ready", self.name)
        except BaseException as exc:  # noqa: BLE001 - any failure must become "not ready + message"
            self.error = f"model {self.name!r} failed to load: {_error_text(exc)}"
            log.error("%s\n%s", self.error, traceback.format_exc().rstrip())
        finally:
            self.loaded.set()
        follow = self.env.get("FAIRING_MODEL_FOLLOW")
        if follow and self.ready:
            Follower(self, follow).start()

    def switch(self, model: Any, version: str, digest: str, run: str) -> None:
        """Serve `model` (loaded already) from now on."""
        with self._lock:
            self.model, self.version, self.digest, self.model_run = model, version, digest, run
        for cb in self.on_switch:
            cb(version, run)

    def unavailable(self) -> str | None:
        """Why predictions can't be served now, or None when ready."""
        if self.ready:
            return None
        return self.error or f"model {self.name!r} is still loading"


def _sibling(name: str):
    """A module shipped beside this file (outputs.py, modeldocs.py in the image's .fairing/ dir), or
    fairing.image_runtime's when imported from the package. This file's dir goes first for the
    import: the working dir (the user's modules, put first by resolve_model) may hold an outputs.py."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    here = str(Path(__file__).resolve().parent)
    sys.path.insert(0, here)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(here)


class Follower:
    """Follows NAME@ALIAS in the model registry: polls the alias, and when it names another version,
    fetches that version's files into a fresh dir, loads a new model object from them and switches
    to it. A failed load keeps the old model serving and is not retried until the alias moves."""

    def __init__(self, state: ModelState, ref: str):
        self.state, self.ref = state, ref
        self.name, _, self.alias = ref.partition("@")
        self.every = float(state.env.get("FAIRING_MODEL_FOLLOW_SECONDS") or 20)
        self.root = Path(state.env.get("FAIRING_MODEL_VERSIONS_DIR") or "/tmp/fairing-model-versions")
        self.failed: str | None = None  # the digest that would not load
        self.seq = 0  # K of the alias move last read: a poll asks only whether move K+1 exists

    def start(self) -> None:
        spec = self.state.env.get("FAIRING_OUTPUTS_STORE")
        if not spec or not self.alias:
            log.warning("not following %s: the server was not given the model registry's store", self.ref)
            return
        threading.Thread(target=self.loop, name="model-follow", daemon=True).start()
        log.info("following %s (every %.0f s); serving %s", self.ref, self.every, self.state.version or "?")

    def backend(self):
        return _sibling("outputs").backend_from_env(self.state.env)

    def loop(self) -> None:
        import time

        while True:
            time.sleep(self.every)
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the store may be down: keep serving, try later
                log.warning("following %s: %s; still serving %s", self.ref, _error_text(exc), self.state.version)

    def check(self) -> bool:
        """One poll; True when the server switched to another version."""
        docs = _sibling("modeldocs")
        backend = self.backend()
        if self.seq and backend.get_doc(f"model.{self.name}.{self.alias}.{self.seq + 1}") is None:
            return False  # one small read per poll, not a listing of the store
        move, doc = docs.resolve_alias(backend, self.name, self.alias)
        self.seq = int(move.get("seq") or 0) if move else 0
        if move is None or move["digest"] in (self.state.digest, self.failed):
            return False
        version = f"{self.name}:{doc['version']}"
        run = (doc.get("run") or {}).get("id") or ""
        log.info("%s moved to %s (serving %s): loading it", self.ref, version, self.state.version or "?")
        dest = self.root / move["digest"].split(":", 1)[1][:24]
        try:
            if not dest.is_dir():
                tmp = Path(f"{dest}.part")
                shutil.rmtree(tmp, ignore_errors=True)
                docs.fetch_files(backend, doc, str(tmp))
                tmp.rename(dest)
            obj = self.state._factory if self.state._factory is not None else resolve_model(self.state.env)
            model = _instantiate(obj)
            _call_load(model, dest)
        except Exception as exc:  # noqa: BLE001 - a version that won't load must not stop the one serving
            self.failed = move["digest"]
            log.error("keeping %s: %s failed to load: %s\n%s", self.state.version or "the current model", version,
                      _error_text(exc), traceback.format_exc().rstrip())
            return False
        old = self.state.version
        self.state.switch(model, version, move["digest"], run)
        self.failed = None
        log.info("now serving %s (was %s)", version, old or "?")
        return True


# ----------------------------------------------------------------------------- JSON & tensors
# The Open Inference Protocol codec, for both sides: the server decodes inputs and encodes outputs
# here, and fairing's ModelClient (fairing/model_client.py) imports these same functions to encode
# inputs and shape outputs. Stdlib only, so this one file is all the image needs.


def to_jsonable(obj: Any) -> Any:
    """Model outputs -> JSON values; numpy arrays/scalars without importing numpy here."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"the model returned a {type(obj).__name__}, which is not JSON serializable")


def shape_of(value: Any) -> list[int]:
    """The shape of a nested list, read along the first element of each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def flatten(value: Any) -> list:
    """Row-major values of a nested list (any depth)."""
    if not isinstance(value, list):
        return [value]
    out: list = []
    for v in value:
        out.extend(flatten(v))
    return out


def reshape(flat: list, shape: list[int]) -> Any:
    """Flat row-major values -> nested lists of `shape` (a scalar for shape [])."""
    if not shape:
        return flat[0] if flat else None
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def datatype_of(flat: list) -> str:
    """The v2 datatype of plain JSON values: BOOL, INT64, FP64 (None counts as a float), else BYTES."""
    if all(isinstance(v, bool) for v in flat) and flat:
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in flat):
        return "FP64"
    return "BYTES"


def _check_value(v: Any, datatype: str) -> bool:
    if datatype == "BOOL":
        return isinstance(v, bool)
    if datatype == "BYTES":
        return isinstance(v, str)
    if isinstance(v, bool):
        return False
    if datatype in _INT:
        return isinstance(v, int) and (v >= 0 or not datatype.startswith("U"))
    return isinstance(v, (int, float))


def decode_v2_input(tensor: Any, index: int) -> tuple[str, Any]:
    """One `inputs[i]` object -> (name, nested list shaped as declared). Raises PayloadError."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise PayloadError(f"{where} must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise PayloadError(f"{where} is missing {', '.join(missing)}")
    name, shape, datatype, data = tensor["name"], tensor["shape"], tensor["datatype"], tensor["data"]
    if not isinstance(name, str) or not name:
        raise PayloadError(f"{where}.name must be a non-empty string")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise PayloadError(f"{where}.shape must be a list of non-negative integers, got {json.dumps(shape)}")
    if datatype not in DATATYPES:
        raise PayloadError(f"{where}.datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    flat = flatten(data)  # the protocol allows flat (row-major) or nested data
    expected = math.prod(shape)
    if len(flat) != expected:
        raise PayloadError(f"{where} ({name}) has {len(flat)} values but shape {shape} needs {expected}")
    bad = next((v for v in flat if not _check_value(v, datatype)), _MISSING)
    if bad is not _MISSING:
        raise PayloadError(f"{where} ({name}) declares {datatype} but holds {json.dumps(bad)}")
    return name, reshape(flat, shape)


_MISSING = object()


def encode_v2_outputs(result: Any, requested: list[str] | None) -> list[dict]:
    """Model output -> v2 `outputs`. A dict gives one tensor per key; anything else one tensor."""
    result = to_jsonable(result)
    items = list(result.items()) if isinstance(result, dict) else [("output-0", result)]
    if requested:
        known = dict(items)
        unknown = [n for n in requested if n not in known]
        if unknown:
            raise PayloadError(f"requested outputs {unknown} are not produced; the model gives {sorted(known)}")
        items = [(n, known[n]) for n in requested]
    outputs = []
    for name, value in items:
        flat = flatten(value)
        outputs.append({"name": name, "shape": shape_of(value), "datatype": datatype_of(flat), "data": flat})
    return outputs


def unpack_binary(datatype: Any, raw: bytes, where: str) -> list:
    """Raw tensor bytes (binary extension) -> flat list of JSON-like values."""
    if datatype == "BYTES":  # each element: uint32 little-endian length, then the bytes
        out, i = [], 0
        while i < len(raw):
            n = struct.unpack_from("<I", raw, i)[0] if i + 4 <= len(raw) else None
            if n is None or i + 4 + n > len(raw):
                raise PayloadError(f"{where}: a BYTES element runs past the end of its binary data", 400)
            try:
                out.append(raw[i + 4:i + 4 + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise PayloadError(f"{where}: BYTES elements must be UTF-8 text") from None
            i += 4 + n
        return out
    fmt = _STRUCT.get(datatype)
    if fmt is None:
        raise PayloadError(f"{where}.datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise PayloadError(f"{where}: {len(raw)} bytes is not a whole number of {datatype} values", 400)
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


def pack_binary(datatype: str, flat: list) -> bytes:
    """Flat values -> raw tensor bytes (the inverse of unpack_binary)."""
    if datatype == "BYTES":
        blobs = [v.encode("utf-8") if isinstance(v, str) else json.dumps(v).encode() for v in flat]
        return b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    if datatype in _FLOAT:  # to_jsonable turned NaN into None; binary can carry NaN again
        flat = [math.nan if v is None else v for v in flat]
    return struct.pack(f"<{len(flat)}{_STRUCT[datatype]}", *flat)


def split_binary_body(raw: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(JSON document, trailing binary tensor data) of a request body."""
    n = len(raw)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise PayloadError(f"{BINARY_HEADER} must be an integer, got {header_length!r}", 400) from None
        if not 0 < n <= len(raw):
            raise PayloadError(f"{BINARY_HEADER} is {n} but the body has {len(raw)} bytes", 400)
    if not raw:
        raise PayloadError("the request body is empty; send JSON", 400)
    try:
        return json.loads(raw[:n]), raw[n:]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the request body is not valid JSON: {exc}", 400) from None


def attach_binary_inputs(inputs: list, binary: bytes) -> None:
    """Give each input whose data travels in binary (parameters.binary_data_size) its values."""
    offset = 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise PayloadError(f"inputs[{i}].parameters.binary_data_size {size!r} does not fit the "
                               f"{len(binary) - offset} binary bytes left", 400)
        if "data" in tensor:
            raise PayloadError(f'inputs[{i}] has both binary data and a "data" field')
        tensor["data"] = unpack_binary(tensor.get("datatype"), binary[offset:offset + size], f"inputs[{i}]")
        offset += size
    if offset != len(binary):
        raise PayloadError(f"{len(binary) - offset} bytes of binary data belong to no input", 400)


def binary_outputs(body: dict, outputs: list[dict]) -> bytes:
    """Move the data of the outputs the request asks for in binary (all with
    parameters.binary_data_output, or outputs[].parameters.binary_data) out of `outputs`; their bytes."""
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    every = params.get("binary_data_output") is True
    named = {o["name"] for o in body.get("outputs") or []
             if isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data")}
    chunks = []
    for o in outputs:
        if every or o["name"] in named:
            chunks.append(pack_binary(o["datatype"], o.pop("data")))
            o["parameters"] = {"binary_data_size": len(chunks[-1])}
    return b"".join(chunks)


def declared_tensors(model: Any, which: str) -> list[dict]:
    """A model's `inputs`/`outputs` declaration for v2 metadata: [{"name","datatype","shape"}]."""
    decl = getattr(model, which, None)
    if not isinstance(decl, (list, tuple)):
        return []
    return [{"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t.get("shape", [])]}
            for t in decl if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("datatype") in DATATYPES]


# ----------------------------------------------------------------------------- telemetry


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Telemetry:
    """Prometheus metrics of one server, in its own registry (several apps may share a process).
    A no-op when prometheus_client is not installed."""

    def __init__(self, model: str, env: dict[str, str]):
        image = env.get("FAIRING_IMAGE") or ""
        # model_version / model_run: the registered version (iris:3, or run:ID) whose files were
        # placed in the model dir, and the run that made them (fair deploy --model).
        self.constant = {"model": model, "image_digest": image.rpartition("@")[2] if "@" in image else image,
                         "run_id": env.get("FAIRING_RUN_ID") or "",
                         "model_version": env.get("FAIRING_MODEL_VERSION") or "",
                         "model_run": env.get("FAIRING_MODEL_RUN") or ""}
        try:
            import prometheus_client as prom
        except ImportError:
            self.prom = None
            return
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        names = list(self.constant)
        kw = {"registry": self.registry}
        self.requests = prom.Counter("fairing_model_requests", "prediction requests by protocol and status code",
                                     [*names, "protocol", "code"], **kw)
        self.errors = prom.Counter("fairing_model_request_errors", "prediction requests answered with status >= 400",
                                   [*names, "protocol", "code"], **kw)
        self.latency = prom.Histogram("fairing_model_request_duration_seconds", "prediction latency",
                                      [*names, "protocol"], buckets=LATENCY_BUCKETS, **kw)
        self.batch = prom.Histogram("fairing_model_batch_size", "instances per prediction request",
                                    [*names, "protocol"], buckets=BATCH_BUCKETS, **kw)
        self.info = prom.Gauge("fairing_model_info", "the served model, its image and run", names, **kw)
        self.info.labels(**self.constant).set(1)

    def switch(self, version: str, run: str) -> None:
        """The model version changed (a followed alias moved): new requests count under it, and
        fairing_model_info names it alone."""
        old = self.constant
        self.constant = {**old, "model_version": version, "model_run": run}
        if self.prom is not None:
            try:
                self.info.remove(*old.values())
            except KeyError:
                pass
            self.info.labels(**self.constant).set(1)

    def observe(self, protocol: str, code: int, seconds: float, batch: int | None) -> None:
        if self.prom is None:
            return
        c = self.constant
        self.requests.labels(**c, protocol=protocol, code=str(code)).inc()
        if code >= 400:
            self.errors.labels(**c, protocol=protocol, code=str(code)).inc()
        self.latency.labels(**c, protocol=protocol).observe(seconds)
        if batch is not None:
            self.batch.labels(**c, protocol=protocol).observe(batch)

    def exposition(self) -> tuple[bytes, str] | None:
        if self.prom is None:
            return None
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


def _batch_of(request: Request) -> int | None:
    return getattr(request.state, "batch_size", None)


# ----------------------------------------------------------------------------- HTTP


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


INLINE_SECONDS = 0.001  # a blocking hook this fast runs on the event loop (see the module docstring)
INLINE_AFTER = 16  # ... once this many calls in a row were that fast


class _Pace:
    """How fast one blocking hook has been lately: `fast` counts its calls under INLINE_SECONDS in
    a row (negative after a slow call, so it has to earn the loop back twice over)."""

    __slots__ = ("fast",)

    def __init__(self) -> None:
        self.fast = 0

    @property
    def inline(self) -> bool:
        return self.fast >= INLINE_AFTER

    def note(self, seconds: float) -> None:
        # Worker threads call this side by side: a lost update only delays a switch by a call.
        if seconds < INLINE_SECONDS:
            self.fast = min(self.fast + 1, INLINE_AFTER)
        else:
            self.fast = -INLINE_AFTER


# Per hook function (a bound method's function: a new model object of the same class starts from
# what the old one showed, and its first slow call sends it back to the threads).
_paces: dict[Any, _Pace] = {}


def _pace(fn) -> _Pace:
    key = getattr(fn, "__func__", fn)
    pace = _paces.get(key)
    if pace is None:
        pace = _paces.setdefault(key, _Pace())
    return pace


async def _run(fn, *args):
    """Run a model hook: coroutine functions are awaited; blocking ones go to a worker thread, or
    run here on the event loop once they have shown themselves fast (see the module docstring)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    pace = _pace(fn)

    def timed():
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            pace.note(time.perf_counter() - t0)

    if pace.inline:
        out = timed()
    else:
        from starlette.concurrency import run_in_threadpool

        out = await run_in_threadpool(timed)
    return await out if inspect.isawaitable(out) else out


class Batcher:
    """Adaptive batching (see the module docstring): `await submit(rows)` -> this request's rows of
    one predict() call shared with the requests queued within `max_latency_ms` of the first, up to
    `max_batch_size` rows. One batch runs at a time; the next one fills while it runs."""

    def __init__(self, predict, max_batch_size: int, max_latency_ms: float):
        self.predict, self.max_rows, self.delay = predict, max_batch_size, max_latency_ms / 1000.0
        self._queue: list = []  # (rows, future), arrival order
        self._wake = None  # asyncio.Event, made in the serving loop
        self._task = None
        self.batches: int = 0  # predict() calls made, for tests and /metrics readers

    async def submit(self, rows: list) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        fut = loop.create_future()
        self._queue.append((rows, fut, loop.time()))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve())
        return await fut

    async def _serve(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = self._queue[0][2] + self.delay  # the oldest waiting request's budget
            while sum(len(q[0]) for q in self._queue) < self.max_rows and (left := deadline - loop.time()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0][0]) <= self.max_rows):
                rows, fut, _ = self._queue.pop(0)
                batch.append((rows, fut))
                n += len(rows)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list) -> None:
        rows = [r for part, _ in batch for r in part]
        self.batches += 1
        try:
            out = await _run(self.predict, rows)
            if not _splittable(out, len(rows)):
                # Not one output row per input row: the model's answer can't be shared out, so
                # each request gets predict() on its own rows, as without batching.
                for part, fut in batch:
                    if not fut.done():
                        fut.set_result(await _run(self.predict, part))
                return
            i = 0
            for part, fut in batch:
                if not fut.done():
                    fut.set_result(out[i:i + len(part)])
                i += len(part)
        except BaseException as exc:  # noqa: BLE001 - every waiting request learns it
            if len(batch) > 1 and isinstance(exc, (ValueError, TypeError, KeyError, IndexError)):
                # One bad request must not fail the others: each is tried alone.
                for part, fut in batch:
                    try:
                        res = await _run(self.predict, part)
                    except BaseException as one:  # noqa: BLE001
                        if not fut.done():
                            fut.set_exception(one)
                    else:
                        if not fut.done():
                            fut.set_result(res)
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)


def _splittable(out: Any, n: int) -> bool:
    if isinstance(out, (dict, str, bytes)) or not hasattr(out, "__getitem__"):
        return False
    try:
        return len(out) == n
    except TypeError:
        return False


async def _predict(model: Any, payload: Any, batcher: Batcher | None = None) -> Any:
    pre = getattr(model, "preprocess", None)
    post = getattr(model, "postprocess", None)
    try:
        if callable(pre):
            payload = await _run(pre, payload)
        if batcher is not None and isinstance(payload, list) and 0 < len(payload) <= batcher.max_rows:
            out = await batcher.submit(payload)
        else:
            out = await _run(model.predict, payload)
        if callable(post):
            out = await _run(post, out)
        return out
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # What a model raises for input it can't use (wrong feature count, bad type): the caller's fault.
        raise PayloadError(f"the model rejected the input: {_error_text(exc)}") from exc


def create_app(state: ModelState):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    name = state.name
    telemetry = Telemetry(name, state.env)
    batchers: list[Batcher] = []  # made once the model is loaded

    def batcher() -> Batcher | None:
        if not state.max_batch_size or state.model is None:
            return None
        if not batchers:
            # The model served now: a followed alias may switch it (state.switch) after the batcher exists.
            batchers.append(Batcher(lambda rows: state.model.predict(rows), state.max_batch_size,
                                    state.max_latency_ms))
        return batchers[0]

    state.batcher = batcher  # tests and the bench read batches made
    state.on_switch.append(telemetry.switch)

    def instrumented(protocol: str, handler):
        import time

        async def wrapped(request: Request):
            t0 = time.perf_counter()
            response = await handler(request)
            telemetry.observe(protocol, response.status_code, time.perf_counter() - t0, _batch_of(request))
            return response

        return wrapped

    async def metrics(request: Request):
        from starlette.responses import Response

        out = telemetry.exposition()
        if out is None:
            return _error(404, "metrics need prometheus_client in the image (fairing's serve preprocessor adds it)")
        return Response(out[0], media_type=out[1])

    def unknown(requested: str) -> JSONResponse:
        return _error(404, f"model {requested!r} not found; this server serves {name!r}")

    def refuse(request: Request, *, loaded: bool) -> JSONResponse | None:
        """The routes' common prologue: the model in the URL must be ours (404), and with
        `loaded`, load() must have finished (503 with why not)."""
        requested = request.path_params["name"]
        if requested != name:
            return unknown(requested)
        why = state.unavailable() if loaded else None
        return _error(503, why) if why else None

    async def answer(request: Request, what: str, handle) -> Response:
        """Parse the body, run `handle(request, body, binary)` (binary: the tensor bytes after the JSON);
        a dict answer is sent as JSON; a bad payload is its 4xx, a model bug a 500."""
        try:
            raw = await request.body()
            out = await handle(request, *split_binary_body(raw, request.headers.get(BINARY_HEADER)))
            return out if isinstance(out, Response) else JSONResponse(out)
        except PayloadError as exc:
            return _error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - a model bug: say so, keep serving
            log.exception("%s failed", what)
            return _error(500, f"predict failed: {_error_text(exc)}")

    async def live(request: Request):
        return JSONResponse({"live": True})

    async def ready(request: Request):
        why = state.unavailable()
        if why:
            return JSONResponse({"ready": False, "error": why}, status_code=503)
        return JSONResponse({"ready": True})

    async def v1_models(request: Request):
        return JSONResponse({"models": [name]})

    async def v1_model(request: Request):
        requested = request.path_params["name"]
        if requested.endswith(":predict"):
            return _error(405, f"use POST for {request.url.path}")
        refused = refuse(request, loaded=False)
        if refused:
            return refused
        body = {"name": name, "ready": state.ready}
        if state.version:
            body["version"] = state.version
        if state.error:
            body["error"] = state.error
        return JSONResponse(body)

    async def v1_infer(request: Request, body: Any, binary: bytes) -> dict:
        if binary:
            raise PayloadError(f"binary tensor data ({BINARY_HEADER}) is a v2 extension; use /v2/models/{name}/infer")
        if not isinstance(body, dict) or not ({"instances", "inputs"} & body.keys()):
            raise PayloadError('expected a JSON object with "instances": [...]')
        instances = body["instances"] if "instances" in body else body["inputs"]
        if not isinstance(instances, list):
            raise PayloadError(f'"instances" must be a list, got {type(instances).__name__}')
        request.state.batch_size = len(instances)  # the batch histogram of /metrics
        return {"predictions": to_jsonable(await _predict(state.model, instances, batcher()))}

    async def v1_predict(request: Request):
        return refuse(request, loaded=True) or await answer(request, "predict", v1_infer)

    async def v2_server(request: Request):
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})

    async def v2_model(request: Request):
        return refuse(request, loaded=False) or JSONResponse(
            {"name": name, "versions": [state.version] if state.version else [], "platform": "fairing",  # state.model: None until load() returns
             "inputs": declared_tensors(state.model, "inputs"), "outputs": declared_tensors(state.model, "outputs")})

    async def v2_model_ready(request: Request):
        refused = refuse(request, loaded=False)
        if refused:
            return refused
        why = state.unavailable()
        if why:
            return JSONResponse({"name": name, "ready": False, "error": why}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    async def v2_infer_body(request: Request, body: Any, binary: bytes) -> dict | Response:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
            raise PayloadError('expected a JSON object with a non-empty "inputs" list')
        attach_binary_inputs(body["inputs"], binary)
        decoded = [decode_v2_input(t, i) for i, t in enumerate(body["inputs"])]
        names = [n for n, _ in decoded]
        if len(set(names)) != len(names):
            raise PayloadError(f"input names must be unique, got {names}")
        # One input -> the model sees its rows, exactly as V1 instances; several -> a dict by name.
        payload = decoded[0][1] if len(decoded) == 1 else dict(decoded)
        first = decoded[0][1]
        request.state.batch_size = len(first) if isinstance(first, list) else 1  # /metrics batch histogram
        requested_outputs = body.get("outputs")
        wanted = None
        if requested_outputs is not None:
            if not isinstance(requested_outputs, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested_outputs
            ):
                raise PayloadError('"outputs" must be a list of objects with a "name"')
            wanted = [o["name"] for o in requested_outputs]
        out = await _predict(state.model, payload, batcher() if len(decoded) == 1 else None)
        response = {"model_name": name, "outputs": encode_v2_outputs(out, wanted)}
        if "id" in body:
            response["id"] = body["id"]
        data = binary_outputs(body, response["outputs"])
        if not data and all("data" in o for o in response["outputs"]):
            return response
        header = json.dumps(response, separators=(",", ":")).encode()
        return Response(header + data, media_type="application/octet-stream", headers={BINARY_HEADER: str(len(header))})

    async def v2_infer(request: Request):
        return refuse(request, loaded=True) or await answer(request, "infer", v2_infer_body)

    async def not_found(request: Request, exc: Exception):
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", None) or "not found"
        return _error(status, f"{detail}: {request.method} {request.url.path}")

    routes = [
        Route("/", live),
        Route("/v1/models", v1_models),
        Route("/v1/models/{name}:predict", instrumented("v1", v1_predict), methods=["POST"]),
        Route("/v1/models/{name}", v1_model),
        Route("/v2", v2_server),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}/ready", v2_model_ready),
        Route("/v2/models/{name}/infer", instrumented("v2", v2_infer), methods=["POST"]),
        Route("/metrics", metrics),
        Route("/v2/models/{name}", v2_model),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        state.start()
        yield

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("FAIRING_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    import uvicorn

    name = os.environ.get("MODEL_NAME", "model")
    port = int(os.environ.get("PORT", "8080"))
    state = ModelState(name)
    log.info("serving model %r on port %d (V1 /v1/models/%s:predict, v2 /v2/models/%s/infer)", name, port, name, name)
    uvicorn.run(create_app(state), host=os.environ.get("HOST", "0.0.0.0"), port=port, log_config=None)


if __name__ == "__main__":
    main()

"""`serve` preprocessor: a model class -> a BuildContext that runs fairing's model server on it.

The model is either a class/instance (cloudpickled by value, so a class defined in a notebook or in
the user's own module travels without that module) or a reference "model.py:MyModel" (the file is
shipped and imported; nothing of it runs on this machine). Model files (joblib, weights) are added
with `files=`, or fetched when the server starts with `storage_uri=` (http(s):// or file:).

The server (image_runtime/model_server.py) lands at .fairing/model_server.py; it needs starlette and
uvicorn, pinned below to versions that ship pure-Python wheels, cloudpickle for a pickled model, and
prometheus_client for its /metrics.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import requirements as reqs_mod
from ..context import BuildContext, ServeSpec
from ..errors import ConfigError
from .base import RUNTIME_DIR, Preprocessor, host_python
from .files import collect

# Pure-Python wheels (py3-none-any), so the host-built dependency layer works for any image arch.
# prometheus_client: the server's /metrics (pure-Python wheel; the server works without it too).
SERVER_REQUIREMENTS = ("starlette==1.10.0", "uvicorn==0.54.0", "prometheus_client==0.26.0")
SERVER_PATH = f"{RUNTIME_DIR}/model_server.py"
MODEL_PICKLE = f"{RUNTIME_DIR}/model.pkl"
DEFAULT_PORT = 8080
# Debian-based images (and python:3.x) have python3 on PATH; a bare `python` is not guaranteed.
PYTHON = "python3"
# Model names appear in URLs and become Kubernetes object names (Service needs a DNS-1035 label).
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_REF = re.compile(r"^(?P<target>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")


def follower_files() -> dict[str, bytes]:
    """What a server following an alias imports beside itself: the stores and the registry's documents."""
    here = Path(__file__).resolve().parent.parent / "image_runtime"
    return {f"{RUNTIME_DIR}/{n}": (here / n).read_bytes() for n in ("outputs.py", "outputs_s3.py", "modeldocs.py")}


def server_source() -> bytes:
    return (Path(__file__).resolve().parent.parent / "image_runtime" / "model_server.py").read_bytes()


def default_name(model: Any) -> str:
    """'IrisModel' -> 'iris-model'; 'model.py:Iris' -> 'iris'."""
    if isinstance(model, str):
        raw = model.rpartition(":")[2].rpartition(".")[2]
    else:
        raw = (model if inspect.isclass(model) else type(model)).__name__
    raw = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", raw)
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-") or "model"


def check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not _NAME.match(name):
        raise ConfigError(
            f"model name {name!r} is not valid",
            hint="use lowercase letters, digits and '-', starting with a letter, at most 63 characters (e.g. 'iris')",
        )
    return name


def pickle_by_value(obj: Any) -> bytes:
    """cloudpickle `obj`, carrying by value the class's own module and the local modules its methods
    use (the function preprocessor's rules): the image has neither model.py nor its helpers."""
    import cloudpickle

    from .function import is_local_module, pickling_by_value, referenced_modules, describe

    cls = obj if inspect.isclass(obj) else type(obj)
    modules = set()
    for klass in cls.__mro__[:-1]:
        modules.add(klass.__module__)
        for attr in vars(klass).values():
            fn = getattr(attr, "__func__", attr)  # staticmethod/classmethod wrap the function
            if inspect.isfunction(fn):
                modules |= referenced_modules(fn, (), {})
    with pickling_by_value({m for m in modules if is_local_module(m)}):
        try:
            return cloudpickle.dumps(obj)
        except Exception as exc:  # pickling can fail in many ways (locks, open files, sockets)
            what = f"{type(exc).__name__}: {exc}"
            if not inspect.isclass(obj):
                for key, value in vars(obj).items():
                    try:
                        cloudpickle.dumps(value)
                    except Exception:  # noqa: BLE001 - this attribute is the culprit
                        what = f"attribute {key!r} is a {describe(value)[0]}, which cannot be pickled"
                        break
            raise ConfigError(
                f"cannot pickle model {cls.__name__}: {what}",
                hint="create open files, locks and connections in load(), not before shipping; "
                     "or pass 'model.py:ClassName' to import the class in the image instead",
            ) from None


def _find_class(path: Path, attr: str) -> None:
    """Check `attr` is defined at the top level of `path` without running the file."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path} does not parse: {exc.msg} (line {exc.lineno})", hint="fix the syntax error") from None
    top = attr.split(".")[0]
    defined: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defined.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined += [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined += [(a.asname or a.name).split(".")[0] for a in node.names]
    if top not in defined:
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        raise ConfigError(
            f"{path} defines no {top!r}",
            hint=f"classes in it: {', '.join(classes)}" if classes else "define a class with a predict() method in it",
        )


def batching_env(max_batch_size: int | None, max_latency_ms: float | None) -> dict[str, str]:
    """The model server's adaptive batching settings as its env (nothing when not asked for)."""
    if max_batch_size is None:
        if max_latency_ms is not None:
            raise ConfigError("max_latency_ms needs max_batch_size", hint="e.g. max_batch_size=32, max_latency_ms=5")
        return {}
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 2:
        raise ConfigError(f"max_batch_size must be an integer of at least 2, got {max_batch_size!r}",
                          hint="the most rows one predict() call gets, e.g. 32")
    env = {"FAIRING_MAX_BATCH_SIZE": str(max_batch_size)}
    if max_latency_ms is not None:
        if isinstance(max_latency_ms, bool) or not isinstance(max_latency_ms, (int, float)) or not 0 <= max_latency_ms <= 10_000:
            raise ConfigError(f"max_latency_ms must be a number of milliseconds from 0 to 10000, got {max_latency_ms!r}",
                              hint="how long the first request of a batch may wait for others, e.g. 5")
        env["FAIRING_MAX_LATENCY_MS"] = f"{max_latency_ms:g}"
    return env


class ServePreprocessor(Preprocessor):
    """`prepare(model, name=..., files=..., requirements=..., storage_uri=...)` -> BuildContext.

    model: a class (or instance) with `predict`, or "path/to/model.py:ClassName".
    files: model files to ship; a list of paths (relative to the model file's directory, or the
        current directory for a class) or a {path_in_image: local_path} mapping. They land under the
        working directory (/app), which is the `model_dir` given to `load(model_dir)`.
    storage_uri: http(s):// or file: URI fetched at start into model_dir (/mnt/models), which is
        then what `load(model_dir)` receives.
    max_batch_size, max_latency_ms: adaptive batching in the server (opt-in; see
        fairing/image_runtime/model_server.py): rows of concurrent requests share one predict()
        call of up to max_batch_size rows, waiting at most max_latency_ms (default 5) for others.
    """

    kind = "serve"

    def __init__(self, *, files: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = (),
                 storage_uri: str | None = None, port: int = DEFAULT_PORT, **kw):
        super().__init__(**kw)
        self.files = files
        self.storage_uri = storage_uri
        self.port = port

    def prepare(self, model: Any, *, name: str | None = None,
                files: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | None = None,
                requirements: reqs_mod.RequirementsSpec = None, storage_uri: str | None = None,
                port: int | None = None, env: Mapping[str, str] | None = None,
                model_files: Mapping[str, str | os.PathLike] | None = None,
                max_batch_size: int | None = None, max_latency_ms: float | None = None,
                follow: tuple[str, str] | None = None, model_layer: Any = None) -> BuildContext:
        """`follow`: (NAME@ALIAS, the registry's store): the server follows that alias (it gets the
        outputs shim's store code beside it). `model_layer`: a registered version's layer the
        append builder mounts (fairing.context.ModelLayer), instead of `model_files`."""
        name = check_name(name or default_name(model))
        batching = batching_env(max_batch_size, max_latency_ms)
        port = int(port or self.port)
        storage_uri = storage_uri or self.storage_uri
        if storage_uri:
            _check_uri(storage_uri)
        if requirements is not None:
            self.requirements = requirements
        model_env: dict[str, str] = {}
        ctx_files: dict[str, Any] = {}
        needed = list(SERVER_REQUIREMENTS)
        python = None

        if isinstance(model, (str, os.PathLike)):
            m = _REF.match(os.fspath(model))
            if not m:
                raise ConfigError(f"model {os.fspath(model)!r} is not 'file.py:ClassName'",
                                  hint="e.g. 'model.py:IrisModel', or pass the class itself")
            target, attr = m.group("target"), m.group("attr")
            if target.endswith(".py"):
                path = Path(target)
                if not path.is_file():
                    raise ConfigError(f"model file {target} does not exist", hint="check the path (relative to the current directory)")
                _find_class(path, attr)
                base_dir, module = path.parent, path.stem
                if not module.isidentifier():
                    raise ConfigError(f"{path.name} is not an importable module name", hint="rename it, e.g. to model.py")
                ctx_files.update(collect(path))
                auto_reqs = base_dir / "requirements.txt"
            else:  # "package.module:Class": must come from requirements or files
                base_dir, module, auto_reqs = Path.cwd(), target, None
            model_env["FAIRING_MODEL"] = f"{module}:{attr}"
            reqs = self.resolve_requirements(base_dir, auto_reqs)
        else:
            if not (callable(getattr(model, "predict", None))):
                what = model.__name__ if inspect.isclass(model) else type(model).__name__
                raise ConfigError(f"{what} has no predict() method", hint="define predict(self, instances) on the model class")
            base_dir = Path.cwd()
            ctx_files[MODEL_PICKLE] = pickle_by_value(model)
            model_env["FAIRING_MODEL_PICKLE"] = MODEL_PICKLE
            python = host_python()
            model_env["FAIRING_PYTHON"] = python
            import cloudpickle

            needed.append(f"cloudpickle=={cloudpickle.__version__}")  # same reconstructors as the pickler
            reqs = self.resolve_requirements(base_dir)

        ctx_files.update(self.included_files(base_dir))
        ctx_files.update(_model_files(self.files if files is None else files, base_dir))
        ctx_files[SERVER_PATH] = server_source()
        if follow is not None:
            ctx_files.update(follower_files())
            env = {**(env or {}), "FAIRING_MODEL_FOLLOW": follow[0]}
        env_all = {"MODEL_NAME": name, "PORT": str(port), **model_env, **batching}
        if storage_uri:
            env_all["FAIRING_STORAGE_URI"] = storage_uri
        env_all.update(env or {})
        model_files = {str(k).strip("/"): Path(v) for k, v in (model_files or {}).items()}
        clash = sorted(set(model_files) & set(ctx_files))
        if clash:
            raise ConfigError(f"the model's file {clash[0]} has the name of a file of the code",
                              hint="rename the code file, or register the model with --path for only its model files")
        ctx = self._context(
            ctx_files,
            [PYTHON, "-u", SERVER_PATH],
            requirements=reqs_mod.ensure(reqs, needed),
            python=python,
            env=env_all,
            serve=ServeSpec(model_name=name, port=port, follow=follow[0] if follow else None,
                            follow_store=follow[1] if follow else None),
        )
        if model_files or model_layer is not None:
            import dataclasses

            ctx = dataclasses.replace(ctx, model_files=model_files, model_layer=model_layer)
        return ctx


def _check_uri(uri: str) -> None:
    scheme = uri.split("://", 1)[0] if "://" in uri else ("file" if uri.startswith("file:") else "")
    if scheme not in ("http", "https", "file"):
        raise ConfigError(f"storage_uri {uri!r} is not http(s):// or file:",
                          hint="serve a local file with files=[...], or use an http(s):// or file:/// URI")


def _model_files(spec, base_dir: Path) -> dict[str, Path]:
    if not spec:
        return {}
    out: dict[str, Path] = {}
    if isinstance(spec, Mapping):
        for dst, src in spec.items():
            p = Path(src) if Path(src).is_absolute() else base_dir / src
            if not p.exists():
                raise ConfigError(f"model file {src} does not exist", hint="check the files= paths")
            dst = str(dst).strip("/")
            out.update(collect(p, prefix=dst + "/") if p.is_dir() else {dst: p.absolute()})
        return out
    if isinstance(spec, (str, os.PathLike)):
        spec = [spec]
    for item in spec:
        p = Path(item) if Path(item).is_absolute() else base_dir / item
        if not p.exists():
            raise ConfigError(f"model file {item} does not exist", hint=f"paths are relative to {base_dir}")
        try:
            rel = p.absolute().relative_to(base_dir.absolute()).as_posix()
        except ValueError:
            rel = p.name
        out.update(collect(p, prefix="" if rel == "." else rel + "/") if p.is_dir() else {rel: p.absolute()})
    return out

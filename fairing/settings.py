"""Effective configuration: CLI/arguments > environment (FAIRING_*) > config file (profile, then
top level) > defaults. Every value remembers where it came from, so `fair config show` can say.

The config file is `fairing.yaml` (or `fairing.yml`) or a `[tool.fairing]` table in
`pyproject.toml`, found from the working directory upward. A file may hold profiles:

    registry: 127.0.0.1:5000
    profiles:
      local: {deployer: local}
      dev-cluster: {deployer: job, namespace: team-a, context: dev}

selected with `--profile`, `FAIRING_PROFILE` or a top-level `profile:` key."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError

FILE_NAMES = ("fairing.yaml", "fairing.yml")


def _str(v: Any) -> str:
    if isinstance(v, (dict, list)):
        raise ValueError("expected a single value")
    return str(v)


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected a whole number")
    try:
        n = int(str(v).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _list(v: Any) -> list[str]:
    """A list, or a comma/newline separated string ("numpy==1.26,pandas==2.2")."""
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    if isinstance(v, dict):
        raise ValueError("expected a list")
    return [p.strip() for p in re.split(r"[,\n]", str(v)) if p.strip()]


def _env(v: Any) -> dict[str, str]:
    """A mapping, or `K=V` items as a list or a comma separated string."""
    if isinstance(v, Mapping):
        return {str(k): "" if x is None else str(x) for k, x in v.items()}
    out: dict[str, str] = {}
    for item in _list(v):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE")
        out[key.strip()] = val
    return out


def _tolerations(v: Any) -> list[str]:
    """Taints to tolerate: "key", "key=value", optionally ":Effect" (NoSchedule by default)."""
    out = []
    for item in _list(v):
        taint, _, effect = item.partition(":")
        if not taint.partition("=")[0].strip() or (effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
            raise ValueError(f"{item!r} is not KEY[=VALUE][:NoSchedule|PreferNoSchedule|NoExecute]")
        out.append(item)
    return out


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        s = _str(v)
        if s not in choices:
            raise ValueError(f"expected one of: {', '.join(choices)}")
        return s

    return check


def _cron(v: Any) -> str:
    s = " ".join(_str(v).split())
    if not (s.startswith("@") or len(s.split()) == 5):
        raise ValueError("expected a cron expression with 5 fields, e.g. \"0 3 * * *\", or @daily")
    return s


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    example: str = ""  # shown commented out by `fair init`
    # FAIRING_<NAME> unless a workload already uses that name for something else
    env_var: str = ""

    @property
    def env(self) -> str:
        return self.env_var or f"FAIRING_{self.name.upper()}"


KEYS: dict[str, Key] = {k.name: k for k in (
    Key("preprocessor", _str, None, "how to package the entry point: python, notebook, function, "
        "full_notebook (default: guessed from the entry point)", "python"),
    Key("builder", _str, None, "append (daemonless, default with a registry), docker, cluster", "append"),
    Key("base_image", _str, None, "image the code is added to (default: python:<your python>-slim)",
        "python:3.11-slim"),
    Key("registry", _str, None, "where images are pushed, e.g. 127.0.0.1:5000/team; none -> run locally",
        "registry.example.com/team"),
    Key("ca_file", _str, None, "CA certificate (PEM) of a private registry; added to the system's trust, "
        "not put in its place", "/etc/ssl/private-registry-ca.pem"),
    Key("outputs", _str, None, "where runs keep what they write to $FAIRING_OUTPUT_DIR: oci://HOST/REPO, "
        "s3://BUCKET/PREFIX, pvc://CLAIM/SUBPATH, a directory, or none (default: beside the image; "
        "local runs: the cache)", "s3://ml-outputs/team"),
    Key("image_name", _str, None, "repository name for built images (default: fairing-<entry>)", "my-train"),
    Key("deployer", _str, None, "job, cronjob, tfjob, pytorchjob, trainjob, pod, serving, inferenceservice, local "
        "(default: job with a registry and a cluster, else local)", "job"),
    Key("namespace", _str, None, "Kubernetes namespace (default: from the kubeconfig context)", "default"),
    Key("context", _str, None, "kubeconfig context", "dev"),
    Key("kubeconfig", _str, None, "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)", "~/.kube/config"),
    Key("requirements", _list, [], "pip requirements: a list, or a requirements.txt path",
        "[numpy==1.26.4]"),
    Key("cpu", _str, None, "CPU request/limit, e.g. 2 or 500m", "\"1\""),
    Key("memory", _str, None, "memory request/limit, e.g. 4Gi", "2Gi"),
    Key("gpus", _int, 0, "number of GPUs", "1"),
    Key("env", _env, {}, "environment variables for the workload", "{LOG_LEVEL: info}"),
    Key("node_selector", _env, {}, "node labels the workload's pods must run on", "{pool: training}"),
    Key("tolerations", _tolerations, [], "node taints the pods tolerate: KEY[=VALUE][:EFFECT]",
        "[dedicated=training:NoSchedule]"),
    Key("schedule", _cron, None, "cron schedule; makes the training a CronJob", "\"0 3 * * *\""),
    Key("queue", _str, None, "Kueue LocalQueue for training workloads (job, cronjob, tfjob, pytorchjob, trainjob)",
        "team-queue"),
    Key("nodes", _int, None, "trainjob deployer: number of nodes (default 1)", "2"),
    Key("procs_per_node", _int, None, "trainjob deployer: processes per node (default: the runtime's)", "1"),
    # Not FAIRING_RUNTIME: every workload has FAIRING_RUNTIME=1 (runtime.RUNTIME_ENV), and fairing
    # called inside one would read that as a runtime named "1".
    Key("runtime", _str, None, "trainjob deployer: ClusterTrainingRuntime name (default torch-distributed)",
        "torch-distributed", env_var="FAIRING_TRAINJOB_RUNTIME"),
    Key("timeout", _int, None, "seconds to wait for the workload (default: no limit)", "3600"),
    Key("local_mode", _choice("auto", "container", "process"), "auto",
        "local deployer: container (Docker/Podman API), process, or auto", "auto"),
    Key("docker_host", _str, None, "Docker/Podman API for local runs and the docker builder "
        "(default: $DOCKER_HOST or the default socket)", "unix:///run/podman/podman.sock"),
    Key("mlflow", _str, None, "MLflow tracking URI: every run is also logged there "
        "(default: $MLFLOW_TRACKING_URI)", "http://127.0.0.1:5000"),
    Key("experiment", _str, None, "MLflow experiment name (default: the entry's name)", "my-model"),
    Key("dry_run", _bool, False, "print the plan and manifests, apply nothing", "false"),
    Key("keep_on_interrupt", _bool, False, "an interrupt (Ctrl-C, a notebook's stop button) during a wait "
        "leaves the workload running instead of deleting it (keep=True for one call)", "false"),
    Key("output", _choice("text", "json"), "text", "CLI output format", "text"),
)}


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "default", "env FAIRING_X", "fairing.yaml:3 (profile dev)", "cli", "argument"


class Settings(Mapping[str, Any]):
    """The effective values; `settings.registry` or `settings["registry"]`; `.source(key)`."""

    def __init__(self, values: Mapping[str, Value], *, profile: str | None = None,
                 file: Path | None = None):
        self._values = dict(values)
        self.profile = profile
        self.file = file

    def __getitem__(self, key: str) -> Any:
        return self._values[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key].value
        except KeyError:
            raise AttributeError(key) from None

    def source(self, key: str) -> str:
        return self._values[key].source

    def is_set(self, key: str) -> bool:
        return self._values[key].source != "default"

    def items_with_source(self) -> list[tuple[str, Any, str]]:
        return [(k, v.value, v.source) for k, v in self._values.items()]

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "argument") -> "Settings":
        values = dict(self._values)
        values.update(_layer(overrides, source))
        return Settings(values, profile=self.profile, file=self.file)


def _parse(key: str, raw: Any, where: str) -> Any:
    if key not in KEYS:
        raise ConfigError(f"{where}: unknown setting {key!r}", hint=_did_you_mean(key))
    try:
        return KEYS[key].parse(raw)
    except ValueError as e:
        if where == "cli":  # name the option as typed, not the setting behind it
            opt = "--" + key.replace("_", "-")
            shown = "" if isinstance(raw, (list, tuple)) else f" {raw!r}"  # list errors name their item
            raise ConfigError(f"invalid {opt}{shown}: {e}", hint=f"{opt}: {KEYS[key].help}") from None
        raise ConfigError(f"{where}: bad value for {key}: {e}",
                          hint=f"{key}: {KEYS[key].help}") from None


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), list(KEYS), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known settings: {', '.join(KEYS)}"


def _layer(values: Mapping[str, Any], source: str) -> dict[str, Value]:
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        k = k.replace("-", "_")
        out[k] = Value(_parse(k, v, source), source)
    return out


# --- the config file ---------------------------------------------------------------------------

def find_config_file(start: Path | None = None) -> Path | None:
    """The nearest fairing.yaml, or pyproject.toml with a [tool.fairing] table, from `start` up."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        for name in FILE_NAMES:
            if (d / name).is_file():
                return d / name
        py = d / "pyproject.toml"
        if py.is_file() and re.search(r"^\s*\[tool\.fairing[\].]", py.read_text(errors="replace"), re.M):
            return py
    return None


@dataclass
class _FileData:
    top: dict[str, tuple[Any, int | None]]  # key -> (raw value, line)
    profiles: dict[str, dict[str, tuple[Any, int | None]]]
    default_profile: str | None


def _read_yaml(path: Path) -> _FileData:
    import yaml

    try:
        node = yaml.compose(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}",
                          hint="fix the file (indentation, quotes around values with ':' or '#')") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", hint="check the file's permissions") from None
    if node is None:
        return _FileData({}, {}, None)
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: expected a mapping of settings",
                          hint="write `key: value` lines, see `fair init`")

    def mapping(n: Any, where: str) -> dict[str, tuple[Any, int]]:
        if not isinstance(n, yaml.MappingNode):
            raise ConfigError(f"{path}:{n.start_mark.line + 1}: {where} must be a mapping",
                              hint="write `key: value` lines under it")
        out = {}
        for k, v in n.value:
            out[str(k.value)] = (yaml.safe_load(yaml.serialize(v)), k.start_mark.line + 1, v)
        return out

    top = mapping(node, "the file")
    profiles: dict[str, dict] = {}
    if "profiles" in top:
        _, _, pnode = top.pop("profiles")
        for name, (_, line, body) in mapping(pnode, "profiles").items():
            profiles[name] = {k: (v, ln) for k, (v, ln, _) in mapping(body, f"profile {name!r}").items()}
    default_profile = None
    if "profile" in top:
        default_profile = str(top.pop("profile")[0])
    return _FileData({k: (v, ln) for k, (v, ln, _) in top.items()}, profiles, default_profile)


def _read_pyproject(path: Path) -> _FileData:
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}", hint="fix the [tool.fairing] table") from None
    table = dict(data.get("tool", {}).get("fairing", {}))
    profiles = table.pop("profiles", {}) or {}
    default_profile = table.pop("profile", None)
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(f"{path}: [tool.fairing.profiles] must hold tables",
                          hint="write [tool.fairing.profiles.NAME] tables")
    return _FileData({k: (v, None) for k, v in table.items()},
                     {n: {k: (v, None) for k, v in p.items()} for n, p in profiles.items()},
                     default_profile)


def read_config_file(path: Path) -> _FileData:
    return _read_pyproject(path) if path.name == "pyproject.toml" else _read_yaml(path)


# Settings whose file values are paths: resolved against the file's directory, not the cwd.
_PATH_KEYS = ("kubeconfig",)


def _file_layer(path: Path, entries: Mapping[str, tuple[Any, int | None]], profile: str | None) -> dict[str, Value]:
    out = {}
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    for k, (raw, line) in entries.items():
        where = f"{shown}:{line}" if line else str(shown)
        if profile:
            where += f" (profile {profile})"
        key = k.replace("-", "_")
        if key in ("dry_run", "output"):
            raise ConfigError(f"{where}: {key!r} is a command-line option, not a file setting",
                              hint=f"pass --{key.replace('_', '-')} on the command line")
        value = _parse(key, raw, where)
        if key in _PATH_KEYS and value:
            value = str((path.parent / os.path.expanduser(value)).resolve())
        if key == "requirements" and len(value) == 1 and _looks_like_file(value[0]):
            value = [str((path.parent / value[0]).resolve())]
        out[key] = Value(value, where)
    return out


def _looks_like_file(s: str) -> bool:
    return s.endswith((".txt", ".in", ".toml")) or "/" in s and not re.match(r"^[\w.-]+\s*@", s)


def env_settings(environ: Mapping[str, str]) -> dict[str, Value]:
    """FAIRING_<KEY> for every known key; other FAIRING_* variables belong to other parts."""
    out = {}
    for key, k in KEYS.items():
        var = k.env
        if environ.get(var, "") != "":
            out[key] = Value(_parse(key, environ[var], f"env {var}"), f"env {var}")
    return out


def load(cli: Mapping[str, Any] | None = None, *, profile: str | None = None, cwd: Path | None = None,
         environ: Mapping[str, str] | None = None, file: Path | None = None,
         cli_source: str = "cli") -> Settings:
    """The effective settings. `cli` holds explicit values (None = not given); `profile` selects a
    profile (else FAIRING_PROFILE, else the file's `profile:`); `file` overrides discovery
    (FAIRING_CONFIG also does)."""
    environ = os.environ if environ is None else environ
    if file is None and environ.get("FAIRING_CONFIG"):
        file = Path(environ["FAIRING_CONFIG"]).expanduser()
        if not file.is_file():
            raise ConfigError(f"FAIRING_CONFIG points at {file}, which does not exist",
                              hint="unset FAIRING_CONFIG or point it at a fairing.yaml")
    path = (file.resolve() if file else None) or find_config_file(cwd)
    values: dict[str, Value] = {k: Value(key.default, "default") for k, key in KEYS.items()}
    chosen = profile or environ.get("FAIRING_PROFILE") or None
    if path is not None:
        data = read_config_file(path)
        values.update(_file_layer(path, data.top, None))
        chosen = chosen or data.default_profile
        if chosen:
            if chosen not in data.profiles:
                have = ", ".join(sorted(data.profiles)) or "none"
                raise ConfigError(f"profile {chosen!r} is not defined in {path}",
                                  hint=f"profiles defined there: {have}")
            values.update(_file_layer(path, data.profiles[chosen], chosen))
    elif chosen:
        raise ConfigError(f"profile {chosen!r} selected but no fairing.yaml or [tool.fairing] found",
                          hint="run `fair init` to write a fairing.yaml with profiles")
    values.update(env_settings(environ))
    if cli:
        values.update(_layer(cli, cli_source))
    return Settings(values, profile=chosen, file=path)


def explicit(values: Mapping[str, Any] | None = None, source: str = "argument") -> Settings:
    """Defaults plus `values` only, no file and no environment: for a facade whose every option is
    an argument (PredictionEndpoint), so a fairing.yaml nearby changes nothing it was not told."""
    layer = {k: Value(key.default, "default") for k, key in KEYS.items()}
    layer.update(_layer(values or {}, source))
    return Settings(layer)


def requirements_list(settings: Mapping[str, Any]) -> list[str] | str:
    """Requirements as given: a list of pins, or a single requirements file path (kept a path so
    the preprocessor reads it itself)."""
    reqs = list(settings.get("requirements") or [])
    if len(reqs) == 1 and _looks_like_file(reqs[0]):
        return reqs[0]
    return reqs


# --- `fair init` ------------------------------------------------------------------------------

def init_text() -> str:
    """A commented fairing.yaml: every key, its meaning, an example, all commented out."""
    lines = [
        "# fairing configuration. Precedence: command line > FAIRING_* environment > this file > defaults.",
        "# `fair config show` prints the effective values and where each came from.",
        "# Uncomment what you need. With no registry and no cluster, `fair train` runs locally.",
        "",
    ]
    for key in KEYS.values():
        if key.name in ("dry_run", "output"):
            continue
        lines.append(f"# {key.name}: {key.example}".rstrip())
        lines.append(f"#   {key.help}")
    lines += [
        "",
        "# Profiles: select with --profile NAME or FAIRING_PROFILE=NAME (or `profile: NAME` above).",
        "profiles:",
        "  local:",
        "    deployer: local",
        "  dev-cluster:",
        "    deployer: job",
        "    # registry: registry.example.com/team",
        "    # namespace: team-a",
        "    # context: dev",
        "",
    ]
    return "\n".join(lines)


# --- process knobs ------------------------------------------------------------------------------
# FAIRING_* variables that tune this process, not a run: where the cache is, how many threads,
# progress and tracebacks. They have no file or command-line layer, but like the keys above they
# are read here only, and at call time (never at import), so a caller or a test that sets one is
# seen at once. The in-image runtime (fairing.image_runtime) reads its own variables: it runs
# where fairing is not installed.

RUNTIME_ENV = "FAIRING_RUNTIME"  # set to 1 in every workload fairing launches


def _knob(name: str) -> str:
    return os.environ.get(name, "").strip()


def in_runtime() -> bool:
    """$FAIRING_RUNTIME: running inside a workload fairing launched (see fairing.runtime)."""
    return os.environ.get(RUNTIME_ENV, "") not in ("", "0", "false")


def cache_dir() -> Path:
    """$FAIRING_CACHE, else ~/.cache/fairing: layers, blobs, wheels and the run store's default home."""
    raw = os.environ.get("FAIRING_CACHE")
    return Path(raw) if raw else Path.home() / ".cache" / "fairing"


def runs_store() -> str | None:
    """$FAIRING_RUNS as given (a file, or a directory for runs.db; fairing.runs.store decides), or None."""
    return os.environ.get("FAIRING_RUNS") or None


def jobs() -> int | None:
    """$FAIRING_JOBS: compression threads, when a positive whole number; else None (every core)."""
    raw = _knob("FAIRING_JOBS")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def layer_compression() -> str | None:
    """$FAIRING_LAYER_COMPRESSION ("gzip" or "zstd", checked by fairing.oci.layer), or None."""
    return _knob("FAIRING_LAYER_COMPRESSION") or None


def bytecode() -> str | None:
    """$FAIRING_BYTECODE (auto/on/off and their spellings, checked by the builder), or None."""
    return _knob("FAIRING_BYTECODE") or None


def max_context_bytes() -> int | None:
    """$FAIRING_MAX_CONTEXT_BYTES: the build context size limit, or None for the default."""
    raw = os.environ.get("FAIRING_MAX_CONTEXT_BYTES")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"FAIRING_MAX_CONTEXT_BYTES={raw!r} is not a number of bytes",
                          hint="set it to e.g. 134217728 (128 MiB)") from None


def progress() -> bool | None:
    """$FAIRING_PROGRESS: 1 forces progress lines on, 0 off; None lets fairing.progress decide."""
    raw = os.environ.get("FAIRING_PROGRESS", "")
    return raw == "1" if raw in ("0", "1") else None


def debug() -> bool:
    """$FAIRING_DEBUG: the CLI prints tracebacks, as with --debug."""
    return os.environ.get("FAIRING_DEBUG", "") not in ("", "0")


def output_dir() -> str | None:
    """$FAIRING_OUTPUT_DIR: set in every workload fairing runs (fairing.outputs_dir() reads it)."""
    return os.environ.get("FAIRING_OUTPUT_DIR") or None


def s3_endpoint() -> str | None:
    """The S3 endpoint for s3:// outputs stores: $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL (the
    names the AWS SDKs read), else None (AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def aws_credentials() -> dict[str, str]:
    """{access_key, secret_key[, session_token]} from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY
    (/ $AWS_SESSION_TOKEN), else ~/.aws/credentials' profile $AWS_PROFILE (default); {} if none."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    token = os.environ.get("AWS_SESSION_TOKEN")
    if not (key and secret):
        import configparser

        path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials")
        conf = configparser.ConfigParser()
        try:
            conf.read(path)
        except configparser.Error:
            return {}
        section = os.environ.get("AWS_PROFILE") or "default"
        if not conf.has_section(section):
            return {}
        key = conf.get(section, "aws_access_key_id", fallback=None)
        secret = conf.get(section, "aws_secret_access_key", fallback=None)
        token = conf.get(section, "aws_session_token", fallback=None)
        if not (key and secret):
            return {}
    out = {"access_key": key, "secret_key": secret}
    if token:
        out["session_token"] = token
    return out

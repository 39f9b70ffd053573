"""`fair`: the command line. Parsing and printing only; the work happens in fairing.pipeline
(train, build, deploy), fairing.settings and fairing.workloads (status, logs, delete, list).

Exit codes: 0 success; 1 error (including a workload that failed); 2 usage or configuration error;
3 packaging/build/push error; 4 deploy/cluster/engine error (or the workload failed there);
130 interrupted (Ctrl-C). Errors print `error: ...` and `hint: ...` on stderr, never a traceback
unless --debug (or FAIRING_DEBUG=1)."""
# No `from __future__ import annotations`: typer reads the option types from real annotations,
# including those the common-options decorator adds.
import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer

from . import __version__, cliparams, stages
from .errors import ConfigError, FairingError
from .kfp import cli as export_cli
from .models import cli as models_cli
from .runs import cli as runs_cli

EXIT_CODES = {0: "success", 1: "error", 2: "usage or configuration error", 3: "build error",
              4: "deploy, cluster or workload error", 130: "interrupted"}

cliparams.install()  # unset and plain options without pydantic (~0.06 s of every command at low load)

app = typer.Typer(
    name="fair",
    help="Turn a script, a notebook or a function into a running workload: package, build, deploy.\n\n"
         "Exit codes: " + ", ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + ".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(runs_cli.app, name="runs")
app.add_typer(export_cli.app, name="export")
app.add_typer(models_cli.app, name="models")
cache_app = typer.Typer(help="Look after the local build cache (wheels, unpacked packages, layers).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


# --- common options ---------------------------------------------------------------------------

def _opt(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, **kw)


def _param(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


# Settings options (mapped onto fairing.settings keys, source "cli").
SETTING_OPTIONS = [
    _param("builder", Annotated[Optional[str], _opt("--builder", help="append, docker or cluster")]),
    _param("base_image", Annotated[Optional[str], _opt("--base-image", help="image to add the code to")]),
    _param("registry", Annotated[Optional[str], _opt("--registry", help="push images here, e.g. 127.0.0.1:5000/team")]),
    _param("outputs", Annotated[Optional[str], _opt("--outputs", help="keep $FAIRING_OUTPUT_DIR here: oci://HOST/REPO, s3://BUCKET/PREFIX, pvc://CLAIM/PATH, a dir, or none")]),
    _param("image_name", Annotated[Optional[str], _opt("--image-name", help="repository name for the image")]),
    _param("deployer", Annotated[Optional[str], _opt("--deployer", help=", ".join(stages.DEPLOYERS))]),
    _param("namespace", Annotated[Optional[str], _opt("--namespace", "-n", help="Kubernetes namespace")]),
    _param("context", Annotated[Optional[str], _opt("--context", help="kubeconfig context")]),
    _param("kubeconfig", Annotated[Optional[str], _opt("--kubeconfig", help="kubeconfig file")]),
    _param("gpus", Annotated[Optional[int], _opt("--gpus", help="number of GPUs", min=0)]),
    _param("cpu", Annotated[Optional[str], _opt("--cpu", help="CPU, e.g. 2 or 500m")]),
    _param("memory", Annotated[Optional[str], _opt("--memory", help="memory, e.g. 4Gi")]),
    _param("env", Annotated[Optional[List[str]], _opt("--env", "-e", help="K=V environment variable (repeatable)")]),
    _param("requirements", Annotated[Optional[str], _opt("--requirements", "-r", help="requirements.txt, or pins separated by commas")]),
    _param("schedule", Annotated[Optional[str], _opt("--schedule", help='cron schedule, e.g. "0 3 * * *" (CronJob)')]),
    _param("queue", Annotated[Optional[str], _opt("--queue", help="Kueue LocalQueue to submit the workload to")]),
    _param("nodes", Annotated[Optional[int], _opt("--nodes", help="trainjob: number of nodes", min=1)]),
    _param("procs_per_node", Annotated[Optional[int], _opt("--procs-per-node", help="trainjob: processes per node", min=1)]),
    _param("runtime", Annotated[Optional[str], _opt("--runtime", help="trainjob: ClusterTrainingRuntime (default torch-distributed)")]),
    _param("preprocessor", Annotated[Optional[str], _opt("--preprocessor", help="python, notebook, function, full_notebook")]),
    _param("local_mode", Annotated[Optional[str], _opt("--local-mode", help="local deployer: auto, container or process")]),
    _param("timeout", Annotated[Optional[int], _opt("--timeout", help="seconds to wait for the workload")]),
    _param("mlflow", Annotated[Optional[str], _opt("--mlflow", help="MLflow tracking URI to log the run to (default: $MLFLOW_TRACKING_URI)")]),
    _param("experiment", Annotated[Optional[str], _opt("--experiment", help="MLflow experiment (default: the entry's name)")]),
]
# Options every command has.
GLOBAL_OPTIONS = [
    _param("dry_run", Annotated[bool, _opt("--dry-run", help="print the build plan and manifests as YAML; apply nothing")], False),
    _param("output", Annotated[str, _opt("--output", "-o", help="text or json")], "text"),
    _param("debug", Annotated[bool, _opt("--debug", help="show tracebacks and debug logs")], False),
    _param("profile", Annotated[Optional[str], _opt("--profile", "-p", help="config file profile")]),
    _param("config_file", Annotated[Optional[Path], _opt("--config", help="config file (default: fairing.yaml or pyproject.toml found upward)")]),
]


class Opts:
    """The common options of one invocation, and what derives from them."""

    def __init__(self, values: dict):
        self.values = values
        self.output = values.get("output") or "text"
        if self.output not in ("text", "json"):
            raise ConfigError(f"--output must be text or json, not {self.output!r}", hint="use --output json for scripts")
        self.debug = bool(values.get("debug"))
        self.dry_run = bool(values.get("dry_run"))
        self._settings = None

    @property
    def json(self) -> bool:
        return self.output == "json"

    def settings(self):
        if self._settings is None:
            from . import settings as settings_mod

            cli = {p.name: self.values.get(p.name) for p in SETTING_OPTIONS}
            if cli.get("env") is not None:
                cli["env"] = list(cli["env"]) or None
            cli["dry_run"] = True if self.dry_run else None
            self._settings = settings_mod.load(cli, profile=self.values.get("profile"),
                                               file=self.values.get("config_file"))
        return self._settings

    def progress(self):
        from .progress import Progress

        return Progress(enabled=False) if self.json else Progress()


def command(*, settings: bool = True, name: Optional[str] = None, group: typer.Typer = app, **kw: Any):
    """Register a command with the common options appended to its signature; the function gets
    them as `opts`."""
    extra = (SETTING_OPTIONS if settings else []) + GLOBAL_OPTIONS

    def deco(f: Callable) -> Callable:
        sig = inspect.signature(f)
        own = [p for p in sig.parameters.values() if p.name != "opts"]

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            common = {p.name: kwargs.pop(p.name, p.default) for p in extra}
            if common.get("debug"):
                from .messages import set_debug

                set_debug()
                import logging

                logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
            return f(*args, opts=Opts(common), **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + extra)
        wrapper.__annotations__ = {**getattr(f, "__annotations__", {}),
                                   **{p.name: p.annotation for p in extra}}
        wrapper.__annotations__.pop("opts", None)
        return group.command(name=name, **kw)(wrapper)

    return deco


# --- printing ---------------------------------------------------------------------------------

from .messages import info as _info, out as _out  # noqa: E402 - one writer for every command


def _print_json(data: Any) -> None:
    _out(json.dumps(data, indent=2, default=str, sort_keys=True))


def _yaml(docs: list) -> str:
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def _print_plan(plan: dict, opts: Opts) -> None:
    if opts.json:
        _print_json(plan)
        return
    _out(f"# mode: {plan.get('mode')}")
    build = plan.get("build") or {}
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
    shown = {k: v for k, v in build.items() if k != "dockerfile"} if isinstance(build, dict) else build
    _out("# build plan")
    _out(_yaml([shown]).rstrip())
    if dockerfile:
        _out("# Dockerfile")
        for line in str(dockerfile).rstrip().splitlines():
            _out("#   " + line)
    manifests = plan.get("manifests") or []
    if manifests:
        _out("---")
        _out(_yaml(manifests).rstrip())


# --- commands ---------------------------------------------------------------------------------

def _entry(entry: str) -> str:
    if not Path(entry).exists():
        raise ConfigError(f"{entry} does not exist", hint="pass a .py file, a directory or a .ipynb notebook")
    return entry


@command(help="Package and build an image (pushed to --registry, or kept in the local engine); print its reference.")
def build(entry: Annotated[str, typer.Argument(help="a .py file, a directory or a .ipynb notebook")],
          target: Annotated[Optional[str], typer.Option("--target", help="full image name, or oci:DIR for an OCI layout")] = None,
          opts: Any = None) -> None:
    from . import pipeline
    from .request import Request, Stage

    s = opts.settings()
    p = pipeline.plan(Request(_entry(entry), s, builder=Stage(s.builder, {"target": target}) if target else None,
                              build_only=True))
    if p.builder is None:
        raise ConfigError("nothing to build into: no registry and no container engine",
                          hint="pass --registry HOST/PATH, --target oci:DIR, or start Docker/Podman")
    progress = opts.progress()
    if opts.dry_run:
        _print_plan(pipeline.dry_run(p, progress, build_only=True), opts)
        return
    image, run = pipeline.build_recorded(p, progress)
    if opts.json:
        st = image.stats
        _print_json({"image": image.ref, "digest": image.digest, "tag": image.tag, "run_id": run.id,
                     "stats": {"seconds": st.seconds, "layers_uploaded": st.layers_uploaded,
                               "layers_skipped": st.layers_skipped, "bytes_uploaded": st.bytes_uploaded,
                               "phases": dict(st.phases)}})
    else:
        _out(image.ref)


@command(help="Package, build and run a training workload; streams its logs until it ends (unless --detach).")
def train(entry: Annotated[str, typer.Argument(help="a .py file, a directory or a .ipynb notebook")],
          args: Annotated[Optional[List[str]], typer.Argument(help="arguments for the script (after --)")] = None,
          detach: Annotated[bool, typer.Option("--detach", "-d", help="return once deployed, don't wait")] = False,
          name: Annotated[Optional[str], typer.Option("--name", help="workload name (default: generated)")] = None,
          keep: Annotated[bool, typer.Option("--keep", help="keep a finished local container for `fair logs`")] = False,
          register: Annotated[Optional[str], typer.Option(
              "--register", help="register the run's outputs as the next version of this model (in the pod, when it succeeds)")] = None,
          promote_if: Annotated[Optional[str], typer.Option(
              "--promote-if", help='move the alias to the new version when this holds, e.g. "accuracy >= champion"')] = None,
          opts: Any = None) -> None:
    from . import pipeline
    from .request import CLEANUP_NEVER, CLEANUP_ON_SUCCESS, Request, Wait

    s = opts.settings()
    prepare_kw = {"args": list(args)} if args else {}
    p = pipeline.plan(Request(_entry(entry), s, prepare=prepare_kw, name=name, retrain=_retrain(register, promote_if)))
    progress = opts.progress()
    if opts.dry_run:
        # As the run would be: a followed Job waits for this client's attach (fairing.kube.attach).
        _print_plan(pipeline.dry_run(p, progress, follow=not detach and p.on_cluster and not p.serving), opts)
        return
    local_mode = p.deployer.options.get("mode") if p.deployer.name == "local" else None
    if not opts.json:
        _info(f"fair: mode: {_mode_sentence(p)}")
    if detach and local_mode == "process":
        raise ConfigError("--detach needs a container engine or a cluster: a local process ends with this command",
                          hint="drop --detach, or start Docker/Podman / configure a registry and cluster")
    # Logs go to stdout, except with --output json, where stdout holds only the JSON document.
    # A finished local container is removed unless --keep (cluster workloads stay for `fair logs`).
    from .logview import LogView

    # A tqdm bar (carriage returns) shows as one line, rewritten in place in a terminal.
    wait = None if detach else Wait(on_log=_info if opts.json else LogView(), keep=bool(s.keep_on_interrupt),
                                    cleanup=CLEANUP_ON_SUCCESS if local_mode == "container" and not keep else CLEANUP_NEVER)
    res = pipeline.execute(p, progress, wait=wait)
    handle = res.handle
    status = res.status or "Deployed"
    if opts.json:
        out = res.as_dict()
        out["status"] = status
        out["run_id"] = res.run.id
        out["stages"] = progress.summary()
        _print_json(out)
    else:
        _info(f"fair: recorded as run {res.run.id} (fair runs show {res.run.id})")
        _info(f"fair: {getattr(handle, 'name', '')} {status} ({res.mode})")  # last: scripts read the outcome here


def _retrain(register: Optional[str], promote_if: Optional[str]):
    from .request import Retrain

    if promote_if is not None and register is None:
        raise ConfigError("--promote-if needs --register NAME: the gate promotes a version of that model",
                          hint='e.g. --register iris --promote-if "accuracy >= champion"')
    return Retrain(register, promote_if) if register is not None else None


def _mode_sentence(p) -> str:
    name, kw = p.deployer.name, p.deployer.options
    if name == "local":
        from .checks import local_mode_sentence

        return local_mode_sentence(kw, p.settings)
    return f"{name} on cluster" + (f" (namespace {kw['namespace']})" if kw.get("namespace") else "")


def _model_files(files: Optional[List[str]]) -> Optional[List[str]]:
    """--file paths as a shell user means them (from the current directory); one that is not there
    is passed on as given, so the serve preprocessor looks next to the model file and, failing
    that, names the missing file."""
    if not files:
        return None
    return [str(Path(f).absolute()) if Path(f).exists() else f for f in files]


@command(help="Serve a model: MODEL is file.py:ClassName (a class with predict()). Prints the endpoint URL.")
def deploy(model: Annotated[str, typer.Argument(help="file.py:ClassName")],
           name: Annotated[Optional[str], typer.Option("--name", help="endpoint name")] = None,
           replicas: Annotated[Optional[int], typer.Option("--replicas", help="number of replicas", min=1)] = None,
           files: Annotated[Optional[List[str]], typer.Option(
               "--file", help="model file or directory to ship next to the model, e.g. model.joblib "
                                    "(repeatable; relative to the current directory, else to MODEL's)")] = None,
           storage_uri: Annotated[Optional[str], typer.Option(
               "--storage-uri", help="http(s):// or file: URI fetched into the model dir when the server starts")] = None,
           model_ref: Annotated[Optional[str], typer.Option(
               "--model", help="serve a registered model's files: iris@champion, iris:3, run:ID or best:TUNE_RUN_ID")] = None,
           max_batch_size: Annotated[Optional[int], typer.Option(
               "--max-batch-size", help="adaptive batching: concurrent requests' rows share one predict() "
                                        "of up to this many rows")] = None,
           max_latency_ms: Annotated[Optional[float], typer.Option(
               "--max-latency-ms", help="adaptive batching: how long a request may wait for others (default 5)")] = None,
           modelcar: Annotated[bool, typer.Option(
               "--modelcar", help="with --deployer inferenceservice and --model: KServe mounts the model's files from "
                                  "an OCI image (storageUri oci://), served by this model's image as a ServingRuntime")] = False,
           opts: Any = None) -> None:
    from .api import endpoint
    from .checks import deploy_inputs

    s = opts.settings()
    # Everything local first: a missing model file is reported before any engine or cluster is asked.
    # (The pickle skew check runs once, in pipeline.prepare.)
    deploy_inputs(model, s, name=name, files=_model_files(files), storage_uri=storage_uri)
    ep = endpoint(model, s, name=name, replicas=replicas, files=_model_files(files), storage_uri=storage_uri,
                  out=None if opts.json else _info, model_ref=model_ref,
                  max_batch_size=max_batch_size, max_latency_ms=max_latency_ms, modelcar=modelcar)
    if model_ref is not None:
        from .models.serve import describe

        _info(f"fair: model {describe(ep.resolve_model())}")
    if opts.dry_run:
        p = ep.plan()
        mode = "local container" if p.deployer.name == "local" else p.mode
        _print_plan({"mode": mode, "build": {"model": model, "name": ep.name}, "manifests": ep.render()}, opts)
        return
    ep.create()
    follows = ((ep.run.doc.get("model") or {}).get("follows") if ep.run else None)
    if follows and not opts.json:
        _info(f"fair: the endpoint follows {follows}: when it moves, the new version is served (no restart)")
    if opts.json:
        _print_json({"name": ep.handle.name if hasattr(ep.handle, "name") else ep.name, "url": ep.url,
                     "run_id": ep.run.id if ep.run else None,
                     **({"model": ep.model_files.labels()} if ep.model_files else {})})
    else:
        _out(ep.url)


@command(help="Show a workload's status.")
def status(name: Annotated[str, typer.Argument(help="workload name (see `fair list`)")], opts: Any = None) -> None:
    from . import workloads

    from . import runs
    from .telemetry import lines, scrape

    h = workloads.attach(name, opts.settings())
    st = h.status()
    rid = workloads.run_id_of(h)
    runs.settle(rid, st)  # a detached run's record learns how it ended
    # A serving endpoint's /metrics, every replica; Pending too: mid-rollout, replicas serve two versions.
    traffic = scrape(h) if st in ("Ready", "Running", "Pending") else None
    detail = h.status_detail() if hasattr(h, "status_detail") else None  # e.g. where it waits in a queue
    if opts.json:
        _print_json({"name": name, "status": st, **({"detail": detail} if detail else {}), "run_id": rid,
                     **({"traffic": traffic} if traffic else {})})
    else:
        _out(f"{name}\t{st}" + (f"\t{detail}" if detail else "") + (f"\trun {rid}" if rid else ""))
        for line in lines(traffic) if traffic else []:
            _out("  " + line)


@command(help="Print a workload's logs (-f to follow until it ends).")
def logs(name: Annotated[str, typer.Argument(help="workload name")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming")] = False,
         opts: Any = None) -> None:
    from . import workloads
    from .pipeline import log_lines

    h = workloads.attach(name, opts.settings())
    for line in log_lines(h.logs(follow=follow)):
        _out(line)


@command(help="Delete a workload and what belongs to it.")
def delete(name: Annotated[str, typer.Argument(help="workload name")], opts: Any = None) -> None:
    from . import workloads

    h = workloads.attach(name, opts.settings())
    h.delete()
    if opts.json:
        _print_json({"name": name, "deleted": True})
    else:
        _out(f"deleted {name}")


@command(name="list", help="List workloads fairing created (label app.kubernetes.io/managed-by=fairing).")
def list_(opts: Any = None) -> None:
    from . import workloads

    rows = workloads.list_workloads(opts.settings())
    if opts.json:
        _print_json(rows)
        return
    if not rows:
        _info("no workloads")
        return
    cols = ["name", "kind", "namespace", "status", "run_id"]
    rows_t = [[str(r.get(c) or r.get("where") or "-") if c == "namespace" else str(r.get(c) or ("-" if c == "run_id" else ""))
               for c in cols] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows_t)) for i, c in enumerate(cols)]
    _out("  ".join(c.upper().replace("_", " ").ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in rows_t:
        _out("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


@command(settings=False, help="Write a commented fairing.yaml in the current directory.")
def init(force: Annotated[bool, typer.Option("--force", help="overwrite an existing fairing.yaml")] = False,
         opts: Any = None) -> None:
    from . import settings as settings_mod

    path = Path("fairing.yaml")
    if path.exists() and not force:
        raise ConfigError(f"{path.resolve()} already exists", hint="pass --force to overwrite it")
    path.write_text(settings_mod.init_text())
    if opts.json:
        _print_json({"written": str(path.resolve())})
    else:
        _out(f"wrote {path.resolve()}")


@command(name="show", group=config_app, help="Print the effective settings and where each value came from.")
def config_show(opts: Any = None) -> None:
    s = opts.settings()
    rows = [(k, v, src) for k, v, src in s.items_with_source() if k not in ("dry_run", "output")]
    if opts.json:
        _print_json({"file": str(s.file) if s.file else None, "profile": s.profile,
                     "settings": {k: {"value": v, "source": src} for k, v, src in rows}})
        return
    _out(f"# file: {s.file or '(none found)'}" + (f", profile: {s.profile}" if s.profile else ""))
    width = max(len(k) for k, _, _ in rows)
    for k, v, src in rows:
        shown = "-" if v in (None, [], {}) else (json.dumps(v) if isinstance(v, (list, dict)) else str(v))
        _out(f"{k.ljust(width)}  {shown:<32}  {src}")


@command(name="info", group=cache_app, settings=False, help="Show what the build cache holds ($FAIRING_CACHE).")
def cache_info(opts: Any = None) -> None:
    from .oci import cache as c

    root = c.cache_root()
    summary = c.info(root)
    if opts.json:
        _print_json({"root": str(root), **summary})
    else:
        _out("\n".join(c.info_lines(root, summary)))


@command(name="prune", group=cache_app, settings=False, help="Remove least recently used cache entries, by age and/or total size.")
def cache_prune(older_than: Annotated[Optional[str], typer.Option("--older-than", help="remove entries unused for this long, e.g. 7d, 12h")] = None,
                max_size: Annotated[Optional[str], typer.Option("--max-size", help="then remove the least recently used until the cache fits, e.g. 5G")] = None,
                opts: Any = None) -> None:
    from .oci import cache as c

    if older_than is None and max_size is None:
        raise ConfigError("fair cache prune needs --older-than and/or --max-size", hint="e.g. fair cache prune --older-than 30d --max-size 10G")
    root = c.cache_root()
    removed, freed = c.prune(root, older_than=c.parse_age(older_than) if older_than else None,
                             max_size=c.parse_size(max_size) if max_size else None, dry_run=opts.dry_run)
    if opts.json:
        _print_json({"root": str(root), "removed": removed, "bytes": freed, "dry_run": opts.dry_run})
    else:
        _out(f"{'would remove' if opts.dry_run else 'removed'} {removed} entries ({c.human(freed)}) from {root}")


@app.command(help="Print the version.")
def version() -> None:
    _out(__version__)


# `fair tune` lives in fairing/tune/cli.py; registered here so it gets the common options.
from .tune import cli as tune_cli  # noqa: E402

command(name="tune", help=tune_cli.HELP)(tune_cli.tune_command)


# --- entry point ------------------------------------------------------------------------------

def _error(message: str, hint: Optional[str], code: int) -> int:
    msg = " ".join(str(message).split()) or "unknown error"
    _info(f"error: {msg}")
    if hint:
        _info(f"hint: {' '.join(str(hint).split())}")
    return code


def main(argv: Optional[List[str]] = None) -> None:
    """The `fair` console script: runs the app, turns every failure into `error:`/`hint:` lines
    and a documented exit code."""
    try:  # typer >= 0.20 vendors its own click; its exceptions are what get raised
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as cx
    exit_exc = getattr(cx, "Exit", typer.Exit)
    abort_exc = getattr(cx, "Abort", typer.Abort)

    args = list(sys.argv[1:] if argv is None else argv)
    from .messages import debugging, install_cli, set_debug
    from .settings import debug as debug_env

    install_cli()  # warnings and notices as one `warning: ...` / `fair: ...` line each
    # Set (or reset: main may run again in one process) before parsing; the command's --debug
    # option sets it too.
    set_debug("--debug" in args or debug_env())
    cmd = typer.main.get_command(app)
    code = 0
    try:
        rv = cmd.main(args=args, prog_name="fair", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer returns Ctrl-C as exit code 130 when not standalone
            _error("interrupted", "nothing further was started; `fair list` shows what is running", 130)
    except FairingError as e:
        if debugging():
            import traceback

            traceback.print_exc()
        code = _error(e.message, e.hint, e.exit_code)
    except cx.NoArgsIsHelpError as e:
        # `fair` or `fair config` alone: the help is the answer
        _out(e.ctx.get_help())
        code = 0
    except cx.UsageError as e:
        sub = e.ctx.command_path if e.ctx else "fair"
        code = _error(e.format_message(), f"run `{sub} --help` for usage", 2)
    except exit_exc as e:
        code = e.exit_code
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            _error("interrupted", "nothing further was started; `fair list` shows what is running", 130)
    except (KeyboardInterrupt, abort_exc) as e:
        # A wait that was interrupted has said what it deleted (or kept) in its own `fair:` line,
        # and carries that line: no hint to add then.
        told = e if isinstance(e, KeyboardInterrupt) else e.__cause__ or e.__context__
        told = bool(isinstance(told, KeyboardInterrupt) and told.args)
        code = _error("interrupted", None if told else "nothing further was started; `fair list` shows what is running",
                      130)
    except BrokenPipeError:
        code = 0  # `fair logs x | head`: the reader went away, which is fine
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
    except cx.ClickException as e:
        code = _error(e.format_message(), "run `fair --help` for usage", 2)
    except Exception as e:  # the last resort: still one line, the traceback only with --debug
        if debugging():
            import traceback

            traceback.print_exc()
        code = _error(f"unexpected {type(e).__name__}: {e}", "rerun with --debug for the traceback, and report it", 1)
    if argv is None:
        _exit_now(code)  # the `fair` process itself (not a caller running main in its own process)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the `fair` process as soon as its work is done: what the interpreter does on exit that
    anyone can see is done here, in its order (wait for non-daemon threads and their pools, run
    atexit handlers, flush the output); what it would do after that (tear down every module and
    collect the heap of the Kubernetes client, ~0.1 s, more on a loaded machine) is skipped."""
    import atexit
    import threading

    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    except BaseException:  # noqa: BLE001 - anything odd: leave it to the normal exit
        sys.exit(code)
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":  # pragma: no cover
    main()

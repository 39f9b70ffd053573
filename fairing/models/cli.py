"""`fair models`: register, list, show, diff, promote and sync model versions. Registered in
fairing.cli with one line; parsing and printing only (the work is in fairing.models)."""
import json
from typing import Annotated, Any, List, Optional

import typer

from ..messages import info as _info, out as _out

app = typer.Typer(help="Models with names: versions of a run's outputs, and aliases (list by default).",
                  invoke_without_command=True, rich_markup_mode=None)

OUTPUT = typer.Option("--output", "-o", help="text or json")
STORE = typer.Option("--store", help="the outputs store holding the models (default: the outputs setting, "
                                     "else the local store)")
MLFLOW = typer.Option("--mlflow", help="MLflow tracking URI to mirror to (default: the mlflow setting or $MLFLOW_TRACKING_URI)")


def _check_output(output: str) -> bool:
    from ..errors import ConfigError

    if output not in ("text", "json"):
        raise ConfigError(f"--output must be text or json, not {output!r}", hint="use --output json for scripts")
    return output == "json"


def _json(data: Any) -> None:
    _out(json.dumps(data, indent=2, default=str, sort_keys=True))


def _table(rows: List[List[str]], cols: List[str]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    _out("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in rows:
        _out("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _metrics(m: dict, n: int = 3) -> str:
    items = list((m or {}).items())
    return " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in items[:n]) or "-"


@app.callback()
def list_models(ctx: typer.Context, store: Annotated[Optional[str], STORE] = None,
                output: Annotated[str, OUTPUT] = "text") -> None:
    if ctx.invoked_subcommand is None:
        _list(store, output)


@app.command("list", help="Every model in the store: latest version, aliases (same as `fair models`).")
def list_command(store: Annotated[Optional[str], STORE] = None, output: Annotated[str, OUTPUT] = "text") -> None:
    _list(store, output)


def _list(store: Optional[str], output: str) -> None:
    import fairing.models as models

    as_json = _check_output(output)
    rows = models.list(store=store)
    if as_json:
        _json(rows)
    elif not rows:
        _info("no models registered yet; fair models register NAME --run RUN_ID")
    else:
        _rows(rows)
    if rows:
        _on_the_way(store)


def _on_the_way(store: Optional[str], name: Optional[str] = None) -> None:
    """What a retrain's pod registered or promoted, into MLflow (when configured; nothing when
    nothing changed since this machine last looked)."""
    from .mirror import on_the_way
    from .registry import Registry

    on_the_way(Registry(store), None, None if name is None else [name])


def _rows(rows: List[dict]) -> None:
    _table([[r["name"], str(r["latest"]), str(len(r["versions"])),
             " ".join(f"{a}->{v}" for a, v in r["aliases"].items()) or "-", r.get("run") or "-",
             (r.get("created") or "")[:19].replace("T", " ")] for r in rows],
           ["name", "latest", "versions", "aliases", "latest run", "registered"])


@app.command(help="Make version N+1 of model NAME from a run's outputs.")
def register(name: Annotated[str, typer.Argument(help="model name, e.g. iris")],
             run: Annotated[str, typer.Option("--run", help="run id (a prefix is enough), run:ID, or best:TUNE_RUN_ID")],
             path: Annotated[Optional[str], typer.Option("--path", help="only this output file or directory, e.g. model.joblib")] = None,
             store: Annotated[Optional[str], STORE] = None, mlflow: Annotated[Optional[str], MLFLOW] = None,
             output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.models as models

    as_json = _check_output(output)
    v = models.register(name, run, path=path, store=store, mlflow=mlflow)
    if as_json:
        _json(v)
        return
    size = sum(f["size"] for f in v["files"])
    if v.get("already"):
        _info(f"fair: {v['ref']} already registered from run {v['run']['id']}: nothing written")
        _out(v["ref"])
        return
    _info(f"fair: registered {v['ref']} from run {v['run']['id']}: {len(v['files'])} file"
          f"{'' if len(v['files']) == 1 else 's'}, {size} bytes (referenced by digest"
          + (f"; written once as an image layer for serving, {v['layer']['size']} bytes)" if v.get("layer") else
             ", nothing uploaded)"))
    _out(v["ref"])


@app.command(help="Show a version: NAME (the latest), NAME:N or NAME@ALIAS.")
def show(ref: Annotated[str, typer.Argument(help="iris, iris:3 or iris@champion")],
         store: Annotated[Optional[str], STORE] = None, output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.models as models
    from .registry import Registry, parse_ref

    as_json = _check_output(output)
    v = models.get(ref, store=store)
    aliases = {a: m["version"] for a, m in Registry(store).aliases(parse_ref(ref)[0]).items()}
    v["aliases"] = sorted(a for a, n in aliases.items() if n == v["version"])
    if as_json:
        _json(v)
    else:
        _show(v)
    _on_the_way(store, v["model"])


def _show(v: dict) -> None:
    run = v.get("run") or {}
    _out(f"{v['ref']}" + (f"  ({', '.join('@' + a for a in v['aliases'])})" if v["aliases"] else ""))
    _out(f"  digest:      {v['digest']}")
    _out(f"  registered:  {v.get('created')} by {v.get('by')}")
    _out(f"  run:         {run.get('id')}" + (f" (via {run['via']})" if run.get("via") else "")
         + (f" {run.get('status')}" if run.get("status") else ""))
    if run.get("image"):
        _out(f"  image:       {run['image']}" + (f"@{run['image_digest']}" if run.get("image_digest") and "@" not in run["image"] else ""))
    if run.get("source_digest"):
        _out(f"  code:        {run['source_digest']}")
    if (run.get("git") or {}).get("commit"):
        _out(f"  git:         {run['git']['commit']}" + (" (dirty)" if run["git"].get("dirty") else ""))
    _out(f"  params:      {json.dumps(run.get('params') or {}, sort_keys=True)}")
    _out(f"  metrics:     {_metrics(run.get('metrics') or {}, 10)}")
    _out("  files:")
    for f in v["files"]:
        _out(f"    {f['path']}  {f['size']} bytes  {f['digest']}")
    if v.get("layer"):  # what a serving image of this version mounts
        _out(f"  layer:       {v['layer']['digest']}  {v['layer']['size']} bytes")


@app.command(help="What changed between two versions: code, params, metrics, files.")
def diff(a: Annotated[str, typer.Argument(help="e.g. iris:3")], b: Annotated[str, typer.Argument(help="e.g. iris:4")],
         store: Annotated[Optional[str], STORE] = None, output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.models as models
    from .compare import lines

    as_json = _check_output(output)
    d = models.diff(a, b, store=store)
    if as_json:
        _json(d)
        return
    for line in lines(d):
        _out(line)


@app.command(help="Point an alias (champion, staging, any word) of NAME at version N.")
def promote(name: Annotated[str, typer.Argument(help="model name")],
            version: Annotated[str, typer.Argument(help="version number")],
            alias: Annotated[str, typer.Option("--alias", help="the alias to move")] = "champion",
            store: Annotated[Optional[str], STORE] = None, mlflow: Annotated[Optional[str], MLFLOW] = None,
            output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.models as models

    as_json = _check_output(output)
    move = models.promote(name, version, alias, store=store, mlflow=mlflow)
    if as_json:
        _json(move)
        return
    if not move["changed"]:
        _info(f"fair: {name}@{alias} already points at version {move['version']}")
        return
    was = f" (was {move['previous']})" if move.get("previous") else ""
    _info(f"fair: {name}@{alias} -> version {move['version']}{was}")


@app.command(help="Bring MLflow's Model Registry up to date: the versions and alias moves made where no "
                  "MLflow client was (a retrain's pod), or while the server was down.")
def sync(name: Annotated[Optional[str], typer.Argument(help="only this model (default: every model in the store)")] = None,
         store: Annotated[Optional[str], STORE] = None, mlflow: Annotated[Optional[str], MLFLOW] = None,
         output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.models as models
    from .mirror import lines

    as_json = _check_output(output)
    reports = models.sync(name, store=store, mlflow=mlflow)
    if as_json:
        _json(reports)
    elif not reports:
        _info("no models registered yet; fair models register NAME --run RUN_ID")
    for is_warning, line in lines(reports):
        if is_warning or not as_json:  # a conflict is said to the person with -o json too
            _info(("warning: " if is_warning else "fair: ") + line)

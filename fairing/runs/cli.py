"""`fair runs`: list, show, diff and rerun recorded runs. Registered in fairing.cli with one line;
parsing and printing only (the work is in fairing.runs)."""
import json
from typing import Annotated, Any, List, Optional

import typer

from ..messages import info as _info, out as _out  # the CLI's one line writer, as in fairing.cli

app = typer.Typer(help="Recorded runs: list (default), show, diff, rerun.", invoke_without_command=True,
                  rich_markup_mode=None)

OUTPUT = typer.Option("--output", "-o", help="text or json")


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


def _metrics_text(m: dict, n: int = 3) -> str:
    items = list((m or {}).items())
    s = " ".join(f"{k}={v:g}" for k, v in items[:n])
    return s + (" ..." if len(items) > n else "")


def _duration(d: Any) -> str:
    if d is None:
        return "-"
    d = float(d)
    return f"{d:.1f}s" if d < 120 else f"{d / 60:.1f}m"


@app.callback()
def list_runs(ctx: typer.Context,
              last: Annotated[Optional[int], typer.Option("--last", help="only the N newest runs", min=1)] = 20,
              status: Annotated[Optional[str], typer.Option("--status", help="only runs with this status, e.g. Failed")] = None,
              parent: Annotated[Optional[str], typer.Option("--parent", help="only the runs nested under run ID "
                                                             "(a tuning run's trials)")] = None,
              output: Annotated[str, OUTPUT] = "text") -> None:
    if ctx.invoked_subcommand is not None:
        return
    import fairing.runs as runs

    as_json = _check_output(output)
    if parent:
        parent = runs.get(parent)["id"]  # a prefix is enough, as for `fair runs show`
    rows = runs.list(last=last, status=status, parent=parent)
    if as_json:
        _json(rows)
        return
    if not rows:
        _info("no runs recorded" + (f" with status {status}" if status else "") + (f" under run {parent}" if parent else ""))
        return
    table = [[r["id"], (r.get("time") or "")[:19].replace("T", " "), r.get("command") or "", r.get("status") or "",
              _duration(r.get("duration")), _short(r.get("entry")), (r.get("workload") or {}).get("name") or "-",
              _metrics_text(r.get("metrics"))] for r in rows]
    _table(table, ["id", "time", "command", "status", "took", "entry", "workload", "metrics"])


def _short(s: Any, n: int = 40) -> str:
    s = str(s or "-")
    return s if len(s) <= n else "..." + s[-(n - 3):]


@app.command(help="Print one run's record.")
def show(run_id: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
         files: Annotated[bool, typer.Option(
             "--files", help="read the store's list of output files when the record has none yet "
                             "(a pvc:// run's, through a short-lived reader Job) and keep it on the record")] = False,
         output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.runs as runs

    as_json = _check_output(output)
    if files:
        runs.files(run_id)
    doc = runs.get(run_id)
    if as_json:
        _json(doc)
        return
    import yaml

    shown = dict(doc)
    files = (shown.get("source") or {}).get("files")
    if files:  # file hashes are for diff; the count says enough here
        shown["source"] = {**shown["source"], "files": sorted(files)}
    kept = shown.pop("outputs", None) or {}
    _out(yaml.safe_dump(shown, sort_keys=False, default_flow_style=False).rstrip())
    if kept.get("store"):
        _out(f"outputs: {kept['store']}" + (f" (not read: {kept['error']})" if kept.get("error") else ""))
        for f in kept.get("files") or []:
            _out(f"  {f['path']}  {f['size']} bytes  {f['digest']}")
        if kept.get("files") == []:
            _out("  (no files)")
        elif kept.get("files") is None and not kept.get("error"):
            how = "through a short-lived reader Job" if kept["store"].startswith("pvc://") else "from the store"
            _out(f"  (files not read yet: fair runs show {doc['id']} --files reads them {how})")


@app.command(help="Fetch a run's output files (what it wrote to $FAIRING_OUTPUT_DIR) from its outputs store.")
def outputs(run_id: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
            dest: Annotated[Optional[str], typer.Option("--dest", "-d", help="directory to put them in (default ./outputs/RUN_ID)")] = None,
            path: Annotated[Optional[str], typer.Option("--path", help="only this file, e.g. model.joblib")] = None,
            output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.runs as runs

    as_json = _check_output(output)
    d = runs.outputs(run_id, dest, path=path)
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    if path is not None:
        files = [path]
    if as_json:
        _json({"dir": str(d), "files": files})
        return
    for f in files:
        _out(str(d / f))


@app.command(help="Import the runs an outputs store holds that have no record here (CronJob runs, trials, a teammate's).")
def sync(store: Annotated[Optional[List[str]], typer.Option("--store", help="outputs store URL (repeatable; default: "
                                                            "the outputs setting and the stores recorded runs name)")] = None,
         output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.runs as runs

    as_json = _check_output(output)
    from ..models.mirror import after_runs

    ids = runs.sync(store or None)
    if as_json:
        _json({"imported": ids})
    else:
        _info(f"fair: {len(ids)} run{'' if len(ids) == 1 else 's'} imported" + (": " + " ".join(ids) if ids else ""))
    after_runs(runs.get(i) for i in ids)  # what their pods registered and promoted, into MLflow


@app.command(help="What changed between run A and run B: code files, requirements, params, base image, metrics.")
def diff(a: Annotated[str, typer.Argument(help="the older run id")],
         b: Annotated[str, typer.Argument(help="the newer run id")],
         output: Annotated[str, OUTPUT] = "text") -> None:
    import fairing.runs as runs
    from .compare import lines

    as_json = _check_output(output)
    d = runs.diff(a, b)
    if as_json:
        _json(d)
        return
    for line in lines(d):
        _out(line)


@app.command(help="Run a recorded training run's image again (same digest, same params) as a new run.")
def rerun(run_id: Annotated[str, typer.Argument(help="run id to run again")],
          detach: Annotated[bool, typer.Option("--detach", "-d", help="return once deployed, don't wait")] = False,
          timeout: Annotated[Optional[int], typer.Option("--timeout", help="seconds to wait for the workload")] = None,
          output: Annotated[str, OUTPUT] = "text") -> None:
    from .. import pipeline
    from ..progress import Progress
    from .rerun import rerun as do_rerun

    as_json = _check_output(output)
    progress = Progress(enabled=not as_json)
    run, handle = do_rerun(run_id)
    if not as_json:
        _info(f"fair: rerun of {run.doc['rerun_of']} as run {run.id}: {getattr(handle, 'name', '')}")
    status = "Deployed"
    if not detach:
        status = pipeline.wait_for(handle, progress, timeout=timeout, on_log=_info if as_json else _out, run=run)
        if getattr(handle, "mode", None) == "container" and status == "Succeeded":
            handle.delete()  # as `fair train` does: a finished local container is not kept
    if as_json:
        _json({"run_id": run.id, "rerun_of": run.doc["rerun_of"], "name": getattr(handle, "name", None),
               "status": status, "image": run.doc["image"].get("ref")})
    else:
        _info(f"fair: {getattr(handle, 'name', '')} {status} (run {run.id})")

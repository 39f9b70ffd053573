"""`fair tune ENTRY --param ... --objective NAME [--maximize|--minimize] ...`: parsing and printing
only; the run is fairing.tune.api.run. Registered by fairing.cli with the common options."""
# No `from __future__ import annotations`: typer reads the option types from real annotations.
from typing import Annotated, Any, List, Optional

import typer

HELP = ("Tune hyperparameters: build ENTRY once, run trials with --param values on katib, jobs or "
        "local, print the trials and the best one. Metrics are `name=value` lines the code prints.")


def tune_command(
        entry: Annotated[str, typer.Argument(help="a .py file, a directory or a .ipynb notebook")],
        args: Annotated[Optional[List[str]], typer.Argument(help="fixed arguments for the script (after --)")] = None,
        param: Annotated[Optional[List[str]], typer.Option(
            "--param", help="NAME=LOW..HIGH[:log|:int] or NAME=A,B,C (repeatable)")] = None,
        objective: Annotated[Optional[str], typer.Option("--objective", help="the metric to optimise (printed as NAME=VALUE)")] = None,
        maximize: Annotated[bool, typer.Option("--maximize", help="higher is better")] = False,
        minimize: Annotated[bool, typer.Option("--minimize", help="lower is better (the default)")] = False,
        trials: Annotated[int, typer.Option("--trials", help="number of trials")] = 12,
        parallel: Annotated[int, typer.Option("--parallel", help="trials running at once")] = 3,
        algorithm: Annotated[str, typer.Option("--algorithm", help="random, grid, tpe or cmaes")] = "tpe",
        backend: Annotated[Optional[str], typer.Option(
            "--backend", help="katib, jobs or local (default: katib if the cluster has it, jobs with a "
                              "registry and cluster, else local)")] = None,
        max_failed: Annotated[Optional[int], typer.Option("--max-failed", help="stop after more failed trials than this")] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", help="the sampler's random seed (default: a fresh one per run, recorded; the same seed tries the same points)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="experiment name (trials add -N)")] = None,
        plot: Annotated[Optional[str], typer.Option("--plot", help="save the tuning plot here, e.g. tune.png")] = None,
        opts: Any = None) -> None:
    import json
    import sys
    from pathlib import Path

    from ..errors import ConfigError
    from . import api
    from .progress import TrialTable, best_line, table
    from .result import TuneFailed
    from .space import parse_params

    if not param:
        raise ConfigError("no --param given", hint="e.g. --param lr=1e-4..1e-1:log --param layers=1,2,3")
    space = parse_params(param)
    if not objective:
        raise ConfigError("--objective is required", hint="name the metric your code prints, e.g. --objective accuracy")
    if maximize and minimize:
        raise ConfigError("--maximize and --minimize both given", hint="choose one")
    if plot and opts.dry_run:
        raise ConfigError("--plot needs trials; --dry-run runs none", hint="drop --plot or --dry-run")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib", hint="pip install matplotlib (or 'fairing[tune]')") from None
    goal = "maximize" if maximize else "minimize"
    s = opts.settings()
    progress = opts.progress()
    if not Path(entry).exists():
        raise ConfigError(f"{entry} does not exist", hint="pass a .py file, a directory or a .ipynb notebook")
    out = api.run(entry, space, settings=s, objective=objective, goal=goal, trials=trials,
                  parallel=parallel, algorithm=algorithm, backend=backend, max_failed=max_failed, seed=seed,
                  name=name, args=list(args) if args else None, progress=progress,
                  table=TrialTable(progress.enabled, transient=True),
                  notes=None if opts.json else (lambda m: _info(f"fair: {m}")))
    if isinstance(out, dict):  # dry run
        if opts.json:
            _out(json.dumps(out, indent=2, default=str, sort_keys=True))
            return
        _out(f"# tune: backend {out['backend']}, algorithm {out['algorithm']}, {out['trials']} trials, "
             f"{out['parallel']} in parallel, {out['goal']} {out['objective']}, seed {out['seed']}")
        _out("# search space")
        for n, d in out["space"].items():
            _out(f"#   {n}: {d}")
        if out.get("example_params"):
            _out("# trial template, shown with example parameters: "
                 + ", ".join(f"{k}={v}" for k, v in out["example_params"].items()))
        _out("# build plan")
        build = {k: v for k, v in (out.get("build") or {}).items() if k != "dockerfile"}
        _out(_yaml([build]).rstrip())
        _out("---")
        _out(_yaml(out["manifests"]).rstrip())
        return
    if plot and out.finished_trials:
        out.plot(plot)
    if opts.json:
        _out(json.dumps(out.as_dict(), indent=2, default=str, sort_keys=True))
    else:
        from rich.console import Console

        Console(file=sys.stdout, highlight=False, width=max(100, Console().width)).print(table(out))
        _out(best_line(out))
        _out(f"image: {out.image}")
        _out(f"seed: {out.seed} (--seed {out.seed} tries the same points again)")
        if plot and out.finished_trials:
            _out(f"plot: {plot}")
    if out.status == "Failed":
        raise TuneFailed(out.reason or "tuning failed", hint="see the trials above; fix the failing trial "
                         "or raise --max-failed", result=out)


from ..messages import info as _info, out as _out  # noqa: E402 - the CLI's one line writer


def _yaml(docs: list) -> str:
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)

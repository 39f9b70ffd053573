"""`fairing.tune(...)`: build once, run trials, return a TuneResult. The CLI's `fair tune` calls
`run()` here too.

    result = fairing.tune(train, params={"lr": fairing.loguniform(1e-4, 1e-1),
                                         "layers": fairing.choice([1, 2, 3])},
                          objective="accuracy", goal="maximize", trials=12, parallel=3, algorithm="tpe")
    result.best.params; result.plot()"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError
from .result import TuneResult

GOALS = ("maximize", "minimize")


def check_objective(objective: Any, goal: Any) -> None:
    if not isinstance(objective, str) or not re.fullmatch(r"[\w-]+", objective or ""):
        raise ConfigError(f"invalid objective metric name {objective!r}",
                          hint="name the metric your code prints as NAME=VALUE, e.g. objective='accuracy'")
    if goal not in GOALS:
        raise ConfigError(f"goal must be 'maximize' or 'minimize', not {goal!r}", hint="e.g. goal='maximize'")


def katib_probe(settings: Any) -> Callable[[], bool]:
    """Does the cluster serve Katib's Experiment kind? (Asked only when no backend was chosen.)"""

    def probe() -> bool:
        from ..kube.client import Kube, resource_for

        try:
            kube = Kube(settings.kubeconfig, settings.context, settings.namespace)
            return kube.group_version_served(resource_for("kubeflow.org/v1beta1", "Experiment"))
        except Exception:  # noqa: BLE001 - an unreachable cluster fails later, with its own message
            return False

    return probe


def run(entry: Any, params: Mapping[str, Any], *, settings: Any, objective: str, goal: str = "maximize",
        trials: int = 12, parallel: int = 3, algorithm: str = "tpe", backend: str | None = None,
        max_failed: int | None = None, seed: int | None = None, name: str | None = None,
        args: Sequence[str] | None = None, mutators: Sequence[Callable] = (), progress: Any = None,
        table: Any = None, notes: Callable[[str], None] | None = None) -> TuneResult | dict:
    """The whole tuning run for the CLI and the API. Dry run (settings.dry_run): returns the plan
    dict (search space, build plan, trial manifests or the Katib Experiment) and builds nothing."""
    from . import build as build_mod
    from .driver import ALGORITHMS, check_counts
    from .space import check_space, describe_space

    check_objective(objective, goal)
    mutators = tuple(mutators or ())
    for m in mutators:
        if not callable(m):
            raise ConfigError(f"pod option {m!r} is not callable", hint="use the functions in fairing.deployers.pod")
    check_counts(trials, parallel, max_failed)
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}", hint=f"choose one of: {', '.join(ALGORITHMS)}")
    space = check_space(params)
    dry = bool(settings.dry_run)
    backend, note = build_mod.choose_backend(backend, settings, probe=None if dry else katib_probe(settings))
    if note and notes:
        notes(note)
    if seed is None:
        # A fresh seed per run, recorded: a second run samples new points (Katib's suggestion
        # would otherwise use a constant seed), and `seed=` repeats a run's points exactly.
        import secrets

        seed = secrets.randbelow(2**31 - 1)
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, not {seed!r}", hint="e.g. seed=42 (--seed 42)")
    if backend != "katib":
        from .driver import make_sampler

        make_sampler(algorithm, space, trials, parallel, seed)  # optuna/cmaes missing: fail before building
    exp_name = build_mod.experiment_name(entry, name)
    p = build_mod.plan(entry, settings, space, objective, backend, name=exp_name,
                       args=list(args) if args else None)
    is_fn = build_mod.is_function(entry)
    from ..progress import Progress

    progress = progress or Progress()
    common = {"backend": backend, "algorithm": algorithm, "objective": objective, "goal": goal,
              "trials": trials, "parallel": parallel, "max_failed": max_failed, "seed": seed,
              "space": describe_space(space), "name": exp_name}
    if dry:
        if backend == "katib":
            from . import katib

            planned = build_mod.dry_run(p, {n: "" for n in space}, progress, with_args=not is_fn,
                                        texts=katib.placeholders(space), mutators=mutators, per_job=True)
            # The trial Job's template goes into the Experiment; what the trials' pods need made
            # beforehand (the outputs Secret) is printed before it, as a real run creates it first.
            job = next(m for m in planned["manifests"] if m.get("kind") == "Job")
            exp = katib.experiment(exp_name, job, space, objective=objective, goal=goal, algorithm=algorithm,
                                   trials=trials, parallel=parallel, max_failed=max_failed,
                                   with_args=not is_fn, seed=seed)
            before = [m for m in planned["manifests"] if m is not job]
            return {**common, "mode": planned["mode"], "build": planned["build"], "manifests": [*before, exp]}
        example = {n: _example(v) for n, v in space.items()}
        planned = build_mod.dry_run(p, example, progress, with_args=not is_fn, name=f"{exp_name}-0",
                                    mutators=mutators)
        return {**common, "mode": planned["mode"], "build": planned["build"], "example_params": example,
                "manifests": planned["manifests"]}

    from .records import TuneRecorder, chain

    rec = TuneRecorder(entry, p, settings, common)
    result = None
    try:
        image = build_mod.build_once(p, progress, mutators)
        rec.built(image.context, image, p)
        result = TuneResult(objective=objective, goal=goal, space=space, image=image.ref, backend=backend,
                            algorithm=algorithm, experiment=exp_name, run=rec.id, seed=seed)
        from .progress import TrialTable

        view = table if table is not None else TrialTable(progress.enabled)
        on_update = chain(rec.update, view.update)
        from .. import pipeline
        from ..outputs import store as ostore

        # Where every trial keeps its outputs: chosen once (a loopback registry's note said once).
        trial_store, why_not = ostore.for_run(settings.outputs, image.ref, on_cluster=p.on_cluster)
        if why_not:
            progress.note(why_not)
        if backend == "katib":
            from ..outputs.wire import job_run_id
            from . import katib

            # Katib makes each trial's Job, named after the trial: its pod names its run after the
            # Job (as a CronJob's runs do), and the trial's record takes the same id.
            rec.trial_ids = lambda t: job_run_id(t.name)
            rec.trial_outputs = trial_store.text if trial_store is not None else None

            def configure(d):
                pipeline.keep_outputs(p, d, rec.run, image, None, save=False, store=trial_store, per_job=True)
                # The store is the trials' (their records say so): the tuning run keeps no files.
                rec.run.doc["trial_outputs"] = rec.run.doc.pop("outputs", None)

            with view:
                katib.run(p, image, result, trials=trials, parallel=parallel, max_failed=max_failed,
                          with_args=not is_fn, timeout=settings.timeout, on_update=on_update,
                          mutators=mutators, tag=rec.run, configure=configure)
        else:
            from ..runs import hook
            from .driver import DeployerRunner, run_study

            def deployer_for(trial):
                d = build_mod.trial_deployer(p, trial.name, trial.params, with_args=not is_fn, mutators=mutators)
                # The trial's run id on its workload (labels, FAIRING_RUN_ID): its record was made
                # when the driver first reported it, before this runs.
                hook.tag(d, rec.trials[trial.name], image)
                # Each trial keeps its outputs like any run, so best:TUNE_RUN_ID has files to serve.
                pipeline.keep_outputs(p, d, rec.trials[trial.name], image, None, save=False, store=trial_store)
                return d

            def trial_ended(trial, handle):
                # In the runner's thread: the record is saved by the calling thread when the
                # trial is reported (TuneRecorder.update), not here.
                hook.settle_outputs(handle, rec.trials[trial.name], persist=False)

            runner = DeployerRunner(deployer_for, image, timeout=settings.timeout, objective=objective,
                                    on_ended=trial_ended)
            with view:
                run_study(result, runner, name=exp_name, trials=trials, parallel=parallel,
                          max_failed=max_failed, seed=seed, on_update=on_update)
    except BaseException as e:
        rec.fail(e, result)
        raise
    rec.finish(result)
    return result


def _example(p: Any) -> Any:
    """A representative value for the dry run's example trial (the middle of the range)."""
    grid = p.grid(3)
    return grid[len(grid) // 2]


# Settings a tune() call may set, as TrainJob takes them.
_SETTING_ARGS = ("base_image", "registry", "builder", "image_name", "namespace", "kubeconfig", "context",
                 "requirements", "env", "cpu", "memory", "gpus", "local_mode", "docker_host", "timeout",
                 "preprocessor", "deployer", "outputs")


def tune(entry: Any, params: Mapping[str, Any], *, objective: str, goal: str = "maximize", trials: int = 12,
         parallel: int = 3, algorithm: str = "tpe", backend: str | None = None, max_failed: int | None = None,
         seed: int | None = None, name: str | None = None, args: Sequence[str] | None = None,
         mutators: Sequence[Callable] = (), profile: str | None = None, progress: bool | None = None, dry_run: bool = False,
         plot: str | None = None, **settings: Any) -> TuneResult | dict:
    """Tune `entry` (a function returning a dict of metrics, a .py script, a directory or a
    notebook printing `name=value` lines) over `params`. The image is built once; `trials` trials
    run `parallel` at a time on `backend` ("katib", "jobs" or "local"; default: katib when the
    cluster has it, jobs with a registry and a cluster, else local). Settings (registry,
    base_image, namespace, requirements, ...) as for TrainJob; `mutators` are pod options
    (fairing.deployers.pod) for every trial. Returns a TuneResult; raises
    TuneFailed (with `.result`) when more than `max_failed` trials failed or none finished.
    With dry_run=True, returns the plan (search space, build plan, manifests) instead."""
    from .. import settings as settings_mod
    from ..progress import Progress
    from .driver import raise_if_failed

    unknown = sorted(set(settings) - set(_SETTING_ARGS))
    if unknown:
        raise ConfigError(f"unknown tune() argument{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
                          hint="settings: " + ", ".join(_SETTING_ARGS))
    s = settings_mod.load({**settings, "dry_run": dry_run or None}, profile=profile, cli_source="argument")
    out = run(entry, params, settings=s, objective=objective, goal=goal, trials=trials, parallel=parallel,
              algorithm=algorithm, backend=backend, max_failed=max_failed, seed=seed, name=name, args=args,
              mutators=mutators, progress=Progress(enabled=progress))
    if isinstance(out, dict):
        return out
    if plot and out.finished_trials:
        out.plot(plot)
    return raise_if_failed(out)

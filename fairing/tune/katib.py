"""The `katib` backend: one kubeflow.org/v1beta1 Experiment; Katib's controllers suggest, run and
collect the trials, fairing renders the Experiment and watches it.

- parameters: from the search space (double / int / categorical feasible spaces);
- objective: type, objectiveMetricName, metricStrategies "latest" (the same rule the built-in
  driver uses: the last printed value counts);
- algorithm: algorithmName (random, grid, tpe, cmaes);
- trialTemplate.trialSpec: the batch Job the `job` deployer renders for the one built image, its
  main container given `--name ${trialParameters.name}` args and FAIRING_PARAM_* env;
- metricsCollectorSpec: StdOut (`name=value` lines, what fairing.report prints);
- maxTrialCount / parallelTrialCount / maxFailedTrialCount;
- trialTemplate.retain: trial Jobs stay until the Experiment is deleted, so a failed trial's pod
  says why (OOMKilled, ... or the last line it printed, from the collector sidecar's log), before
  Katib's generic reason.
Waiting is by watch on the Experiment and its Trials; the best trial is Katib's currentOptimalTrial."""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Mapping

from ..errors import ConfigError, DeployError
from .result import FAILED, RUNNING, STOPPED, SUCCEEDED, Trial, TuneResult
from .space import Param

log = logging.getLogger(__name__)
API_VERSION = "kubeflow.org/v1beta1"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
TRIAL_LABEL = "katib.kubeflow.org/trial"
# Katib's own algorithm names for ours (the goptuna suggestion service serves random, tpe, cmaes;
# grid needs Katib's optuna suggestion image). goptuna (v0.19) samples a logUniform range uniformly.
ALGORITHM_NAMES = {"random": "random", "grid": "grid", "tpe": "tpe", "cmaes": "cmaes"}
SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# Katib's StdOut collector redirects the training container's output into a file and logs each line
# from its own sidecar (klog: "I1129 03:12:00.123456       1 main.go:143] <line>"). The collector's
# own messages start with these.
COLLECTOR = "metrics-logger-and-collector"
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.-]+:\d+\] ?(.*)$")
_COLLECTOR_SAYS = ("Trial Name:", "Metrics reported", "Trial status is", "Training container is early stopped",
                   "Failed to", "GetMainProcesses", "Could not watch", "Metrics file")
KATIB_HINT = "install Katib (kubeflow/katib manifests), or use --backend jobs (no Katib needed)"


# Katib's goptuna suggestion (random, tpe, cmaes) seeds its sampler from the `random_state`
# algorithm setting, and with none from a constant: every Experiment would try the same points in
# the same order. fairing sends a fresh seed unless one is given (and records it). grid is exact:
# its points are fixed, so it takes none.
SEEDED = ("random", "tpe", "cmaes")


def algorithm_spec(algorithm: str, seed: int | None) -> dict:
    spec: dict[str, Any] = {"algorithmName": ALGORITHM_NAMES[algorithm]}
    if seed is not None and algorithm in SEEDED:
        spec["algorithmSettings"] = [{"name": "random_state", "value": str(int(seed))}]
    return spec


def placeholders(space: Mapping[str, Param]) -> dict[str, str]:
    """The text Katib substitutes per trial: ${trialParameters.NAME}."""
    return {n: "${trialParameters.%s}" % n for n in space}


def experiment(name: str, job: Mapping[str, Any], space: Mapping[str, Param], *, objective: str, goal: str,
               algorithm: str, trials: int, parallel: int, max_failed: int | None, with_args: bool = True,
               namespace: str | None = None, seed: int | None = None) -> dict:
    """The Experiment manifest. `job` is the rendered trial Job (its main container already holds
    the ${trialParameters.*} placeholders)."""
    import copy

    if algorithm not in ALGORITHM_NAMES:
        raise ConfigError(f"unknown algorithm {algorithm!r}", hint=f"choose one of: {', '.join(ALGORITHM_NAMES)}")
    parameters = [{"name": n, **p.katib()} for n, p in space.items()]
    if algorithm == "grid":
        parameters, trials = grid_parameters(space, trials)
        if parallel > 1:
            import warnings

            # Seen on the rig: with 2 trials at a time Katib's optuna grid repeated a point and
            # skipped another in 2 of 5 runs; one at a time, never. The built-in driver's grid is exact.
            warnings.warn(f"Katib's grid suggestion can repeat a point when trials run in parallel ({parallel} at a time); "
                          "use parallel=1 (--parallel 1) or the jobs backend for an exact grid", stacklevel=2)
    trial_spec = copy.deepcopy(dict(job))
    meta = trial_spec.get("metadata") or {}
    ns = namespace or meta.get("namespace")
    # Katib names each trial's Job (after the Trial) and puts it in the Experiment's namespace.
    trial_spec["metadata"] = {k: v for k, v in meta.items() if k in ("labels", "annotations") and v}
    spec: dict[str, Any] = {
        "objective": {"type": goal, "objectiveMetricName": objective,
                      "metricStrategies": [{"name": objective, "value": "latest"}]},
        "algorithm": algorithm_spec(algorithm, seed),
        "maxTrialCount": trials,
        "parallelTrialCount": parallel,
        "parameters": parameters,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "trialTemplate": {
            "primaryContainerName": "main",
            # Keep each trial's Job and pods until the Experiment is deleted: Katib deletes them as
            # the trial completes otherwise, and with them the output that says why one failed
            # (and `kubectl logs` for every trial).
            "retain": True,
            "successCondition": SUCCESS_CONDITION,
            "failureCondition": FAILURE_CONDITION,
            "trialParameters": [{"name": n, "reference": n,
                                 "description": f"{p.describe()}: --{n} and FAIRING_PARAM_{n.upper()}" if with_args
                                 else f"{p.describe()}: FAIRING_PARAM_{n.upper()}"} for n, p in space.items()],
            "trialSpec": trial_spec,
        },
    }
    if max_failed is not None:
        # Katib fails the Experiment once failed trials *reach* maxFailedTrialCount
        # (experiment/util/status_util.go); max_failed tolerates that many, like the built-in driver.
        spec["maxFailedTrialCount"] = max_failed + 1
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "fairing"}}
    if ns:
        metadata["namespace"] = ns
    return {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": metadata, "spec": spec}


def grid_parameters(space: Mapping[str, Param], trials: int) -> tuple[list[dict], int]:
    """Katib's grid (its optuna suggestion) needs a step for every double and refuses more trials
    than grid points. So each range becomes the categorical list of the points the built-in driver
    would try (log ranges too), choices stay, and the trial count is capped at the grid's size:
    the same grid on every backend."""
    from .driver import grid_space, grid_size
    from .space import Choice, katib_number

    values = grid_space(space, trials)
    out = []
    for n, p in space.items():
        if isinstance(p, Choice):
            out.append({"name": n, **p.katib()})
        else:
            out.append({"name": n, "parameterType": "categorical",
                        "feasibleSpace": {"list": [katib_number(v) for v in values[n]]}})
    return out, min(trials, grid_size(space, trials))


def _conditions(obj: Mapping[str, Any]) -> dict[str, dict]:
    return {c.get("type"): c for c in ((obj.get("status") or {}).get("conditions") or [])
            if c.get("status") == "True"}


def experiment_state(obj: Mapping[str, Any]) -> str:
    conds = _conditions(obj)
    if "Succeeded" in conds:
        return "Succeeded"
    if "Failed" in conds:
        return "Failed"
    return "Running"


def _metric(observation: Mapping[str, Any] | None, name: str) -> float | None:
    for m in (observation or {}).get("metrics") or []:
        if m.get("name") == name:
            for key in ("latest", "max", "min"):
                try:
                    return float(m[key])
                except (KeyError, TypeError, ValueError):
                    continue
    return None


def _metrics(observation: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for m in (observation or {}).get("metrics") or []:
        try:
            out[m["name"]] = float(m.get("latest"))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _params(assignments: Any, space: Mapping[str, Param]) -> dict:
    out = {}
    for a in assignments or []:
        n, text = a.get("name"), a.get("value")
        p = space.get(n)
        try:
            out[n] = p.parse(str(text)) if p is not None else text
        except ValueError:
            out[n] = text
    return out


def update_trial(t: Trial, obj: Mapping[str, Any], result: TuneResult) -> None:
    """A Trial object's state, params and metrics onto our Trial."""
    st = obj.get("status") or {}
    t.params = _params((obj.get("spec") or {}).get("parameterAssignments"), result.space) or t.params
    t.metrics = _metrics(st.get("observation"))
    t.value = _metric(st.get("observation"), result.objective)
    conds = _conditions(obj)
    start, end = st.get("startTime"), st.get("completionTime")
    if start and end:
        t.seconds = _seconds(start, end)
    if "Succeeded" in conds:
        t.state = SUCCEEDED
    elif "MetricsUnavailable" in conds:
        from .metrics import missing_metric_message

        t.state, t.error = FAILED, missing_metric_message(result.objective)
    elif "Failed" in conds or "EarlyStopped" in conds:
        c = conds.get("Failed") or conds.get("EarlyStopped")
        t.state, t.error = (FAILED if "Failed" in conds else STOPPED), c.get("message") or c.get("reason")
    elif "Killed" in conds:
        t.state, t.error = STOPPED, "killed by Katib"
    else:
        t.state = RUNNING


def training_output(log: str) -> list[str]:
    """The training code's lines from the collector sidecar's log (klog headers and the
    collector's own messages removed)."""
    out = []
    for line in log.splitlines():
        m = _KLOG.match(line)
        if m and line[0] == "I" and not m.group(1).startswith(_COLLECTOR_SAYS):
            out.append(m.group(1))
    return out


def why_failed(kube: Any, namespace: str, trial: str) -> str:
    """Why a trial failed, from its newest pod, with the translation Jobs get: a pod-level cause
    (OOMKilled, eviction, an image that cannot be pulled) in its own sentence; otherwise the last
    line the trial printed (its exception), read from the collector sidecar that holds its output.
    "" when the pod or its log is gone. Katib's own reason is a generic Job message, kept after it."""
    from ..kube.logs import read_log
    from ..kube.reasons import diagnose_pod

    try:
        pods = kube.list("v1", "Pod", namespace, label_selector=f"job-name={trial}").get("items", [])
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp", ""))
        if not pods:
            return ""
        d = diagnose_pod(pods[-1], "main")
        if d is not None and d.reason != "Error":
            return d.message
        text = "\n".join(read_log(kube, pods[-1]["metadata"]["name"], namespace, COLLECTOR))
    except Exception as e:  # noqa: BLE001 - an explanation, not the outcome: never fail the tuning for it
        log.debug("could not tell why trial %s failed: %s", trial, e)
        return ""
    lines = [x.strip() for x in training_output(text) if x.strip()]
    if lines:
        return lines[-1][:300]
    return d.message if d is not None else ""


def _seconds(a: str, b: str) -> float | None:
    from datetime import datetime

    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.strptime(b, fmt) - datetime.strptime(a, fmt)).total_seconds()
    except ValueError:
        return None


def run(p: Any, image: Any, result: TuneResult, *, trials: int, parallel: int, max_failed: int | None,
        with_args: bool, timeout: float | None = None,
        on_update: Callable[[TuneResult, Trial | None], None] | None = None, mutators: tuple = (),
        tag: Any = None, configure: Callable[[Any], None] | None = None) -> TuneResult:
    """Create the Experiment, follow it and its Trials by watch until it ends, read the optimum.
    Ctrl-C, or a trial pod that can never start, deletes the Experiment (its Trials, Jobs and pods follow). `tag`: the tuning
    run's record, whose id labels the trial Jobs. `configure(deployer)`: last word on the trial
    Job's deployer before it is rendered (where the trials keep their outputs)."""
    from ..kube.client import CRDNotInstalled
    from ..kube.wait import Mux, Stream, WaitTimeout
    from .build import trial_deployer

    update = on_update or (lambda r, t: None)
    deployer = trial_deployer(p, result.experiment, {n: "" for n in result.space}, with_args=with_args,
                              texts=placeholders(result.space), mutators=mutators)
    if tag is not None:  # the tuning run's id on the Experiment's trial Jobs (Katib makes them)
        from ..runs import hook

        hook.tag(deployer, tag, image)
    if configure is not None:
        configure(deployer)
    job = deployer.render(image)[0]
    kube = deployer.kube
    ns = deployer.target_namespace()
    # Katib creates the trial Jobs; what their pods need beforehand (a pull Secret, the outputs
    # store's credentials) is made here, and owned by the Experiment once it exists.
    deployer.prepare(kube, ns, deployer.templates_of(job))
    exp = experiment(result.experiment, job, result.space, objective=result.objective, goal=result.goal,
                     algorithm=result.algorithm, trials=trials, parallel=parallel, max_failed=max_failed,
                     with_args=with_args, namespace=ns, seed=result.seed)
    try:
        created = kube.create(exp, ns)
    except CRDNotInstalled:
        deployer.discard(kube, ns)
        raise DeployError(f"the cluster has no Katib (no {API_VERSION} Experiment kind)", hint=KATIB_HINT) from None
    except BaseException:
        deployer.discard(kube, ns)
        raise
    deployer.created(kube, ns, created)
    by_name: dict[str, Trial] = {}
    printed: dict[str, str] = {}  # failed trial -> why, from its pod (read once)

    def stuck(pod: dict) -> None:
        """A trial pod that can never start (no such image, a missing Secret): Katib would leave the
        trial Running for ever, so fail now with the sentence a Job gets (the Experiment is deleted)."""
        from ..kube.reasons import NEVER_STARTS, diagnose_pod

        # Katib does not act on these (the trial's Job never fails), and waiting will not fix them.
        trial = ((pod.get("metadata") or {}).get("labels") or {}).get(TRIAL_LABEL, "")
        if not trial.startswith(f"{result.experiment}-"):
            return
        d = diagnose_pod(pod, "main")
        if d is not None and d.fatal and d.reason in NEVER_STARTS:
            raise DeployError(f"trial {trial} cannot start: {d.message}", hint=d.hint)

    def explain(t: Trial) -> None:
        if t.state == FAILED:
            if t.name not in printed:
                printed[t.name] = why_failed(kube, ns, t.name)
            if printed[t.name] and printed[t.name] not in (t.error or ""):
                t.error = f"{printed[t.name]} ({t.error})" if t.error else printed[t.name]

    deadline = None if timeout is None else time.monotonic() + timeout
    obj = created
    try:
        streams = [Stream("experiment", API_VERSION, "Experiment", name=result.experiment,
                          resource_version=created["metadata"].get("resourceVersion")),
                   Stream("trials", API_VERSION, "Trial", label_selector=f"{EXPERIMENT_LABEL}={result.experiment}"),
                   # Katib labels trial pods with their trial only: filtered by name below.
                   Stream("pods", "v1", "Pod", label_selector=TRIAL_LABEL)]
        with Mux(kube, ns, streams) as mux:
            for key, etype, ev in mux.events(deadline):
                if etype == "TIMEOUT":
                    raise WaitTimeout(f"Experiment {result.experiment} did not finish within {timeout:g}s",
                                      hint=f"it keeps running: kubectl get experiment -n {ns} {result.experiment}")
                if key == "experiment":
                    if etype == "DELETED":
                        raise DeployError(f"Experiment {result.experiment} was deleted while waiting for it",
                                          hint="run the tuning again")
                    obj = ev
                    if experiment_state(obj) != "Running":
                        break
                elif key == "pods" and etype != "DELETED":
                    stuck(ev)
                elif key == "trials" and etype != "DELETED":
                    tname = ev["metadata"]["name"]
                    t = by_name.get(tname)
                    if t is None:
                        t = Trial(number=len(result.trials), name=tname, params={})
                        by_name[tname] = t
                        result.trials.append(t)
                    update_trial(t, ev, result)
                    explain(t)
                    update(result, t)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, DeployError)) and not isinstance(e, WaitTimeout):
            try:
                # Background: the Experiment goes at once and the garbage collector removes its
                # Trials, Jobs and pods. Foreground waited for ever on the rig when Katib created
                # trials after the deletion began (they were never collected).
                kube.delete(API_VERSION, "Experiment", result.experiment, ns, propagation="Background")
            except Exception:  # noqa: BLE001 - the interrupt is what the user needs to see
                pass
        result.status, result.reason = "Interrupted", str(e) or "interrupted"
        raise
    # The final word on every trial (a last status update may race the Experiment's condition).
    for item in kube.list(API_VERSION, "Trial", ns, label_selector=f"{EXPERIMENT_LABEL}={result.experiment}").get("items", []):
        t = by_name.get(item["metadata"]["name"])
        if t is None:
            t = Trial(number=len(result.trials), name=item["metadata"]["name"], params={})
            by_name[t.name] = t
            result.trials.append(t)
        update_trial(t, item, result)
        explain(t)
        update(result, t)  # a trial's end seen only here is recorded too
    obj = kube.get(API_VERSION, "Experiment", result.experiment, ns) or obj
    optimal = (obj.get("status") or {}).get("currentOptimalTrial") or {}
    result.optimal_trial = optimal.get("bestTrialName") or None
    state = experiment_state(obj)
    result.status = state
    if state != "Running":
        deployer.discard(kube, ns)  # no trial will write outputs again: their credentials go
    if state == "Failed":
        c = _conditions(obj).get("Failed") or {}
        result.reason = c.get("message") or "the Experiment failed"
    update(result, None)
    return result

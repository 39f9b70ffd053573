"""batch/v1 Job: one run of the workload (or `completions` runs, `parallelism` at a time).

    JobDeployer(namespace="team", backoff_limit=0, ttl_seconds_after_finished=3600,
                active_deadline_seconds=7200, completions=4, parallelism=2,
                mutators=[pod.cpu("2"), pod.memory("8Gi")]).deploy(image)
"""
from __future__ import annotations

import secrets

from ...context import ATTACH_WAIT_ENV, EXIT_MARK_ENV
from ...errors import ConfigError
from .. import pod as podlib
from ..base import nonneg_int
from .base import KubeDeployer, finished_outcome

JOB_OPTIONS = ("backoff_limit", "ttl_seconds_after_finished", "active_deadline_seconds", "completions",
               "parallelism", "completion_mode")


def job_spec(template: dict, opts: dict) -> dict:
    spec: dict = {"backoffLimit": opts.get("backoff_limit", 0)}
    for key, field in (("ttl_seconds_after_finished", "ttlSecondsAfterFinished"),
                       ("active_deadline_seconds", "activeDeadlineSeconds"),
                       ("completions", "completions"), ("parallelism", "parallelism")):
        if opts.get(key) is not None:
            spec[field] = opts[key]
    if opts.get("completion_mode"):
        spec["completionMode"] = opts["completion_mode"]
    spec["template"] = template
    return spec


def check_job_options(opts: dict) -> None:
    # backoffLimit defaults to 0 rather than Kubernetes' 6: a training script that failed usually
    # fails the same way again, and six retries hide the first error for a long time.
    nonneg_int(opts.get("backoff_limit", 0), "backoff_limit")
    nonneg_int(opts.get("ttl_seconds_after_finished"), "ttl_seconds_after_finished")
    nonneg_int(opts.get("active_deadline_seconds"), "active_deadline_seconds", minimum=1)
    c = nonneg_int(opts.get("completions"), "completions", minimum=1)
    p = nonneg_int(opts.get("parallelism"), "parallelism", minimum=1)
    if c is not None and p is not None and p > c:
        raise ConfigError(f"parallelism {p} is more than completions {c}",
                          hint="parallelism is how many of the completions run at once")
    mode = opts.get("completion_mode")
    if mode not in (None, "NonIndexed", "Indexed"):
        raise ConfigError(f"invalid completion_mode {mode!r}", hint="use 'NonIndexed' or 'Indexed'")


def job_state(obj: dict) -> str:
    if done := finished_outcome(obj):
        return done
    st = obj.get("status") or {}
    # "active" counts pods that exist, scheduled or not; "ready" ones are really running.
    if st.get("ready") or (st.get("active") and "ready" not in st):
        return "Running"
    return "Pending"


def _ended(pod: dict) -> str | None:
    """"Succeeded"/"Failed" for a pod whose attempt is over, else None. The containers'
    terminated states say it first: the kubelet reports them one status update (~1 s) before it
    moves the pod's phase."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None  # going away (deleted, or the Job's own cleanup): not an attempt's outcome
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase in ("Succeeded", "Failed"):
        return phase
    if (pod.get("spec") or {}).get("restartPolicy", "Always") != "Never":
        return None  # a failed container restarts in place: only the phase is final
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    states = {cs.get("name"): (cs.get("state") or {}).get("terminated") for cs in status.get("containerStatuses") or []}
    if not names or any(states.get(n) is None for n in names):
        return None  # a regular container still runs (native sidecars, init containers, don't count)
    return "Succeeded" if all(states[n].get("exitCode") == 0 for n in names) else "Failed"


def one_pod_job(job: dict | None) -> bool:
    """A Job whose outcome its one pod's end decides (one completion, no parallelism, no rules
    beyond backoffLimit): the kind `job_pod_verdict` and the shim's exit line apply to."""
    spec = (job or {}).get("spec") or {}
    return job is not None and (spec.get("completions") or 1) == 1 and (spec.get("parallelism") or 1) == 1 \
        and not spec.get("suspend") and not spec.get("podFailurePolicy") \
        and spec.get("backoffLimitPerIndex") is None and not spec.get("successPolicy") \
        and spec.get("completionMode") != "Indexed"


def exit_mark(job: dict | None) -> str | None:
    """The nonce of the outputs shim's exit line (FAIRING_EXIT:<nonce>:<code>) in this Job's pods,
    when the Job is one its one pod decides (see KubeHandle.wait): else None."""
    if not one_pod_job(job):
        return None
    containers = (((job or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    if len(containers) != 1 or containers[0].get("name") != podlib.MAIN:
        return None  # another regular container must end too before the pod does (job_pod_verdict)
    return next((e.get("value") for e in containers[0].get("env") or [] if e.get("name") == EXIT_MARK_ENV), None)


def attaches(job: dict | None) -> bool:
    """This Job's shim waits for its client's attach session (see fairing.kube.attach): a Job one
    pod decides, with the exit line, stdin and FAIRING_ATTACH_WAIT on its main container."""
    if not exit_mark(job):
        return False
    main = job["spec"]["template"]["spec"]["containers"][0]
    return bool(main.get("stdin")) and any(e.get("name") == ATTACH_WAIT_ENV for e in main.get("env") or [])


def runs_the_shim(container: dict) -> bool:
    """The container's command is fairing's outputs shim (image_runtime/outputs.py), which alone
    knows to wait for "go" and keeps its stdin from the command."""
    return any(str(a).endswith("outputs.py") for a in [*(container.get("command") or []),
                                                        *(container.get("args") or [])][:3])


def job_pod_verdict(job: dict, pods: list[dict]) -> str | None:
    """How a one-pod Job ended, read from its pods before the job controller writes its Complete
    or Failed condition (the controller batches pod updates, ~1-2 s later): "Succeeded" once a pod
    succeeded; "Failed" once more pods failed than `backoffLimit` allows retries. A Job that will
    retry (a failed pod within its backoff limit) is not finished: None. So is any Job whose
    outcome the controller decides by rules beyond that (several completions or parallel pods, a
    pod failure policy, per-index backoff, a success policy, suspended): their verdict is the
    Job's own condition, read by `job_state`."""
    spec = job.get("spec") or {}
    if not one_pod_job(job):
        return None
    # Only this Job's own pods: a selector by run id can match another Job's (a CronJob's runs
    # share one), whose end says nothing about this one.
    uid = (job.get("metadata") or {}).get("uid")
    if uid:
        pods = [p for p in pods if any(o.get("uid") == uid for o in (p.get("metadata") or {}).get("ownerReferences") or [])]
    ended = [_ended(p) for p in pods]
    if "Succeeded" in ended:
        return "Succeeded"
    limit = spec.get("backoffLimit")
    limit = 6 if limit is None else limit  # the API's default
    if ended.count("Failed") > limit:
        return "Failed"
    return None


def as_failed(job: dict, pods: list[dict]) -> tuple[dict, list[dict]]:
    """The Job and its pods as the controllers will write them once `job_pod_verdict` said
    "Failed" from the containers' terminated states: the pods' phase moved, the Job's failed count
    and its Failed condition (BackoffLimitExceeded) set. What `diagnose_job` explains, so the
    message is the one the Job's own condition would give, a second earlier."""
    done = []
    for p in pods:
        v = _ended(p)
        st = p.get("status") or {}
        done.append({**p, "status": {**st, "phase": v}} if v and st.get("phase") != v else p)
    status = job.get("status") or {}
    cond = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}
    failed = sum(1 for p in done if _ended(p) == "Failed")
    return {**job, "status": {**status, "failed": max(failed, status.get("failed") or 0),
                              "conditions": [*(status.get("conditions") or []), cond]}}, done


class JobDeployer(KubeDeployer):
    api_version = "batch/v1"
    kind = "Job"
    deployer_name = "job"
    queue_suspend = ("spec",)
    tune_backends = ("jobs", "katib")  # Katib's trialSpec is this deployer's Job manifest
    kind_options = JOB_OPTIONS

    # Set (True) by the pipeline when the client that creates the Job follows its log
    # (fairing.pipeline.execute waiting with on_log): the Job then waits for that client's attach
    # session (fairing.kube.attach) if this account may attach, so its first lines come at once.
    follow = False
    _attach_ok: bool | None = None  # the account's answer, asked on deploy (None: a dry run's render)

    def configure(self, **opts) -> None:
        check_job_options(opts)

    def deploy(self, image):
        if self.follow:  # a server-side dry run too: it shows what the real run would apply
            from ...kube import attach

            self._attach_ok = attach.allowed(self.kube, self.target_namespace())
        return super().deploy(image)

    def build(self, name, namespace, meta, template) -> dict:
        template.setdefault("spec", {})["restartPolicy"] = "Never"
        # A fresh nonce for the outputs shim's exit line (fairing.context.exit_line): the client
        # that reads it in the log ends its wait then. An image without the shim never says it.
        main = podlib.find_container(template, podlib.MAIN)
        main["env"] = [*(e for e in main.get("env") or [] if e.get("name") != EXIT_MARK_ENV),
                       {"name": EXIT_MARK_ENV, "value": secrets.token_hex(8)}]
        if self.follow and self._attach_ok is not False and not self.queue and runs_the_shim(main) \
                and one_pod_job({"spec": job_spec(template, self.options)}):
            # The shim waits (briefly) for the client's "go" on stdin: see fairing.kube.attach. Not
            # in a Kueue queue: the Job is created suspended, which the exit line and attach skip.
            from ...kube.attach import ATTACH_WAIT

            main["stdin"], main["stdinOnce"] = True, True
            main["env"] = [*(e for e in main["env"] if e.get("name") != ATTACH_WAIT_ENV),
                           {"name": ATTACH_WAIT_ENV, "value": str(ATTACH_WAIT)}]
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta,
                "spec": job_spec(template, self.options)}

    state = staticmethod(job_state)
    verdict = staticmethod(job_pod_verdict)
    exit_mark = staticmethod(exit_mark)
    attaches = staticmethod(attaches)
    as_failed = staticmethod(as_failed)

    def replicas(self, obj: dict) -> int:
        spec = obj.get("spec") or {}
        return max(spec.get("parallelism") or 1, 1) if (spec.get("completions") or 1) > 1 else 1

    def pod_selector(self, name: str, run_id: str | None) -> str:
        # Set by the job controller on every pod of this Job (and only this Job: the run id is
        # shared by all Jobs a CronJob starts).
        return f"job-name={name}"

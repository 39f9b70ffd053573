"""batch/v1 Job: one run of the workload (or `completions` runs, `parallelism` at a time).

    JobDeployer(namespace="team", backoff_limit=0, ttl_seconds_after_finished=3600,
                active_deadline_seconds=7200, completions=4, parallelism=2,
                mutators=[pod.cpu("2"), pod.memory("8Gi")]).deploy(image)
"""
from __future__ import annotations

from ...errors import ConfigError
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


class JobDeployer(KubeDeployer):
    api_version = "batch/v1"
    kind = "Job"
    deployer_name = "job"
    queue_suspend = ("spec",)
    tune_backends = ("jobs", "katib")  # Katib's trialSpec is this deployer's Job manifest
    kind_options = JOB_OPTIONS

    def configure(self, **opts) -> None:
        check_job_options(opts)

    def build(self, name, namespace, meta, template) -> dict:
        template.setdefault("spec", {})["restartPolicy"] = "Never"
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta,
                "spec": job_spec(template, self.options)}

    state = staticmethod(job_state)

    def replicas(self, obj: dict) -> int:
        spec = obj.get("spec") or {}
        return max(spec.get("parallelism") or 1, 1) if (spec.get("completions") or 1) > 1 else 1

    def pod_selector(self, name: str, run_id: str | None) -> str:
        # Set by the job controller on every pod of this Job (and only this Job: the run id is
        # shared by all Jobs a CronJob starts).
        return f"job-name={name}"

"""batch/v1 CronJob: scheduled retraining, pinned to the image digest.

    h = CronJobDeployer(schedule="0 3 * * *", time_zone="Europe/Berlin", concurrency_policy="Forbid",
                        successful_jobs_history_limit=3, failed_jobs_history_limit=1).deploy(image)
    h.suspend(); h.resume(); run = h.trigger()   # a Job now, from the CronJob's template
    h.wait(timeout)                               # the next run (or the triggered one) to finish

The schedule is checked here (five fields, ranges, names, macros) so a typo is one clear error
instead of an API server rejection.
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Any

from ...errors import ConfigError, DeployError
from .. import labels as L
from ..base import nonneg_int
from .base import KubeDeployer, KubeHandle
from .job import JOB_OPTIONS, JobDeployer, check_job_options, job_spec

_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
           ("month", 1, 12, ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
           ("day of week", 0, 7, ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]))
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_SCHEDULE_HINT = ("five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day), "
                  "'*/15 * * * *' (every 15 minutes), '0 2 * * MON-FRI', or @hourly/@daily/@weekly")


def validate_schedule(schedule: str) -> str:
    """Check a cron expression the way the CronJob controller parses it (robfig/cron, standard)."""
    def bad(why: str):
        return ConfigError(f"invalid schedule {schedule!r}: {why}", hint=_SCHEDULE_HINT)

    if not isinstance(schedule, str) or not schedule.strip():
        raise bad("it is empty")
    s = schedule.strip()
    if re.match(r"^(CRON_)?TZ=", s):
        raise bad("a time zone inside the schedule is not allowed")
    if s.startswith("@"):
        if s.lower() in _MACROS:
            return s
        m = re.match(r"^@every\s+((\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$", s)
        if m:
            return s
        raise bad(f"unknown macro {s.split()[0]!r}")
    fields = s.split()
    if len(fields) != 5:
        extra = " (Kubernetes CronJobs have no seconds field)" if len(fields) == 6 else ""
        raise bad(f"it has {len(fields)} fields, not 5{extra}")
    for text, (what, lo, hi, names) in zip(fields, _FIELDS):
        for item in text.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise bad(f"{what} step {step!r} must be a positive number")
            if base in ("*", "?"):
                if base == "?" and what not in ("day of month", "day of week"):
                    raise bad(f"'?' is only allowed for day of month or day of week")
                continue
            parts = base.split("-")
            if len(parts) > 2 or not all(parts):
                raise bad(f"{what} {item!r} is not a number, range or '*'")
            vals = []
            for p in parts:
                if p.isdigit():
                    vals.append(int(p))
                elif names and p.upper() in names:
                    vals.append(names.index(p.upper()) + (1 if what == "month" else 0))
                else:
                    allowed = f" or a name ({names[0]}..{names[-1]})" if names else ""
                    raise bad(f"{what} {p!r} is not a number{allowed}")
            for v in vals:
                if not lo <= v <= hi:
                    raise bad(f"{what} {v} is out of range {lo}-{hi}")
            if len(vals) == 2 and vals[0] > vals[1]:
                raise bad(f"{what} range {base!r} goes backwards")
    return s


def validate_time_zone(tz: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"unknown time zone {tz!r}", hint="use an IANA name such as 'Europe/Berlin' or 'Etc/UTC'") from None
    if tz.startswith("/") or ".." in tz:
        raise ConfigError(f"unknown time zone {tz!r}", hint="use an IANA name such as 'Europe/Berlin'")
    return tz


class CronJobDeployer(KubeDeployer):
    per_job_runs = True  # each Job it starts is a run of its own (its outputs, its record)
    api_version = "batch/v1"
    kind = "CronJob"
    deployer_name = "cronjob"
    # Kueue admits the Jobs a CronJob makes: the label and the suspend go into its job template.
    queue_suspend = ("spec", "jobTemplate", "spec")
    # The controller appends an 11-character suffix to Job names, which must stay <= 63.
    name_max = 52
    kind_options = JOB_OPTIONS + ("schedule", "time_zone", "concurrency_policy", "successful_jobs_history_limit",
                                  "failed_jobs_history_limit", "suspend", "starting_deadline_seconds")

    @classmethod
    def options_from_settings(cls, settings, options=None) -> dict:
        kw = super().options_from_settings(settings, options)
        if "schedule" not in kw:
            if not settings.get("schedule"):
                raise ConfigError("the cronjob deployer needs a schedule", hint='pass --schedule "0 3 * * *"')
            kw["schedule"] = settings["schedule"]
        return kw

    def configure(self, **opts) -> None:
        if "schedule" not in opts:
            raise ConfigError("the cronjob deployer needs a schedule", hint='e.g. schedule="0 3 * * *"')
        validate_schedule(opts["schedule"])
        if opts.get("time_zone") is not None:
            validate_time_zone(opts["time_zone"])
        if opts.get("concurrency_policy") not in (None, "Allow", "Forbid", "Replace"):
            raise ConfigError(f"invalid concurrency_policy {opts['concurrency_policy']!r}",
                              hint="use Allow, Forbid (skip a run while one is active) or Replace")
        nonneg_int(opts.get("successful_jobs_history_limit"), "successful_jobs_history_limit")
        nonneg_int(opts.get("failed_jobs_history_limit"), "failed_jobs_history_limit")
        nonneg_int(opts.get("starting_deadline_seconds"), "starting_deadline_seconds", minimum=1)
        if not isinstance(opts.get("suspend", False), bool):
            raise ConfigError(f"suspend must be True or False, not {opts['suspend']!r}")
        check_job_options(opts)

    def build(self, name, namespace, meta, template) -> dict:
        template.setdefault("spec", {})["restartPolicy"] = "Never"
        o = self.options
        spec: dict[str, Any] = {"schedule": o["schedule"].strip()}
        for opt, field in (("time_zone", "timeZone"), ("concurrency_policy", "concurrencyPolicy"),
                           ("successful_jobs_history_limit", "successfulJobsHistoryLimit"),
                           ("failed_jobs_history_limit", "failedJobsHistoryLimit"),
                           ("starting_deadline_seconds", "startingDeadlineSeconds")):
            if o.get(opt) is not None:
                spec[field] = o[opt]
        spec["suspend"] = bool(o.get("suspend", False))
        spec["jobTemplate"] = {"metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
                               "spec": job_spec(template, o)}
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": spec}

    @staticmethod
    def state(obj: dict) -> str:
        if (obj.get("spec") or {}).get("suspend"):
            return "Suspended"
        if (obj.get("status") or {}).get("active"):
            return "Running"
        return "Scheduled"

    def templates_of(self, manifest: dict) -> list[dict]:
        return [manifest["spec"]["jobTemplate"]["spec"]["template"]]

    @property
    def handle_class(self):
        return CronJobHandle


class CronJobHandle(KubeHandle):
    """A CronJob plus its runs. wait/logs/result refer to the latest run."""

    def __init__(self, deployer, obj, *, dry_run: bool = False):
        super().__init__(deployer, obj, dry_run=dry_run)
        self._created = time.time()
        self._jobs = JobDeployer(self.namespace, kube=self.kube)
        self._last_run: KubeHandle | None = None

    def suspend(self) -> None:
        self._no_dry("suspend")
        self._obj = self.kube.patch(self.api_version, self.kind, self.name, {"spec": {"suspend": True}}, self.namespace)

    def resume(self) -> None:
        self._no_dry("resume")
        self._obj = self.kube.patch(self.api_version, self.kind, self.name, {"spec": {"suspend": False}}, self.namespace)

    def jobs(self) -> list[dict]:
        """The Jobs this CronJob started (by the controller or trigger()), oldest first."""
        self._no_dry("list runs of")
        cj = self.get()
        uid = (cj or {}).get("metadata", {}).get("uid")
        items = self.kube.list("batch/v1", "Job", self.namespace, label_selector=f"{L.RUN_ID}={self.run_id}")
        owned = [j for j in items.get("items", [])
                 if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])]
        return sorted(owned, key=lambda j: j["metadata"].get("creationTimestamp", ""))

    def trigger(self) -> KubeHandle:
        """Start a run now (like `kubectl create job --from=cronjob/NAME`); returns its handle."""
        self._no_dry("trigger")
        cj = self.get()
        if cj is None:
            raise DeployError(f"CronJob {self.name} no longer exists", hint="deploy it again")
        tmpl = cj["spec"]["jobTemplate"]
        meta = tmpl.get("metadata") or {}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{self.name[:45]}-m{uuid.uuid4().hex[:5]}", "namespace": self.namespace,
                            "labels": dict(meta.get("labels") or {}),
                            "annotations": {**(meta.get("annotations") or {}),
                                            "cronjob.kubernetes.io/instantiate": "manual"},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": self.name,
                                                 "uid": cj["metadata"]["uid"], "controller": True,
                                                 # as `kubectl create job --from`: a foreground delete
                                                 # of the CronJob waits for this Job too
                                                 "blockOwnerDeletion": True}]},
               "spec": tmpl["spec"]}
        self._last_run = KubeHandle(self._jobs, self.kube.create(job))
        return self._last_run

    def last_run(self) -> KubeHandle | None:
        if self._last_run is not None:
            return self._last_run
        jobs = self.jobs()
        return KubeHandle(self._jobs, jobs[-1]) if jobs else None

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the triggered run, or else the next scheduled one, to finish."""
        self._no_dry("wait for")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._last_run is None:
            self._last_run = self._next_run(deadline, timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._last_run.wait(remaining)

    def _next_run(self, deadline, timeout) -> KubeHandle:
        from ...kube.wait import Mux, Stream, WaitTimeout

        cj = self.get() or {}
        uid = cj.get("metadata", {}).get("uid")
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._created - 1))
        with Mux(self.kube, self.namespace, [Stream("jobs", "batch/v1", "Job",
                                                    label_selector=f"{L.RUN_ID}={self.run_id}")]) as mux:
            for _k, etype, job in mux.events(deadline):
                if etype == "TIMEOUT":
                    raise WaitTimeout(f"CronJob {self.name} started no run within {timeout:g}s "
                                      f"(schedule {cj.get('spec', {}).get('schedule')!r}, {self.deployer.state(cj)})",
                                      hint="wait longer, resume() it if suspended, or trigger() a run now")
                meta = job.get("metadata") or {}
                if etype != "DELETED" and meta.get("creationTimestamp", "") >= since and \
                        any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
                    return KubeHandle(self._jobs, job)
        raise DeployError(f"stopped waiting for a run of CronJob {self.name}")

    def logs(self, follow: bool = False, *, prefix: bool | None = True):
        run = self.last_run()
        if run is None:
            return iter([f"(CronJob {self.name} has not run yet)"])
        return run.logs(follow, prefix=prefix)

    def result(self) -> Any:
        run = self.last_run()
        if run is None:
            raise DeployError(f"CronJob {self.name} has not run yet", hint="trigger() a run, or wait() for the next one")
        return run.result()

    def delete(self, *, wait: bool = True, timeout: float = 120) -> None:
        """Delete the CronJob and its runs (foreground: runs and their pods go first). With
        wait=True, returns once the CronJob and every Job it started are gone."""
        runs = [] if self.dry_run else [j["metadata"]["name"] for j in self.jobs()]
        super().delete(wait=wait, timeout=timeout)
        if wait:
            for name in runs:  # runs the controller started are owned with blockOwnerDeletion too,
                KubeHandle(self._jobs, {"metadata": {"name": name, "namespace": self.namespace}}).delete(
                    timeout=timeout)  # but a Job created by hand may not be: make sure

    def diagnose(self):
        run = self.last_run()
        return run.diagnose() if run else None

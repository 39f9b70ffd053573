"""The deployer and handle bases every deployer shares, cluster or local.

    d = JobDeployer(namespace="team", mutators=[pod.gpu(1)], backoff_limit=2)
    d.render(image)          # manifests as dicts, no API calls (dry-run / output="yaml")
    h = d.deploy(image)      # creates the workload, returns a handle
    h.status(); h.wait(timeout=600); h.logs(follow=True); h.result(); h.delete()
    d.attach("train-ab12c")  # a handle for something deployed earlier

`Deployer` takes the options every deployer shares (name, mutators, labels, annotations, dry_run,
and namespace/kubeconfig/context so a profile can switch deployers freely) and checks them once:
unknown option names, the mutators. A subclass lists its own option names (`kind_options`),
validates their values in `configure`, says how a stored object's state reads (`state`) and which
object it makes (`api_version`, `kind`; what `fair list` looks for).

The Kubernetes implementation (`KubeAccess`, `KubeDeployer`, `KubeHandle`) is in k8s/base.py;
the local one in local/. `Handle` is the one interface of what `deploy` returns, everywhere.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable, Iterator, Mapping

from ..context import BuiltImage, ServeSpec
from ..errors import ConfigError, DeployError
from . import labels as L
from . import pod as podlib
from . import queue as queuelib

# Options every deployer takes, cluster or local (kube: a ready API client, for tests and reuse).
COMMON_OPTIONS = ("namespace", "kubeconfig", "context", "name", "mutators", "labels", "annotations", "cleanup",
                  "dry_run", "kube", "queue")


def check_options(deployer: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """The one check of option names: a typo is one line naming the deployer and its options."""
    allowed = tuple(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} for the {deployer} deployer: "
                          f"{', '.join(unknown)}",
                          hint=f"options: {', '.join(sorted(allowed)) or 'none'} (plus "
                               f"{', '.join(o for o in COMMON_OPTIONS if o != 'kube')})")


def nonneg_int(value, what: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"invalid {what} {value!r}", hint=f"use a whole number >= {minimum}")
    return value


def check_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"invalid port {value!r}", hint="use a number from 1 to 65535, e.g. 80")
    return value


def check_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ConfigError(f"replicas must be a whole number >= 0, got {replicas!r}", hint="e.g. replicas=2")
    return replicas


def serve_spec(image: BuiltImage) -> ServeSpec:
    """The model server an image runs (its context's typed ServeSpec); ConfigError when the image
    was not built for serving."""
    ctx = image.context
    if ctx is None or ctx.serve is None:
        raise ConfigError("the serving deployers need an image built from a serving context",
                          hint="build it with the serve preprocessor (PredictionEndpoint does)")
    return ctx.serve


class Deployer:
    """What the pipeline calls: render(image) -> manifests, deploy(image) -> Handle,
    attach(name) -> Handle. Construction checks every option and talks to nothing."""

    deployer_name = "deployer"
    kind_options: tuple[str, ...] = ()
    api_version = ""  # the object `fair list` finds this deployer's workloads by (cluster deployers)
    kind = ""
    # Which of those objects are this deployer's (`fair list/status`); narrower where other
    # deployers' workloads make the same kind (every Job's pods are fairing-labelled Pods too).
    list_selector = L.MANAGED_SELECTOR

    # -- facts the pipeline reads from the class (fairing.pipeline.plan, checks, tune); a new
    # deployer declares its own here and no other module names it --------------------------------
    per_job_runs = False  # True: every Job the workload starts is a run of its own (a CronJob)
    title = ""  # what it makes, in a few words, for hints: "a Kubeflow TrainJob"
    aliases: tuple[str, ...] = ()  # other spellings of its name on the command line ("kserve")
    # Where its object keeps the suspend flag Kueue releases (e.g. ("spec",)); None: no queue.
    queue_suspend: tuple[str, ...] | None = None
    # Settings it reads to reach where it runs (namespace, context, kubeconfig for a cluster).
    connection_settings: tuple[str, ...] = ()
    # Settings that are options of this deployer alone: given with another one they are an error.
    own_settings: tuple[str, ...] = ()
    # fairing.tune backends whose trials run on this deployer (the first is the one it implies).
    tune_backends: tuple[str, ...] = ()

    @classmethod
    def queueable(cls) -> bool:
        return cls.queue_suspend is not None

    @classmethod
    def settings_options(cls) -> tuple[str, ...]:
        """The settings this deployer takes as options of the same name."""
        return cls.connection_settings + (("queue",) if cls.queueable() else ()) + cls.own_settings

    @classmethod
    def cluster_only(cls) -> tuple[str, ...]:
        """Settings that mean nothing unless this deployer runs on a cluster (a kubeconfig is how a
        cluster is found, so it is never one of them)."""
        return tuple(k for k in cls.settings_options() if k != "kubeconfig")

    @classmethod
    def options_from_settings(cls, settings: Any, options: Mapping[str, Any] | None = None) -> dict:
        """The constructor's options: `options` as given, then what it reads from `settings` (pod
        options as mutators before the caller's own, so neither is dropped). Checks nothing that
        needs another deployer's facts: the pipeline does (fairing.pipeline.deployer_options)."""
        kw = dict(options or {})
        for key in cls.settings_options():
            value = settings[key]
            if value is not None and value != "" and key not in kw:
                kw[key] = value
        kw["mutators"] = (*podlib.from_settings(settings), *kw.get("mutators", ()))
        if settings.get("dry_run"):
            kw["dry_run"] = True
        return kw

    @classmethod
    def from_settings(cls, settings: Any, options: Mapping[str, Any] | None = None) -> "Deployer":
        """The deployer as `settings` (fairing.settings) and explicit `options` configure it."""
        return cls(**cls.options_from_settings(settings, options))

    def __init__(self, namespace: str | None = None, *, kubeconfig=None, context: str | None = None,
                 name: str | None = None, mutators: Iterable = (), labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None, cleanup: bool = False, dry_run: bool = False,
                 kube=None, queue: str | None = None, **kind_specific: Any):
        check_options(self.deployer_name, kind_specific, self.kind_options)
        if queue is not None:  # a Kueue LocalQueue (fairing.deployers.queue)
            if not self.queueable():
                from ..stages import deployer_classes

                names = [n for n, c in deployer_classes() if c.queueable()]
                raise ConfigError(f"the {self.deployer_name} deployer cannot submit to a Kueue queue",
                                  hint=f"queues take {', '.join(names[:-1])} and {names[-1]} workloads; drop --queue")
            queuelib.validate_queue(queue)
        self.queue = queue
        if namespace is not None:
            from ..kube.client import validate_name

            validate_name(namespace, "namespace")
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.name = self.check_name(name) if name is not None else None
        self.mutators = podlib.check(mutators)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.cleanup = cleanup
        self.dry_run = bool(dry_run)
        self._kube = kube
        self.options = dict(kind_specific)
        self.configure(**kind_specific)

    # -- what a subclass says -----------------------------------------------------------------------
    def check_name(self, name: str) -> str:
        return name

    def configure(self, **options) -> None:
        """Validate kind-specific option values (raise ConfigError early, before any API call)."""

    @staticmethod
    def state(obj: dict | None) -> str:  # pragma: no cover - interface
        """One word for a stored workload (what handles and `fair list/status` say)."""
        raise NotImplementedError

    def render(self, image: BuiltImage) -> list[dict]:  # pragma: no cover - interface
        raise NotImplementedError

    def deploy(self, image: BuiltImage):  # pragma: no cover - interface
        raise NotImplementedError

    def attach(self, name: str):  # pragma: no cover - interface
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------
    def prepare(self, kube, namespace: str, templates: Iterable[dict]) -> None:
        """Mutators' deploy-time side effects (e.g. image_pull_secret() creates its Secret), never
        at render: each hook sees the pod template with the workload container named "main"."""
        for tpl in templates:
            for m in self.mutators:
                hook = getattr(m, "prepare", None)
                if hook is not None:
                    hook(kube, namespace, tpl)

    def created(self, kube, namespace: str, obj: dict) -> None:
        """Mutators' hooks once the workload exists (the outputs Secret takes it as its owner)."""
        for m in self.mutators:
            hook = getattr(m, "created", None)
            if hook is not None:
                hook(kube, namespace, obj)

    def discard(self, kube, namespace: str) -> None:
        """Mutators' hooks when the create failed: undo what prepare made for this workload alone."""
        for m in self.mutators:
            hook = getattr(m, "discard", None)
            if hook is not None:
                try:
                    hook(kube, namespace)
                except Exception:  # noqa: BLE001 - the create's own error is the one to report
                    pass


def selector_matches(labels: Mapping[str, str] | None, selector: str) -> bool:
    """Does an object with `labels` match an equality selector "k=v,k2=v2"?"""
    labels = labels or {}
    return all(labels.get(k) == v for k, _, v in (part.partition("=") for part in selector.split(",") if part))


class Handle(ABC):
    """What every deployer returns, cluster or local: status, wait, logs, result, delete,
    manifests. `wait` raises fairing.errors.WaitTimeout (a DeployError) when the workload is still
    running at the timeout, and DeployError saying why when it failed. A dry run's handle refuses
    the verbs that need a real workload."""

    what = "workload"
    name: str
    namespace: str | None = None
    dry_run = False

    def __init__(self, name: str, namespace: str | None = None, *, dry_run: bool = False):
        self.name, self.namespace, self.dry_run = name, namespace, dry_run

    def _no_dry(self, what: str) -> None:
        if self.dry_run:
            raise DeployError(f"{self.what} {self.name} was a dry run; there is nothing to {what}",
                              hint="deploy without dry_run=True")

    @abstractmethod
    def status(self) -> str:
        """One word: Pending, Running, Succeeded, Failed, Ready, Deleted, ..."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> str:
        """Block until the workload ends (or a server is ready); its final status."""

    @abstractmethod
    def logs(self, follow: bool = False) -> Iterator[str]:
        """The workload's log lines (with `follow`, until it ends)."""

    @abstractmethod
    def delete(self) -> None:
        """Remove the workload and what it made."""

    def result(self) -> Any:
        """The function's return value (function workloads only)."""
        raise ConfigError(f"a {self.what} has no return value", hint="read its output with logs()")

    def manifests(self) -> list[dict]:
        """The objects it created (cluster workloads); [] elsewhere."""
        return []

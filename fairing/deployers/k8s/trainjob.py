"""Kubeflow Trainer v2: a `trainer.kubeflow.org/v1alpha1` Kubeflow TrainJob running fairing's
image on a training runtime (a ClusterTrainingRuntime such as `torch-distributed`, which the
Trainer controller turns into a JobSet: one Job per node group, one pod per node).

    TrainJobDeployer(namespace="team", nodes=2, procs_per_node=1, runtime="torch-distributed",
                     mutators=[pod.cpu("2"), pod.memory("8Gi")]).deploy(image)

Not to be confused with fairing's own Python class `fairing.TrainJob` (the pipeline wrapper):
this module makes the Kubernetes object "Kubeflow TrainJob". Unlike the Kubeflow SDK, which ships
a function's source text and pip-installs packages when the pod starts, the trainer image here is
the one fairing built, pinned by digest, with its dependencies inside.

How the pod template maps onto the TrainJob API (which has no free-form pod template):
  image/command/args/env/resources of the "main" container -> spec.trainer
  volumes, tolerations, node selector, affinity, service account, pull secrets, pod labels and
  annotations, the container's volume mounts -> spec.runtimePatches (manager "fairing.dev/deployer")
Anything else in the template cannot be expressed and is an error, never silently dropped.
"""
from __future__ import annotations

import copy
from typing import Any

from ...errors import ConfigError
from ...kube.errors import Forbidden
from .. import labels as L
from .. import pod as podlib
from .base import KubeDeployer, KubeHandle, finished_outcome

API_VERSION = "trainer.kubeflow.org/v1alpha1"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
DEFAULT_RUNTIME = "torch-distributed"
TRAINER_JOB = "node"       # the torch runtime's replicated job and container for the trainer step
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
PATCH_MANAGER = L.DEPLOYER  # "fairing.dev/deployer": who owns our runtime patch
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
RJOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

TRAINJOB_OPTIONS = ("nodes", "procs_per_node", "runtime", "runtime_kind", "dataset_uri", "model_uri",
                    "active_deadline_seconds")

# Pod spec fields the runtime patch can carry, and container fields the trainer API takes.
_POD_PATCH_FIELDS = ("volumes", "tolerations", "nodeSelector", "affinity", "serviceAccountName",
                     "imagePullSecrets", "securityContext", "schedulingGates", "terminationGracePeriodSeconds")
_POD_IGNORED = ("restartPolicy", "containers")  # the runtime owns the restart policy
# workingDir: every builder bakes the context's directory into the image as its WORKDIR.
_CONTAINER_FIELDS = ("name", "image", "command", "args", "env", "resources", "volumeMounts", "workingDir",
                     "securityContext")


def _count(value, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"invalid {what} {value!r}", hint=f"use a whole number >= {minimum}")
    return value


def trainjob_state(obj: dict | None) -> str:
    obj = obj or {}
    if done := finished_outcome(obj):
        return done
    st = obj.get("status") or {}
    if (obj.get("spec") or {}).get("suspend"):
        return "Suspended"
    for js in st.get("jobsStatus") or []:
        if js.get("ready") or js.get("active"):
            return "Running"
    return "Pending"


class TrainJobDeployer(KubeDeployer):
    """Creates a Kubeflow TrainJob (Kubeflow Trainer v2); see the module docstring."""

    api_version = API_VERSION
    kind = "TrainJob"
    deployer_name = "trainjob"
    title = "a Kubeflow TrainJob"
    queue_suspend = ("spec",)
    own_settings = ("nodes", "procs_per_node", "runtime")  # --nodes / --procs-per-node / --runtime
    container_name = TRAINER_JOB
    # The JobSet, its Jobs, pods and headless Service are named after the TrainJob
    # (<name>-node-0-1.<name> must stay a DNS label).
    name_max = 40
    name_dns1035 = True
    kind_options = TRAINJOB_OPTIONS

    def configure(self, **opts) -> None:
        _count(opts.get("nodes", 1), "nodes", 1)
        _count(opts.get("procs_per_node"), "procs_per_node", 1)
        _count(opts.get("active_deadline_seconds"), "active_deadline_seconds", 1)
        runtime = opts.get("runtime", DEFAULT_RUNTIME)
        from ...kube.client import validate_name

        validate_name(runtime, "runtime name", max_len=253)
        if opts.get("runtime_kind", "ClusterTrainingRuntime") not in RUNTIME_KINDS:
            raise ConfigError(f"invalid runtime_kind {opts['runtime_kind']!r}",
                              hint="use ClusterTrainingRuntime (cluster-wide, the default) or TrainingRuntime "
                                   "(in the TrainJob's namespace)")
        for key in ("dataset_uri", "model_uri"):
            if opts.get(key) is not None and (not isinstance(opts[key], str) or "://" not in opts[key]):
                raise ConfigError(f"invalid {key} {opts[key]!r}", hint="use a URI such as hf://org/name or s3://bucket/path")
        self.trainer_job = TRAINER_JOB  # the runtime's trainer step; read from the runtime at deploy time

    @property
    def runtime(self) -> str:
        return self.options.get("runtime", DEFAULT_RUNTIME)

    @property
    def runtime_kind(self) -> str:
        return self.options.get("runtime_kind", "ClusterTrainingRuntime")

    # -- the manifest -------------------------------------------------------------------------------
    def build(self, name, namespace, meta, template) -> dict:
        main = podlib.find_container(template, podlib.MAIN)
        spec = template.get("spec") or {}
        extra = sorted(set(main) - set(_CONTAINER_FIELDS))
        if extra:
            raise ConfigError(f"the Kubeflow TrainJob API cannot set {', '.join(extra)} on the trainer container",
                              hint="it takes image, command, args, env, resources and volume mounts; "
                                   "drop the other settings, or use --deployer job/pytorchjob")
        others = [c.get("name") for c in spec.get("containers") or [] if c is not main] + \
                 [c.get("name") for c in spec.get("initContainers") or []]
        bad = sorted(set(spec) - set(_POD_PATCH_FIELDS) - set(_POD_IGNORED) - {"initContainers"})
        if others or bad:
            what = ", ".join([*(f"container {n}" for n in others), *bad])
            raise ConfigError(f"the Kubeflow TrainJob API cannot add {what} to the runtime's pods",
                              hint="sidecars and other pod fields belong in the training runtime; "
                                   "use --deployer job or pytorchjob for a free-form pod")
        trainer: dict[str, Any] = {"image": main["image"]}
        for field in ("command", "args"):
            if main.get(field):
                trainer[field] = list(main[field])
        env = main.get("env") or []
        if env:
            trainer["env"] = copy.deepcopy(env)
        trainer["numNodes"] = self.options.get("nodes", 1)
        if self.options.get("procs_per_node") is not None:
            trainer["numProcPerNode"] = self.options["procs_per_node"]
        if main.get("resources"):
            trainer["resourcesPerNode"] = copy.deepcopy(main["resources"])
        body: dict[str, Any] = {"runtimeRef": {"name": self.runtime, "apiGroup": "trainer.kubeflow.org",
                                               "kind": self.runtime_kind},
                                "trainer": trainer}
        init = {}
        if self.options.get("dataset_uri"):
            init["dataset"] = {"storageUri": self.options["dataset_uri"]}
        if self.options.get("model_uri"):
            init["model"] = {"storageUri": self.options["model_uri"]}
        if init:
            body["initializer"] = init
        if self.options.get("active_deadline_seconds") is not None:
            body["activeDeadlineSeconds"] = self.options["active_deadline_seconds"]
        body["runtimePatches"] = [self._runtime_patch(template, main)]
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta, "spec": body}

    def _runtime_patch(self, template: dict, main: dict) -> dict:
        """Pod labels (the run id the handle selects pods by), annotations and pod mutators'
        output, as the TrainJob's override of the runtime's trainer pods."""
        spec = template.get("spec") or {}
        pod_spec = {k: copy.deepcopy(spec[k]) for k in _POD_PATCH_FIELDS if spec.get(k) not in (None, [], {})}
        container = {"name": self.trainer_job}
        if main.get("volumeMounts"):
            container["volumeMounts"] = copy.deepcopy(main["volumeMounts"])
        if main.get("securityContext"):
            container["securityContext"] = copy.deepcopy(main["securityContext"])
        if len(container) > 1:
            pod_spec["containers"] = [container]
        tmeta = template.get("metadata") or {}
        pod_meta = {k: dict(tmeta[k]) for k in ("labels", "annotations") if tmeta.get(k)}
        pod = {"metadata": pod_meta} if pod_meta else {}
        if pod_spec:
            pod["spec"] = pod_spec
        rjob = {"name": self.trainer_job, "template": {"spec": {"template": pod}}}
        return {"manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [rjob]}}}}

    def pod_template(self, image, run_id: str) -> dict:
        tpl = super().pod_template(image, run_id)
        main = podlib.find_container(tpl, podlib.MAIN)
        if main.get("envFrom"):
            raise ConfigError("the Kubeflow TrainJob API takes no envFrom for the trainer container",
                              hint="name the keys instead: pod.env_from_secret(NAME, ['KEY', ...]) "
                                   "(each becomes an env entry referencing the Secret)")
        return tpl

    def templates_of(self, manifest: dict) -> list[dict]:
        # Mutator prepare hooks (e.g. the image pull Secret) read the "main" container's image.
        trainer = manifest["spec"]["trainer"]
        patch = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        pod = copy.deepcopy(patch["replicatedJobs"][0]["template"]["spec"]["template"])
        pod.setdefault("spec", {})["containers"] = [{"name": podlib.MAIN, "image": trainer["image"]}]
        return [pod]

    # -- cluster checks -----------------------------------------------------------------------------
    def preflight(self) -> None:
        """Kubeflow Trainer is installed, the runtime exists (its trainer step is read from it),
        and the queue exists: before anything is built or created."""
        from ...kube.client import CRDNotInstalled, resource_for

        kube = self.kube
        res = resource_for(API_VERSION, "TrainJob")
        if not kube.group_version_served(res):
            raise CRDNotInstalled(f"Kubeflow Trainer v2 is not installed on {kube.server}: it serves no "
                                  f"Kubeflow TrainJob API ({API_VERSION})", hint=res.install_hint)
        ns = self.target_namespace()
        try:
            rt = kube.get(API_VERSION, self.runtime_kind, self.runtime, ns)
        except Forbidden:
            rt = {}  # may not read runtimes (Trainer's own role lets users read them): the controller will judge
        if rt is None:
            raise ConfigError(f"the {self.runtime_kind} {self.runtime!r} does not exist"
                              + (f" in namespace {ns!r}" if self.runtime_kind == "TrainingRuntime" else ""),
                              hint=self._runtimes_hint(ns))
        self.trainer_job = trainer_step(rt) or TRAINER_JOB
        super().preflight()

    def _runtimes_hint(self, namespace: str) -> str:
        from ...errors import FairingError

        found = []
        for kind, ns in (("ClusterTrainingRuntime", None), ("TrainingRuntime", namespace)):
            try:
                items = self.kube.list(API_VERSION, kind, ns).get("items", [])
            except FairingError:
                continue  # not allowed to list this kind: name what we can see
            found += [f"{i['metadata']['name']}" + (" (TrainingRuntime)" if ns else "") for i in items]
        if not found:
            return "no training runtimes are installed; install Kubeflow Trainer's runtimes " \
                   "(kubectl apply --server-side -k \"https://github.com/kubeflow/trainer.git/manifests/overlays/" \
                   "runtimes?ref=v2.3.0\")"
        return f"runtimes on this cluster: {', '.join(sorted(found))}; pass --runtime NAME"

    def deploy(self, image):
        from ...kube.client import CRDNotInstalled

        try:
            return super().deploy(image)
        except CRDNotInstalled as e:  # removed between the check and the create
            raise CRDNotInstalled(f"Kubeflow Trainer v2 is not installed: {e.message}", hint=e.hint) from None

    # -- reading it back ----------------------------------------------------------------------------
    state = staticmethod(trainjob_state)

    def replicas(self, obj: dict) -> int:
        return int(((obj.get("spec") or {}).get("trainer") or {}).get("numNodes") or 1)

    def pod_selector(self, name: str, run_id: str | None) -> str:
        return f"{L.RUN_ID}={run_id}" if run_id else f"{JOBSET_LABEL}={name}"

    def result_pod(self, pods: list[dict]) -> dict | None:
        """Node 0 of the trainer step: the function's result is printed there."""
        for p in pods:
            labels = (p.get("metadata") or {}).get("labels") or {}
            if labels.get(RJOB_LABEL, self.trainer_job) == self.trainer_job and labels.get(INDEX_LABEL) == "0":
                return p
        return super().result_pod(pods)

    @property
    def handle_class(self):
        return TrainJobHandle


def trainer_step(runtime: dict) -> str | None:
    """The replicated job of a training runtime that runs the trainer (the one labelled as the
    trainer ancestor step, else the one named "node")."""
    rjobs = (((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
    for rj in rjobs:
        labels = ((rj.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(ANCESTOR_LABEL) == "trainer":
            return rj.get("name")
    return next((rj.get("name") for rj in rjobs if rj.get("name") == TRAINER_JOB), None)


class TrainJobHandle(KubeHandle):
    """A Kubeflow TrainJob: status from its conditions and its JobSet's jobs, logs from every node."""

    def jobset(self) -> dict | None:
        if self.dry_run:
            return None
        return self.kube.get("jobset.x-k8s.io/v1alpha2", "JobSet", self.name, self.namespace)

    def status_detail(self) -> str | None:
        detail = super().status_detail()
        if detail or self.dry_run or self._obj is None:
            return detail
        conds = [c for c in (self._obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
        if conds:
            c = conds[-1]
            return f"{c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".strip()
        return None


__all__ = ["TrainJobDeployer", "TrainJobHandle", "trainjob_state", "trainer_step", "DEFAULT_RUNTIME"]

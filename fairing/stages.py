"""The one table of pipeline stages by name, loaded lazily so `import fairing` stays light. (Named
`stages`, not `registry`: a registry is where images go, fairing.oci.registry.)

A deployer's row also says where it runs ("cluster" or "local") and whether it serves models, so
the pipeline, `fair list` and the CLI's help read these facts here, without importing anything.
Every other fact about a deployer (other spellings of its name, whether Kueue can hold it, the
settings it reads, tuning backends) is a class attribute of the deployer itself
(fairing.deployers.base.Deployer), read through `deployer_classes()`. Adding a deployer is its own
module plus one row below."""
from __future__ import annotations

import importlib
from typing import NamedTuple

from .errors import ConfigError


class Entry(NamedTuple):
    path: str             # "module:Class"
    where: str = ""       # deployers: "cluster" or "local"
    serves: bool = False  # deployers: runs a model server (serve preprocessor's images)


PREPROCESSORS = {
    "python": Entry("fairing.preprocessors.python:PythonPreprocessor"),
    "notebook": Entry("fairing.preprocessors.notebook:NotebookPreprocessor"),
    "function": Entry("fairing.preprocessors.function:FunctionPreprocessor"),
    "full_notebook": Entry("fairing.preprocessors.full_notebook:FullNotebookPreprocessor"),
    "serve": Entry("fairing.preprocessors.serve:ServePreprocessor"),
}
BUILDERS = {
    "append": Entry("fairing.builders.append:AppendBuilder"),
    "docker": Entry("fairing.builders.docker:DockerBuilder"),
    "cluster": Entry("fairing.builders.cluster:ClusterBuilder"),
}
DEPLOYERS = {
    "job": Entry("fairing.deployers.k8s.job:JobDeployer", "cluster"),
    "cronjob": Entry("fairing.deployers.k8s.cronjob:CronJobDeployer", "cluster"),
    "tfjob": Entry("fairing.deployers.k8s.kubeflow:TFJobDeployer", "cluster"),
    "pytorchjob": Entry("fairing.deployers.k8s.kubeflow:PyTorchJobDeployer", "cluster"),
    "trainjob": Entry("fairing.deployers.k8s.trainjob:TrainJobDeployer", "cluster"),
    "pod": Entry("fairing.deployers.k8s.barepod:PodDeployer", "cluster"),
    "serving": Entry("fairing.deployers.k8s.deployment:ServingDeployer", "cluster", serves=True),
    "inferenceservice": Entry("fairing.deployers.k8s.kserve:InferenceServiceDeployer", "cluster",
                              serves=True),
    "local": Entry("fairing.deployers.local:LocalDeployer", "local", serves=True),
}
KINDS = {"preprocessor": PREPROCESSORS, "builder": BUILDERS, "deployer": DEPLOYERS}


def aliases() -> dict[str, str]:
    """Other spellings of deployer names ({"kserve": "inferenceservice"}), from each deployer
    class's `aliases`: derived, never a second table."""
    return {alias: name for name, cls in deployer_classes() for alias in cls.aliases}


def canonical(kind: str, name: str) -> str:
    # Only a name that is not in the table makes the deployer classes load.
    if kind != "deployer" or name in KINDS[kind]:
        return name
    return aliases().get(name, name)


def check(kind: str, name: str) -> str:
    """The canonical name; an unknown one fails with the list, without importing anything."""
    table = KINDS[kind]
    name = canonical(kind, name)
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}", hint=f"choose one of: {', '.join(sorted(table))}")
    return name


def stage(kind: str, name: str) -> Entry:
    return KINDS[kind][check(kind, name)]


def load(kind: str, name: str):
    """Return the class registered as `name` for `kind` ("preprocessor", "builder", "deployer")."""
    module, _, attr = stage(kind, name).path.partition(":")
    return getattr(importlib.import_module(module), attr)


def deployer_classes() -> list[tuple[str, type]]:
    """(name, class) of every deployer, in table order (imports them all: for facts that only
    the classes know)."""
    return [(name, load("deployer", name)) for name in DEPLOYERS]


def deployers(*, where: str | None = None, serves: bool | None = None) -> list[str]:
    """Deployer names with the given facts, in table order."""
    return [n for n, s in DEPLOYERS.items()
            if (where is None or s.where == where) and (serves is None or s.serves == serves)]

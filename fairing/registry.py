"""The one table of pipeline stages by name, loaded lazily so `import fairing` stays light.

A deployer's row also says where it runs ("cluster" or "local") and whether it serves models, so
the pipeline, `fair list` and the CLI's help read these facts here instead of keeping their own
lists. Adding a deployer is its own module plus one row below."""
from __future__ import annotations

import importlib
from typing import NamedTuple

from .errors import ConfigError


class Stage(NamedTuple):
    path: str             # "module:Class"
    where: str = ""       # deployers: "cluster" or "local"
    serves: bool = False  # deployers: runs a model server (serve preprocessor's images)


PREPROCESSORS = {
    "python": Stage("fairing.preprocessors.python:PythonPreprocessor"),
    "notebook": Stage("fairing.preprocessors.notebook:NotebookPreprocessor"),
    "function": Stage("fairing.preprocessors.function:FunctionPreprocessor"),
    "full_notebook": Stage("fairing.preprocessors.full_notebook:FullNotebookPreprocessor"),
    "serve": Stage("fairing.preprocessors.serve:ServePreprocessor"),
}
BUILDERS = {
    "append": Stage("fairing.builders.append:AppendBuilder"),
    "docker": Stage("fairing.builders.docker:DockerBuilder"),
    "cluster": Stage("fairing.builders.cluster:ClusterBuilder"),
}
DEPLOYERS = {
    "job": Stage("fairing.deployers.k8s.job:JobDeployer", "cluster"),
    "cronjob": Stage("fairing.deployers.k8s.cronjob:CronJobDeployer", "cluster"),
    "tfjob": Stage("fairing.deployers.k8s.kubeflow:TFJobDeployer", "cluster"),
    "pytorchjob": Stage("fairing.deployers.k8s.kubeflow:PyTorchJobDeployer", "cluster"),
    "trainjob": Stage("fairing.deployers.k8s.trainjob:TrainJobDeployer", "cluster"),
    "pod": Stage("fairing.deployers.k8s.pod:PodDeployer", "cluster"),
    "serving": Stage("fairing.deployers.k8s.serving:ServingDeployer", "cluster", serves=True),
    "inferenceservice": Stage("fairing.deployers.k8s.kserve:InferenceServiceDeployer", "cluster",
                              serves=True),
    "local": Stage("fairing.deployers.local:LocalDeployer", "local", serves=True),
}
# Other spellings of a name: derived from the table, never a second table.
ALIASES = {"deployer": {"kserve": "inferenceservice"}}
KINDS = {"preprocessor": PREPROCESSORS, "builder": BUILDERS, "deployer": DEPLOYERS}


def canonical(kind: str, name: str) -> str:
    return ALIASES.get(kind, {}).get(name, name)


def check(kind: str, name: str) -> str:
    """The canonical name; an unknown one fails with the list, without importing anything."""
    table = KINDS[kind]
    name = canonical(kind, name)
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}", hint=f"choose one of: {', '.join(sorted(table))}")
    return name


def stage(kind: str, name: str) -> Stage:
    return KINDS[kind][check(kind, name)]


def load(kind: str, name: str):
    """Return the class registered as `name` for `kind` ("preprocessor", "builder", "deployer")."""
    module, _, attr = stage(kind, name).path.partition(":")
    return getattr(importlib.import_module(module), attr)


def deployers(*, where: str | None = None, serves: bool | None = None) -> list[str]:
    """Deployer names with the given facts, in table order."""
    return [n for n, s in DEPLOYERS.items()
            if (where is None or s.where == where) and (serves is None or s.serves == serves)]

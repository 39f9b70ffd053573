"""Registries of implementations by name, loaded lazily so `import fairing` stays light."""
from __future__ import annotations

import importlib

from .errors import ConfigError

PREPROCESSORS = {
    "python": "fairing.preprocessors.python:PythonPreprocessor",
    "notebook": "fairing.preprocessors.notebook:NotebookPreprocessor",
    "function": "fairing.preprocessors.function:FunctionPreprocessor",
    "full_notebook": "fairing.preprocessors.full_notebook:FullNotebookPreprocessor",
    "serve": "fairing.preprocessors.serve:ServePreprocessor",
}
BUILDERS = {
    "append": "fairing.builders.append:AppendBuilder",
    "docker": "fairing.builders.docker:DockerBuilder",
    "cluster": "fairing.builders.cluster:ClusterBuilder",
}
DEPLOYERS = {
    "job": "fairing.deployers.job:JobDeployer",
    "tfjob": "fairing.deployers.tfjob:TFJobDeployer",
    "pytorchjob": "fairing.deployers.pytorchjob:PyTorchJobDeployer",
    "cronjob": "fairing.deployers.cronjob:CronJobDeployer",
    "serving": "fairing.deployers.serving:ServingDeployer",
    "inferenceservice": "fairing.deployers.kserve:InferenceServiceDeployer",
    "local": "fairing.deployers.local:LocalDeployer",
}
_KINDS = {"preprocessor": PREPROCESSORS, "builder": BUILDERS, "deployer": DEPLOYERS}


def load(kind: str, name: str):
    """Return the class registered as `name` for `kind` ("preprocessor", "builder", "deployer")."""
    table = _KINDS[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}", hint=f"choose one of: {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)

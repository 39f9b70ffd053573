"""Checks that run before anything is contacted, and the sentences that say what fairing found.

The CLI and `pipeline.plan` call these so that (1) nothing the user typed is silently ignored, (2)
everything local (files, specs, requirements) is checked before an engine or a cluster is asked
anything, and (3) "where did it look" is always part of the answer."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from .errors import ConfigError

def cluster_only() -> list[str]:
    """Options that only mean something to a cluster deployer, as the cluster deployer classes
    declare them (`Deployer.cluster_only`: namespace, context, queue, the trainjob options...)."""
    from . import stages

    out: list[str] = []
    for name, cls in stages.deployer_classes():
        if stages.stage("deployer", name).where == "cluster":
            out += [k for k in cls.cluster_only() if k not in out]
    return out


def option_name(settings: Any, key: str) -> str:
    """The option as the user gave it: `--namespace` on the command line, FAIRING_NAMESPACE in the
    environment, `namespace (fairing.yaml:3)` in a file."""
    source = settings.source(key) if hasattr(settings, "source") else "cli"
    if source in ("cli", "default"):
        return "--" + key.replace("_", "-")
    if source.startswith("env "):
        return source[len("env "):]
    if source == "argument":
        return f"{key}="
    return f"{key} ({source})"


def kubeconfig_search(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Where a kubeconfig was looked for, as a phrase: 'KUBECONFIG is set but empty'."""
    environ = os.environ if environ is None else environ
    if settings.get("kubeconfig"):
        return f"--kubeconfig {settings.get('kubeconfig')}"
    if "KUBECONFIG" in environ:
        paths = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p]
        if not paths:
            return "KUBECONFIG is set but empty"
        return f"KUBECONFIG={environ['KUBECONFIG']}: no such file"
    return "no --kubeconfig, no KUBECONFIG, no ~/.kube/config"


def engine_search(docker_host: str | None = None) -> str:
    from .engine.discover import DEFAULT_SOCKETS, candidates

    tried = candidates(docker_host)
    if tried:
        return "none answered at " + ", ".join(tried)
    return "DOCKER_HOST unset, no socket at " + ", ".join(DEFAULT_SOCKETS)


def unused_cluster_options(settings: Any, *, local_mode: str | None) -> None:
    """The deployer fell back to local because no cluster was found: refuse options that only a
    cluster would use (and a registry a local process would not use), naming them and the fix.
    `local_mode` None: called before the engine probe (only namespace/context can be judged)."""
    unused = [k for k in cluster_only() if settings.get(k)]
    if not unused and not (settings.get("registry") and local_mode == "process"):
        return  # a registry alone still serves a local container run (the image is pushed there)
    if settings.get("registry"):
        unused.insert(0, "registry")
    names = [option_name(settings, k) for k in unused]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    raise ConfigError(f"{listed} {'needs' if len(names) == 1 else 'need'} a cluster, but no kubeconfig was found "
                      f"({kubeconfig_search(settings)})",
                      hint="pass --kubeconfig FILE to use a cluster, or --deployer local to run here without them")


def typed(settings: Any, key: str) -> bool:
    """Was `key` set by the user for this run (command line, argument, environment), not by a
    shared fairing.yaml that may hold cluster options for other runs?"""
    if not settings.get(key):
        return False
    source = settings.source(key) if hasattr(settings, "source") else "cli"
    return source in ("cli", "argument") or source.startswith("env ")


def unused_local_options(settings: Any, *, local_mode: str | None) -> None:
    """The local deployer was chosen explicitly: refuse cluster options typed for this run, and a
    registry a local process would not push to (`local_mode` None: before the engine probe)."""
    names = [option_name(settings, k) for k in cluster_only() if typed(settings, k)]
    if names:
        listed = " and ".join(names)
        raise ConfigError(f"{listed} {'means' if len(names) == 1 else 'mean'} nothing to the local deployer "
                          "(it runs here, not on a cluster)",
                          hint=f"drop {listed}, or use a cluster deployer (e.g. --deployer job) with a kubeconfig")
    if local_mode == "process" and typed(settings, "registry"):
        name = option_name(settings, "registry")
        raise ConfigError(f"{name} is not used by a local process run (nothing is built or pushed)",
                          hint=f"drop {name}, or run in a container (--local-mode container, with Docker/Podman "
                               "running) so the image is built and pushed there")


def local_mode_sentence(kw: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The mode line for the local deployer: what was found, not what might be configured."""
    cluster = f"no cluster: {kubeconfig_search(settings)}"
    if kw.get("mode") == "container":
        return f"local container (engine {kw.get('docker_host')}; {cluster})"
    if settings.get("local_mode") == "process":
        return f"local process (--local-mode process; {cluster})"
    return f"local process (no container engine: {engine_search(settings.get('docker_host'))}; {cluster})"


def nothing_configured(name: str, settings: Mapping[str, Any], why: str) -> ConfigError:
    """`fair status/logs/delete NAME` with no cluster and no engine: say where we looked."""
    return ConfigError(f"cannot look for workload {name!r}: no cluster ({kubeconfig_search(settings)}) and no "
                       f"container engine ({why})",
                       hint="pass --kubeconfig FILE (or --context) for a cluster workload, or set DOCKER_HOST for a "
                            "local container; local process runs end with the command that started them")


def deploy_inputs(model: str, settings: Any, *, name: str | None = None, files: Sequence[str] | None = None,
                  storage_uri: str | None = None):
    """Everything `fair deploy` can check locally (the model file and class, --file paths, the
    requirements), before an engine or a cluster is contacted; returns the serving context."""
    from . import settings as settings_mod
    from .preprocessors.serve import ServePreprocessor

    reqs = settings_mod.requirements_list(settings) or None
    return ServePreprocessor().prepare(model, name=name, files=list(files) if files else None,
                                       requirements=reqs, storage_uri=storage_uri)


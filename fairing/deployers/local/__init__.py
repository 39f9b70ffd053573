"""The `local` deployer: the default when there is no cluster and no registry. One name, one
class; what it runs on depends on the machine and on what the image is:

- a serving context (context.serve set) is a model server: local/endpoint.py, in a container with
  a published loopback port;
- otherwise, with a Docker/Podman API reachable: local/container.py, a container labelled
  app.kubernetes.io/managed-by=fairing, so `fair status/logs/delete/list` find it again later;
- otherwise: local/process.py, the build context in a temp dir run as a child process.

It always says which (`handle.mode`). The engine adapter (discovery, client, container verbs) is
fairing.engine."""
from __future__ import annotations

import sys
import uuid
from typing import Any

from ...context import BuiltImage
from ...errors import ConfigError, DeployError
from .. import labels as L
from ..base import Deployer, check_port
from ..template import template_of

MODES = ("auto", "container", "process")


def resolve_mode(setting: str = "auto", docker_host: str | None = None) -> tuple[str, str | None]:
    """("container", engine_url) or ("process", None) for the local_mode setting."""
    from ...engine import discover

    setting = setting or "auto"
    if setting not in MODES:
        raise ConfigError(f"unknown local mode {setting!r}", hint="use auto, container or process")
    if setting == "process":
        return "process", None
    url = discover.resolve(docker_host)
    if url:
        return "container", url
    if setting == "container":
        raise DeployError(f"no Docker/Podman API answered ({discover.tried(docker_host)})",
                          hint="start one (e.g. `podman system service`) and set DOCKER_HOST, "
                               "or use local_mode=process")
    return "process", None


def new_name(prefix: str = "fairing") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class LocalDeployer(Deployer):
    """Options: mode (auto/container/process), docker_host, python (process mode's interpreter),
    pull (container mode), host_port (a model server's published port), plus the common ones;
    namespace/kubeconfig/context (and replicas, for serving) are accepted so a profile can switch
    deployers freely."""

    deployer_name = "local"
    tune_backends = ("local",)
    serves = True
    kind_options = ("mode", "docker_host", "python", "pull", "host_port", "replicas")

    def configure(self, mode: str | tuple | None = None, docker_host: str | None = None, python: str | None = None,
                  pull: bool | None = None, host_port: int | None = None, replicas: int | None = None) -> None:
        if host_port is not None:
            check_port(host_port)
        self.host_port = host_port
        if isinstance(mode, tuple):
            mode, docker_host = mode[0], mode[1] or docker_host
        if mode not in (None, *MODES):
            raise ConfigError(f"unknown local mode {mode!r}", hint="use auto, container or process")
        self._mode = mode or "auto"
        self.docker_host = docker_host
        self.python = python or sys.executable
        self.pull = pull

    @property
    def mode(self) -> str:
        """"container" or "process" (probes the engine once when left to auto)."""
        if self._mode not in ("container", "process"):
            self._mode, url = resolve_mode(self._mode, self.docker_host)
            self.docker_host = url or self.docker_host
        elif self._mode == "container" and not self.docker_host:
            self.docker_host = resolve_mode("container", None)[1]
        return self._mode

    def serving(self):
        """The deployer for a model server (same name, mutators, labels, engine)."""
        from .endpoint import LocalServingDeployer

        return LocalServingDeployer(name=self.name, mutators=self.mutators, labels=self.labels,
                                    annotations=self.annotations, dry_run=self.dry_run,
                                    docker_host=self.docker_host, pull=self.pull, host_port=self.host_port)

    def render(self, image: BuiltImage) -> list[dict]:
        """What a local run would do, as a manifest-like dict (nothing is started)."""
        from . import spec

        if image.context is not None and image.context.serve is not None:
            return self.serving().render(image)
        _, c = spec.main_container(template_of(image), self.mutators)
        mode = self.mode
        run: dict[str, Any] = {"mode": mode, "command": spec.argv(c), "workingDir": c.get("workingDir"),
                               "env": c.get("env", []), "resources": c.get("resources", {})}
        if mode == "container":
            run["image"] = image.ref
            run["engine"] = self.docker_host
        else:
            run["requirements"] = list(image.context.requirements) if image.context else []
            run["python"] = self.python
        return [spec.local_manifest("LocalRun", self.name or "<generated>", {**L.MANAGED, **self.labels}, run,
                                    annotations=self.annotations)]

    def deploy(self, image: BuiltImage):
        from . import spec

        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        if image.context is not None and image.context.serve is not None:
            return self.serving().deploy(image)
        if self.host_port is not None:
            raise ConfigError("host_port is for model servers; this image runs a training workload",
                              hint="drop host_port, or deploy a model (fair deploy / PredictionEndpoint)")
        name = self.name or new_name()
        template, _ = spec.main_container(template_of(image), self.mutators)
        if self.mode == "container":
            from .container import ContainerHandle

            return ContainerHandle.start(name, image, template, self.docker_host, labels=self.labels, pull=self.pull)
        from .process import ProcessHandle

        return ProcessHandle.start(name, image, template, python=self.python)

    # -- finding earlier runs (container mode only: processes end with the command that ran them)
    def attach(self, name: str):
        """A ContainerHandle, or for a served model (label fairing.dev/kind=serve) the serving
        handle, so `fair status/delete` of an endpoint see its readiness, url and predict()."""
        from .container import ContainerHandle

        if self.mode != "container":
            raise DeployError(f"no local container engine to look for {name!r} in",
                              hint="local process runs end with the command that started them")
        handle = ContainerHandle.find(name, self.docker_host)
        if (handle.container.labels or {}).get(L.KIND) == "serve":
            return self.serving().attach(name)
        return handle

    def list(self) -> list[dict]:
        from .container import ContainerHandle

        if self.mode != "container":
            return []
        return ContainerHandle.list(self.docker_host)

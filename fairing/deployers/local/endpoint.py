"""Local serving: the serving image through the Docker/Podman API on a free 127.0.0.1 port.

The same image the cluster deployers run, the same pod template (command, env, working dir,
resources through the shared pod mutators); only the port mapping is new. The engine picks the
host port (published on loopback only, so the model is never exposed on the network), and the
handle reads it back: no race between choosing a free port and binding it."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from ...context import BuiltImage, ServeSpec
from ...engine import containers as engine
from ...engine import discover
from ...errors import ConfigError, DeployError, WaitTimeout
from .. import labels as L
from ..base import Deployer, Handle, check_port, serve_spec
from ..template import template_of
from . import spec


def engine_url(docker_host: str | None) -> str:
    url = docker_host or discover.resolve()
    if not url:
        raise DeployError(f"no Docker/Podman API answered ({discover.tried()})",
                          hint="start one (e.g. `podman system service`) and set DOCKER_HOST")
    return url


def is_model_server(container) -> bool:
    return L.is_managed(container.labels) and (container.labels or {}).get(L.KIND) == "serve"


class LocalServingDeployer(Deployer):
    """Options: name (container name; default fairing-<model>-<random>), mutators, labels,
    docker_host (default $DOCKER_HOST or a default socket), host_port (default: the engine picks),
    pull (True: always pull; None: pull when the engine lacks the image), dry_run.
    namespace/kubeconfig/context/replicas are accepted and unused, so one profile can switch
    between local and cluster serving."""

    deployer_name = "local serving"
    serves = True
    kind_options = ("docker_host", "host_port", "pull", "replicas")

    def configure(self, docker_host=None, host_port=None, pull=None, replicas=None) -> None:
        self.docker_host = docker_host
        self.host_port = check_port(host_port) if host_port is not None else None
        self.pull = pull

    def _container(self, image: BuiltImage) -> tuple[dict, ServeSpec]:
        s = serve_spec(image)
        _, c = spec.main_container(template_of(image), self.mutators)
        return c, s

    def render(self, image: BuiltImage) -> list[dict]:
        c, s = self._container(image)
        return [spec.local_manifest(
            "LocalServing", self.name or f"fairing-{s.model_name}-<random>",
            {**L.MANAGED, L.KIND: "serve", L.MODEL: s.model_name, **self.labels},
            {"image": image.ref, "engine": self.docker_host or "$DOCKER_HOST", "command": spec.argv(c),
             "workingDir": c.get("workingDir"), "env": c.get("env", []), "resources": c.get("resources", {}),
             "ports": [{"containerPort": s.port, "hostIP": "127.0.0.1", "hostPort": self.host_port or "<free>"}]})]

    def attach(self, name: str) -> "LocalServingHandle":
        """A handle (url, predict, status, logs, delete) for an endpoint started earlier."""
        client = discover.client(engine_url(self.docker_host))
        container = engine.get(client, name)
        if container is None:
            raise DeployError(f"no local endpoint named {name!r}", hint="`fair list` shows the workloads fairing started")
        if not is_model_server(container):
            raise DeployError(f"container {name!r} is not a fairing model server", hint="`fair list` shows what fairing started")
        # The container port is the one the engine publishes (what deploy() mapped).
        ports = list((container.attrs.get("HostConfig", {}).get("PortBindings") or {}))
        port = int(ports[0].split("/")[0]) if ports else 8080
        return LocalServingHandle(name, container, client, container.labels.get(L.MODEL) or name, port)

    def deploy(self, image: BuiltImage) -> "LocalServingHandle":
        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        c, s = self._container(image)
        url = engine_url(self.docker_host)
        client = discover.client(url, timeout=600)
        ref = engine.ensure_image(client, image.ref, self.pull)
        name = self.name or f"fairing-{s.model_name}-{uuid.uuid4().hex[:8]}"
        env = spec.env(c)
        env.setdefault("PORT", str(s.port))
        env["FAIRING_RUNTIME"] = "1"
        labels = {**L.MANAGED, L.NAME: name, L.KIND: "serve", L.MODEL: s.model_name, **self.labels}
        _replace_previous(client, name)
        container = engine.start(
            client, url, ref, name=name, argv=" ".join(spec.argv(c)),
            create={**spec.create_args(c, env), "labels": labels,
                    "ports": {f"{s.port}/tcp": ("127.0.0.1", self.host_port)}},
            refused_hint="check the image exists (`podman images`) and the container name is free",
            start_hint="check the host port is not taken; nothing was left in the engine")
        handle = LocalServingHandle(name, container, client, s.model_name, s.port, image=image)
        try:
            handle.host_port  # read the published port now, so a failure leaves no container behind
        except BaseException:
            handle.delete()
            raise
        return handle


def _replace_previous(client, name: str) -> None:
    """Deploying under a name already served locally replaces that endpoint (as `serving` rolls
    its Deployment); a container fairing did not start is never touched."""
    old = engine.get(client, name)
    if old is None:
        return
    if not is_model_server(old):
        raise DeployError(f"a container named {name!r} exists and is not a fairing model server",
                          hint="pick another endpoint name (name=...), or remove that container")
    old.remove(force=True)


class LocalServingHandle(Handle):
    """A served model in a local container. `url` is http://127.0.0.1:<port>."""

    mode = "container"
    what = "endpoint"

    def __init__(self, name: str, container, client, model_name: str, container_port: int,
                 image: BuiltImage | None = None):
        super().__init__(name)
        self.container, self.docker, self.image = container, client, image
        self.model_name, self.container_port = model_name, container_port
        self._host_port: int | None = None
        self._deleted = False

    @property
    def host_port(self) -> int:
        if self._host_port is None:
            deadline = time.monotonic() + 10
            while True:  # the port shows up once the container is started
                self.container.reload()
                binding = (self.container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                    f"{self.container_port}/tcp") or []
                port = next((b.get("HostPort") for b in binding if b.get("HostPort")), None)
                if port:
                    self._host_port = int(port)
                    break
                if time.monotonic() > deadline or self.container.status in ("exited", "dead"):
                    raise DeployError(f"the engine published no host port for {self.name}",
                                      hint=f"see `podman inspect {self.name}`; pass host_port= to choose one")
                time.sleep(0.1)
        return self._host_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    def client(self, protocol: str = "v1", timeout: float = 60.0):
        from ...model_client import ModelClient

        return ModelClient.for_url(self.url, self.model_name, protocol=protocol, timeout=timeout)

    def predict(self, data: Any, protocol: str = "v1", **kw) -> Any:
        return self.client(protocol).predict(data, **kw)

    def _state(self) -> str:
        """The container's state, a stopped server being Failed (it should never exit)."""
        if not engine.reload(self.container):
            return "Deleted"
        state = engine.state(self.container.attrs)
        return "Failed" if state in ("Succeeded", "Failed") else state

    def status(self) -> str:
        """Pending, Loading (up, model not ready yet), Ready, Failed (exited or load failed), Deleted."""
        from ...model_client import PredictionError

        if self._deleted:
            return "Deleted"
        state = self._state()
        if state != "Running":
            return state
        try:
            return "Ready" if self.client(timeout=5).ready() else "Loading"
        except PredictionError:
            return "Failed"
        except DeployError:  # not listening yet
            return "Loading"

    def wait(self, timeout: float | None = None) -> str:
        """Until the model answers ready. Raises DeployError if the container exits, the model fails
        to load (with the server's message), or `timeout` seconds pass."""
        from ...model_client import PredictionError

        deadline = None if timeout is None else time.monotonic() + timeout
        client = self.client(timeout=5)
        delay = 0.1
        while True:
            state = self._state()
            if state == "Deleted":
                raise DeployError(f"{self.name} was removed while waiting for it", hint="deploy it again")
            if state == "Failed":
                raise DeployError(f"the model server {self.name} exited with code "
                                  f"{engine.exit_code(self.container.attrs)}: {engine.last_line(self.container)}",
                                  hint=f"see the whole output with handle.logs() (or `podman logs {self.name}`)")
            if state == "Running":
                try:
                    if client.ready():
                        return "Ready"
                except PredictionError as exc:
                    raise DeployError(exc.server_message or exc.message,
                                      hint=f"the traceback is in the server log (handle.logs(), or `fair logs {self.name}`)") from None
                except DeployError:
                    pass  # not listening yet
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"model {self.model_name!r} in {self.name} is not ready after {timeout:g}s",
                                  hint="a slow load() needs a bigger timeout; handle.logs() shows where it is")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def logs(self, follow: bool = False) -> Iterator[str]:
        yield from engine.logs(self.container, follow)

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete(self) -> None:
        engine.remove(self.container)
        self._deleted = True

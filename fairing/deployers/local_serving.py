"""`local` serving: run the serving image through the Docker/Podman API on a free 127.0.0.1 port.

The same image the cluster deployers run, the same pod template (command, env, working dir,
resources through the shared pod mutators); only the port mapping is new. The engine picks the
host port (published on loopback only, so the model is never exposed on the network), and the
handle reads it back: no race between choosing a free port and binding it."""
from __future__ import annotations

import time
from typing import Any, Iterator

from ..context import BuiltImage
from ..errors import ConfigError, DeployError
from . import local as _local

KIND_LABEL = "fairing.dev/kind"
MODEL_LABEL = "fairing.dev/model"


def _model_env(container: dict) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", []) or [] if "value" in e}


class LocalServingDeployer:
    """Options: name (container name; default fairing-<model>-<random>), mutators, labels,
    docker_host (default $DOCKER_HOST or a default socket), host_port (default: the engine picks),
    pull (True: always pull; None: pull when the engine lacks the image), dry_run."""

    OPTIONS = ("name", "mutators", "labels", "annotations", "docker_host", "host_port", "pull", "dry_run", "cleanup",
               # accepted and unused, so one profile can switch between local and cluster serving
               "namespace", "kubeconfig", "context", "replicas")

    def __init__(self, name: str | None = None, **options: Any):
        from .serving import _port, check_options

        check_options("local serving", options, self.OPTIONS)
        o = options.get
        self.name = name
        self.mutators = tuple(o("mutators") or ())
        self.labels = dict(o("labels") or {})
        self.annotations = dict(o("annotations") or {})
        self.docker_host = o("docker_host")
        self.host_port = _port(o("host_port")) if o("host_port") is not None else None
        self.pull = o("pull")
        self.dry_run = bool(o("dry_run", False))

    def _spec(self, image: BuiltImage) -> tuple[dict, str, int]:
        ctx = image.context
        if ctx is None or ctx.kind != "serve":
            raise ConfigError("local serving needs an image built from a serving context",
                              hint="build it with the serve preprocessor (PredictionEndpoint does)")
        template = _local.apply_mutators(image.pod_template or {}, self.mutators)
        c = _local._main_container(template)
        env = _model_env(c)
        model = env.get("MODEL_NAME") or ctx.env.get("MODEL_NAME") or "model"
        port = int(env.get("PORT") or ctx.env.get("PORT") or 8080)
        return c, model, port

    def render(self, image: BuiltImage) -> list[dict]:
        c, model, port = self._spec(image)
        return [{
            "apiVersion": "fairing.dev/v1",
            "kind": "LocalServing",
            "metadata": {"name": self.name or f"fairing-{model}-<random>",
                         "labels": {**_local.MANAGED_BY, KIND_LABEL: "serve", MODEL_LABEL: model, **self.labels}},
            "spec": {
                "image": image.ref,
                "engine": self.docker_host or "$DOCKER_HOST",
                "command": list(c.get("command", [])) + list(c.get("args", [])),
                "workingDir": c.get("workingDir"),
                "env": c.get("env", []),
                "resources": c.get("resources", {}),
                "ports": [{"containerPort": port, "hostIP": "127.0.0.1", "hostPort": self.host_port or "<free>"}],
            },
        }]

    def attach(self, name: str) -> "LocalServingHandle":
        """A handle (url, predict, status, logs, delete) for an endpoint started earlier."""
        return _attach(self, name)

    def deploy(self, image: BuiltImage) -> "LocalServingHandle":
        import docker.errors

        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        c, model, port = self._spec(image)
        url = self.docker_host or _local.find_engine()
        if not url:
            tried = ", ".join(_local.engine_candidates()) or "no DOCKER_HOST and no default socket"
            raise DeployError(f"no Docker/Podman API answered ({tried})",
                              hint="start one (e.g. `podman system service`) and set DOCKER_HOST")
        client = _local._client(url, timeout=600)
        ref = _local._ensure_image(client, image, self.pull)
        name = self.name or _local.new_name(f"fairing-{model}")
        env = _local._env_list(c)
        env.setdefault("PORT", str(port))
        env["FAIRING_RUNTIME"] = "1"
        res = c.get("resources", {}) or {}
        limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        kw: dict[str, Any] = {}
        if limits.get("cpu"):
            kw["nano_cpus"] = _local._cpu_to_nano(limits["cpu"])
        if limits.get("memory"):
            kw["mem_limit"] = _local._mem_to_bytes(limits["memory"])
        labels = {**_local.MANAGED_BY, _local.NAME_LABEL: name, KIND_LABEL: "serve", MODEL_LABEL: model,
                  **self.labels}
        _replace_previous(client, name)
        try:
            container = client.containers.run(
                ref, entrypoint=list(c.get("command") or []) or None, command=list(c.get("args") or []) or None,
                working_dir=c.get("workingDir"), environment=env, labels=labels, name=name, detach=True,
                ports={f"{port}/tcp": ("127.0.0.1", self.host_port)}, **kw)
        except docker.errors.APIError as e:
            _remove_quietly(client, name)  # run() = create + start: a failed start leaves the container
            raise DeployError(f"the engine at {url} refused to run {ref}: {e.explanation or e}",
                              hint="check the image exists (`podman images`), the container name is free and "
                                   "the host port is not taken") from None
        handle = LocalServingHandle(name, container, client, model, port, image=image)
        try:
            handle.host_port  # read the published port now, so a failure leaves no container behind
        except BaseException:
            handle.delete()
            raise
        return handle


def _attach(deployer: "LocalServingDeployer", name: str) -> "LocalServingHandle":
    import docker.errors

    url = deployer.docker_host or _local.find_engine()
    if not url:
        raise DeployError("no Docker/Podman API answered", hint="start one and set DOCKER_HOST")
    client = _local._client(url)
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        raise DeployError(f"no local endpoint named {name!r}", hint="`fair list` shows the workloads fairing started") from None
    labels = container.labels or {}
    if labels.get("app.kubernetes.io/managed-by") != "fairing" or labels.get(KIND_LABEL) != "serve":
        raise DeployError(f"container {name!r} is not a fairing model server", hint="`fair list` shows what fairing started")
    env = dict(e.split("=", 1) for e in container.attrs.get("Config", {}).get("Env") or [] if "=" in e)
    return LocalServingHandle(name, container, client, labels.get(MODEL_LABEL) or name, int(env.get("PORT") or 8080))


def _replace_previous(client, name: str) -> None:
    """Deploying under a name already served locally replaces that endpoint (as `serving` rolls
    its Deployment); a container fairing did not start is never touched."""
    import docker.errors

    try:
        old = client.containers.get(name)
    except docker.errors.NotFound:
        return
    labels = old.labels or {}
    if labels.get("app.kubernetes.io/managed-by") != "fairing" or labels.get(KIND_LABEL) != "serve":
        raise DeployError(f"a container named {name!r} exists and is not a fairing model server",
                          hint="pick another endpoint name (name=...), or remove that container")
    old.remove(force=True)


def _remove_quietly(client, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except Exception:  # noqa: BLE001 - never created, or already gone
        pass


class LocalServingHandle:
    """A served model in a local container. `url` is http://127.0.0.1:<port>."""

    mode = "container"
    cleanup_on_failure = True

    def __init__(self, name: str, container, client, model_name: str, container_port: int,
                 image: BuiltImage | None = None):
        self.name = name
        self.namespace = None
        self.container = container
        self.docker = client
        self.model_name = model_name
        self.container_port = container_port
        self.image = image
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
        from ..serving import ModelClient

        return ModelClient.for_url(self.url, self.model_name, protocol=protocol, timeout=timeout)

    def predict(self, data: Any, protocol: str = "v1", **kw) -> Any:
        return self.client(protocol).predict(data, **kw)

    def _state(self) -> tuple[str, int | None]:
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return "Deleted", None
        st = self.container.attrs.get("State", {})
        if st.get("Status") in ("exited", "stopped", "dead"):
            return "Failed", st.get("ExitCode")
        return ("Running" if st.get("Status") == "running" else "Pending"), None

    def status(self) -> str:
        """Pending, Loading (up, model not ready yet), Ready, Failed (exited or load failed), Deleted."""
        from ..serving import PredictionError

        if self._deleted:
            return "Deleted"
        state, _ = self._state()
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
        from ..serving import PredictionError

        deadline = None if timeout is None else time.monotonic() + timeout
        client = self.client(timeout=5)
        delay = 0.1
        while True:
            state, code = self._state()
            if state == "Deleted":
                raise DeployError(f"{self.name} was removed while waiting for it", hint="deploy it again")
            if state == "Failed":
                raise DeployError(f"the model server {self.name} exited with code {code}: {self._last_line()}",
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
                raise DeployError(f"model {self.model_name!r} in {self.name} is not ready after {timeout:g}s",
                                  hint="a slow load() needs a bigger timeout; handle.logs() shows where it is")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _read(self) -> str:
        return self.container.logs(stdout=True, stderr=True).decode(errors="replace")

    def _last_line(self) -> str:
        try:
            lines = [l for l in self._read().splitlines() if l.strip()]
        except Exception:  # noqa: BLE001 - the container may be gone already
            return "(no output)"
        return lines[-1][:300] if lines else "(no output)"

    def logs(self, follow: bool = False) -> Iterator[str]:
        yield from _local.container_logs(self.container, follow)

    def result(self) -> Any:
        raise ConfigError("a served model has no return value", hint="call predict(data), or read logs()")

    def delete(self) -> None:
        import docker.errors

        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        self._deleted = True

    def manifests(self) -> list[dict]:
        return []

"""Container verbs on a docker.DockerClient, shared by the local container runner and local serving:
make sure the image is there, create + start (removing exactly what was created when the start
fails), find a container fairing started, read its state and its output."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import DeployError

def one_line(e: Any) -> str:
    text = " ".join(str(getattr(e, "explanation", None) or e).split())
    return text[:300]


def ensure_image(client, ref: str, pull: bool | None = None) -> str:
    """The reference the engine can run: a local image as is, an OCI layout (`oci:DIR@sha256:...`)
    loaded into the engine, or a registry reference pulled (by digest) if the engine lacks it
    (pull=True: always pull)."""
    import docker.errors

    if ref.startswith("oci:"):
        return load_layout(client, ref)
    if ref.startswith("context:"):
        raise DeployError("this image was never built (local process context)", hint="report this as a bug")
    if pull is not True:
        try:
            client.images.get(ref)
            return ref
        except docker.errors.APIError:  # ImageNotFound included: pull it
            pass
    try:
        client.images.pull(ref)
    except docker.errors.APIError as e:
        raise DeployError(f"the engine could not pull {ref}: {e.explanation or e}",
                          hint="check the registry is reachable from the engine (insecure registries "
                               "must be listed in registries.conf / daemon.json)") from None
    return ref


def load_layout(client, ref: str) -> str:
    """Load `oci:DIR@sha256:...` into the engine as an OCI archive; returns the loaded image ID."""
    layout = Path(ref[4:].split("@", 1)[0])
    if not (layout / "index.json").is_file():
        raise DeployError(f"{layout} is not an OCI image layout", hint="build again with an oci:DIR target")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=p.relative_to(layout).as_posix(), recursive=False)
    try:
        images = client.images.load(buf.getvalue())
    except Exception as e:  # docker.errors.APIError and friends: the engine refused the archive
        raise DeployError(f"the engine could not load the OCI layout {layout}: {e}",
                          hint="use --builder docker to build straight into the engine") from None
    if not images:
        raise DeployError(f"the engine loaded nothing from {layout}", hint="use --builder docker instead")
    return images[0].id


def start(client, url: str, ref: str, *, name: str, argv: str, create: Mapping[str, Any],
          refused_hint: str, start_hint: str):
    """create + start rather than run(): run() is the same two calls, and when the start fails (the
    command does not exist in the image, the host port is taken) it leaves the created container
    behind. Keeping them apart removes exactly the container created here, never a same-named one
    that was already there. `argv` only names the command in the error."""
    import docker.errors

    try:
        container = client.containers.create(ref, name=name, **create)
    except docker.errors.APIError as e:
        raise DeployError(f"the engine at {url} refused to create a container from {ref}: {e.explanation or e}",
                          hint=refused_hint) from None
    try:
        container.start()
    except BaseException as e:
        remove(container)
        if not isinstance(e, docker.errors.APIError):
            raise
        raise DeployError(f"the engine at {url} could not start {name} ({argv[:200]}): {one_line(e)}",
                          hint=start_hint) from None
    return container


def get(client, name: str):
    """The container called `name`, or None."""
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def list_labelled(client, selector: str) -> list:
    """Every container (running or not) with the label `selector` ("key=value")."""
    return client.containers.list(all=True, filters={"label": selector})


def remove(container) -> None:
    """Remove, quietly when it is already gone."""
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.APIError:  # NotFound included: nothing is left either way
        pass


def reload(container) -> bool:
    """Refresh the container's attributes; False when it no longer exists."""
    import docker.errors

    try:
        container.reload()
        return True
    except docker.errors.NotFound:
        return False


def state(attrs: Mapping[str, Any]) -> str:
    """Pending, Running, Succeeded or Failed from the engine's State."""
    st = attrs.get("State", {})
    status = st.get("Status", "")
    if status in ("created", "configured", "initialized"):
        return "Pending"
    if status in ("running", "paused", "restarting"):
        return "Running"
    if status in ("exited", "stopped", "dead"):
        return "Succeeded" if st.get("ExitCode", 1) == 0 else "Failed"
    return status.capitalize() or "Unknown"


def exit_code(attrs: Mapping[str, Any]) -> int | None:
    return attrs.get("State", {}).get("ExitCode")


def env_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in attrs.get("Config", {}).get("Env") or [] if "=" in e)


def read(container) -> str:
    """The whole output (stdout and stderr) so far."""
    return container.logs(stdout=True, stderr=True).decode(errors="replace")


def last_line(container, skip: str | None = None) -> str:
    """The last non-empty output line (for one-line errors); `skip` drops marker lines."""
    try:
        lines = [line for line in read(container).splitlines()
                 if line.strip() and not (skip and line.startswith(skip))]
    except Exception:  # noqa: BLE001 - the container may be gone already
        return "(no output)"
    return lines[-1][:300] if lines else "(no output)"


def logs(container, follow: bool = False) -> Iterator[str]:
    """A container's output (stdout and stderr) as lines; with `follow`, until it exits."""
    if not follow:
        yield from read(container).splitlines()
        return
    buf = b""
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if buf:
        yield buf.decode(errors="replace")


def wait(container, timeout: float | None) -> int | None:
    """The container's exit code once it ends; None when `timeout` seconds passed first (or the
    connection dropped meanwhile). No timeout: as long as it takes (the SDK's wait has a
    client-side read timeout, so it keeps asking)."""
    import requests

    if timeout:
        try:
            return container.wait(timeout=timeout)["StatusCode"]
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
    while True:
        try:
            return container.wait(timeout=3600)["StatusCode"]
        except requests.exceptions.ReadTimeout:
            continue

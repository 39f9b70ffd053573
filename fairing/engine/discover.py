"""Where the engine is, and a client for it.

Candidates, most explicit first: the argument, $DOCKER_HOST, then the default sockets (Docker's,
rootful Podman's, rootless Podman's under $XDG_RUNTIME_DIR). An engine "answers" when its unversioned
/_ping does. The API version comes from the ping's Api-Version header: docker-py's
`version="auto"` asks /version instead, which costs Podman ~0.4 s per client."""
from __future__ import annotations

import functools
import os
from typing import Any

DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
FALLBACK = "unix:///var/run/docker.sock"


def candidates(docker_host: str | None = None) -> list[str]:
    """Engine URLs to try, most explicit first: the argument, $DOCKER_HOST, default sockets."""
    if docker_host:
        return [docker_host]
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    socks = list(DEFAULT_SOCKETS)
    if os.environ.get("XDG_RUNTIME_DIR"):
        socks.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "podman", "podman.sock"))
    return [f"unix://{s}" for s in socks if os.path.exists(s)]


def default_host(docker_host: str | None = None) -> str:
    """The URL to use without probing: the first candidate, else Docker's default socket."""
    return (candidates(docker_host) or [FALLBACK])[0]


def _tls_kwargs(url: str) -> dict[str, Any]:
    import docker

    kwargs: dict[str, Any] = docker.utils.kwargs_from_env()  # $DOCKER_TLS_VERIFY / $DOCKER_CERT_PATH
    kwargs["base_url"] = url
    return kwargs


def ping(url: str, timeout: float = 30) -> str:
    """The engine's API version from /_ping; raises docker/requests errors when nothing answers."""
    import docker

    probe = docker.APIClient(version=docker.constants.DEFAULT_DOCKER_API_VERSION, timeout=timeout,
                             **_tls_kwargs(url))
    try:  # APIClient is a requests.Session; /_ping is unversioned
        resp = probe.get(probe.base_url + "/_ping", timeout=timeout)
        resp.raise_for_status()
    finally:
        probe.close()
    return resp.headers.get("Api-Version") or docker.constants.DEFAULT_DOCKER_API_VERSION


@functools.lru_cache(maxsize=16)
def api_version(url: str) -> str:
    """ping(url), once per engine per process (clients are made often; the version never changes
    while the engine runs)."""
    return ping(url)


def answers(url: str, timeout: float = 10) -> bool:
    """Does an engine answer at `url` now? (Always asks: an engine may have stopped.)"""
    try:
        ping(url, timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure to ping means "not usable here"
        return False


def find_engine(docker_host: str | None = None, timeout: float = 10) -> str | None:
    """The first engine URL that answers a ping, or None. A socket nobody listens on fails at
    once; the timeout only waits for a busy engine (a loaded machine's Podman can take seconds)."""
    return next((url for url in candidates(docker_host) if answers(url, timeout)), None)


def resolve(docker_host: str | None = None, *, probe: bool = True) -> str | None:
    """The engine to use, decided here for every caller (local deployers, docker builder).
    probe=True: the first candidate that answers now, or None. probe=False (the docker builder,
    which reports its own connection failure): the first candidate without asking, else Docker's
    default socket."""
    return find_engine(docker_host) if probe else default_host(docker_host)


def tried(docker_host: str | None = None) -> str:
    """Where `resolve` looked, for an error message."""
    return ", ".join(candidates(docker_host)) or "no DOCKER_HOST and no default socket"


def api_client(url: str, timeout: float = 3600):
    """A low-level docker.APIClient (what the docker builder streams builds and pushes with)."""
    import docker

    return docker.APIClient(version=api_version(url), timeout=timeout, **_tls_kwargs(url))


def client(url: str, timeout: float = 60):
    """A docker.DockerClient (containers and images as objects) for the local deployers."""
    import docker

    return docker.DockerClient(version=api_version(url), timeout=timeout, **_tls_kwargs(url))

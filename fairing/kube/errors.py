"""The API server's failures as types (see fairing.errors): every one is a DeployError (exit code
4) and, where it is a transport failure, also its kind, so the watch and the log readers decide
on `isinstance`, not on message text."""
from __future__ import annotations

from .. import errors
from ..errors import DeployError


class Unreachable(errors.Unreachable, DeployError):
    """The API server could not be connected to."""


class TimedOut(errors.TimedOut, DeployError):
    """The API server did not answer in time."""


class Unauthorized(errors.Unauthorized, DeployError):
    """The API server rejected the credentials (401)."""


class Forbidden(errors.Forbidden, DeployError):
    """RBAC denied the verb (403)."""


class Gone(errors.Gone, DeployError):
    """410: the resourceVersion asked for was compacted away."""


class NotFound(DeployError):
    """The object (not its namespace, not its CRD) does not exist."""


class CRDNotInstalled(DeployError):
    """The kind's group/version is not served: its CRD is not installed."""


class Conflict(DeployError):
    """The object already exists, or changed under us (409)."""


class HTTPStatusError(Exception):
    """A non-2xx answer from the API server (body is the raw Status JSON, usually). Internal to the
    transport: `Kube.translate` turns it into one of the errors above."""

    def __init__(self, status: int, reason: str, body: bytes | None):
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.body = status, reason, body

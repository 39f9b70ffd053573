"""Registry failures as types (see fairing.errors): each is a BuildError (exit code 3) and its
kind, so callers can retry or explain on `isinstance` instead of reading the message."""
from __future__ import annotations

from .. import errors
from ..errors import BuildError


class Unreachable(errors.Unreachable, BuildError):
    """No connection to the registry (or its token server)."""


class TimedOut(errors.TimedOut, BuildError):
    """The registry did not answer in time, after the allowed retries."""


class Unauthorized(errors.Unauthorized, BuildError):
    """The registry or its token server rejected the credentials (or their absence)."""


class Forbidden(errors.Forbidden, BuildError):
    """The account may not pull or push this repository."""

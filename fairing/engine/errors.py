"""The engine adapter's one error type. The docker SDK raises its own exceptions and lets
`requests` ones through; callers above the adapter (the docker builder, the local deployers)
decide on `EngineFailure` and never import either library to recognise a failure."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..errors import FairingError, one_line


class EngineFailure(FairingError):
    """The engine refused a request or could not be reached; `message` is its cause in one line."""


def is_engine_failure(e: BaseException) -> bool:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    return isinstance(e, (DockerException, RequestException))


@contextmanager
def typed() -> Iterator[None]:
    """Inside: docker SDK and `requests` failures come out as EngineFailure (other errors as they are)."""
    try:
        yield
    except FairingError:
        raise
    except Exception as e:
        if is_engine_failure(e):
            raise EngineFailure(one_line(e)) from e
        raise

"""One error type that carries its fix. The CLI prints `error: <message>` and `hint: <hint>`.

Failures of a remote service (Kubernetes API server, registry) are also typed by *kind*, after
go-containerregistry's transport.Error: code that retries or explains decides on the class
(`except Unreachable`), never on the words of the message. A concrete error is both its kind and
its stage: `fairing.kube.errors.Forbidden` is a `Forbidden` and a `DeployError` (exit code 4)."""


class FairingError(Exception):
    """A user-facing failure: `message` says what is wrong, `hint` says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's text on one line, cut to `limit` characters: the cause part of a message."""
    s = " ".join(str(exc).split())
    return s if len(s) <= limit else s[:limit] + "..."


class ConfigError(FairingError):
    """Bad input from the user: arguments, config file, names. CLI exit code 2."""

    exit_code = 2


class BuildError(FairingError):
    """Packaging or image build/push failed. CLI exit code 3."""

    exit_code = 3


class DeployError(FairingError):
    """The cluster or engine refused, or the workload failed. CLI exit code 4."""

    exit_code = 4


# --- kinds of remote failure (no exit code of their own: the stage class gives it) ---------------
class WaitTimeout(DeployError):
    """The workload did not reach a final state in time (it is left running). Every handle's
    wait() raises it, cluster or local."""


class TransportError(FairingError):
    """A remote service failed at the connection or HTTP level."""


class Unreachable(TransportError):
    """No connection: refused, DNS, network down. Worth retrying while a service restarts."""


class TimedOut(TransportError):
    """Connected, but no answer in time (or none after the allowed retries)."""


class Unauthorized(TransportError):
    """The credentials were rejected or missing (HTTP 401)."""


class Forbidden(TransportError):
    """The credentials are good but lack the permission (HTTP 403)."""


class Gone(TransportError):
    """What was asked for no longer exists at that version (HTTP 410, e.g. a compacted watch)."""


# --- recognising a transport library's failures by type -------------------------------------------
def causes(exc: BaseException):
    """`exc` and every exception it wraps, nearest first: __cause__ and __context__, urllib3's
    MaxRetryError.reason and requests' wrapped exception (args). Each one once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]


def tls_failure(exc: BaseException) -> bool:
    """A TLS handshake failed somewhere in `exc`'s chain: ssl's, urllib3's or requests' SSLError."""
    import ssl
    import sys

    # The libraries' own types, when loaded (an exception of theirs means they are): importing
    # requests just to ask would cost the CLI time on every error.
    kinds = (ssl.SSLError, *(m.SSLError for m in (sys.modules.get("urllib3.exceptions"),
                                                  sys.modules.get("requests.exceptions")) if m is not None))
    return any(isinstance(e, kinds) for e in causes(exc))


def tls_untrusted(exc: BaseException) -> bool:
    """The peer's certificate did not verify (unknown CA, wrong host), somewhere in `exc`'s chain:
    a configuration problem, unlike a TLS hiccup mid-transfer, which is worth a retry."""
    import ssl

    return any(isinstance(e, ssl.SSLCertVerificationError) for e in causes(exc))

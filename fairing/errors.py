"""One error type that carries its fix. The CLI prints `error: <message>` and `hint: <hint>`."""


class FairingError(Exception):
    """A user-facing failure: `message` says what is wrong, `hint` says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(FairingError):
    """Bad input from the user: arguments, config file, names. CLI exit code 2."""

    exit_code = 2


class BuildError(FairingError):
    """Packaging or image build/push failed. CLI exit code 3."""

    exit_code = 3


class DeployError(FairingError):
    """The cluster or engine refused, or the workload failed. CLI exit code 4."""

    exit_code = 4

"""Reading a function's return value back from its workload's log: the format the in-image
function shim writes (a `FAIRING_RESULT:` line with the base64 cloudpickle of the value, or
`too-large:SIZE:PATH`). Kept apart from the function preprocessor that packs the function, so that
deployers and handles read results without importing a preprocessor."""
from __future__ import annotations

import base64
from typing import Any

from .context import RESULT_MARKER
from .errors import FairingError


class ResultInOutputs(FairingError):
    """The result was too large for the log: it is the run's output file `name` (result.pkl),
    which a run handle fetches from the outputs store (fairing.runhandle.read_result)."""

    def __init__(self, size: int, path: str):
        self.size, self.name = size, path.rsplit("/", 1)[-1]
        super().__init__(f"the function's result ({size} bytes) is kept in the run's outputs, not in its log",
                         hint="read it with handle.result() from the run's handle, or fetch it: "
                              "fair runs outputs RUN_ID --path result.pkl")


def parse_result(log_text: str | bytes) -> Any:
    """The function's return value from the workload's log (the last FAIRING_RESULT line). Raises
    FairingError with the shim's own message when the run failed or printed no result."""
    import cloudpickle

    if isinstance(log_text, bytes):
        log_text = log_text.decode("utf-8", "replace")
    lines = log_text.splitlines()
    for line in reversed(lines):
        i = line.find(RESULT_MARKER)
        if i < 0:
            continue
        body = line[i + len(RESULT_MARKER):].strip()
        if body.startswith("too-large:"):
            _, size, path = body.split(":", 2)
            raise ResultInOutputs(int(size), path)
        try:
            return cloudpickle.loads(base64.b64decode(body, validate=True))
        except Exception as e:
            raise FairingError(f"cannot read the function's result from the log: {type(e).__name__}: {e}",
                               hint="the log line may be truncated; fetch result.pkl from the output directory") from None
    reason = next((ln.strip() for ln in reversed(lines) if ln.lstrip().startswith("fairing: ")), None)
    if reason is None and any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        reason = "the function raised " + next(ln.strip() for ln in reversed(lines) if ln.strip() and not ln.startswith(" "))
    raise FairingError(reason or "the workload's log has no function result (the run did not finish)",
                       hint="read the full log for details")

"""Progress of the pipeline stages (package, build, push, deploy, wait) with sizes and times.

Shown on stderr in terminals (with a spinner) and as lines in notebooks; silent when nobody is
watching (stderr not a TTY, `--output json`), so scripts and logs stay clean. FAIRING_PROGRESS=1
forces it on, =0 off."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from . import runtime, settings


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass
class Stage:
    name: str
    detail: str = ""
    seconds: float = 0.0
    ok: bool | None = None  # None while running

    def as_dict(self) -> dict:
        return {"stage": self.name, "detail": self.detail, "seconds": round(self.seconds, 3), "ok": self.ok}


def wanted() -> bool:
    """Show progress unless told: $FAIRING_PROGRESS=1/0 forces it, else only when a person watches."""
    forced = settings.progress()
    return runtime.is_interactive() if forced is None else forced


@dataclass
class Progress:
    """`with progress.stage("build") as s: ...; s.detail = "2 layers, 1.2 MB"`."""

    enabled: bool | None = None
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.enabled is None:  # an explicit choice (e.g. --output json -> False) wins
            self.enabled = wanted()
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[Stage]:
        st = Stage(name, detail)
        self.stages.append(st)
        start = time.monotonic()
        status = None
        # A live spinner only in a real terminal: in notebooks rich's live display needs ipywidgets.
        if self.enabled and self.console.is_terminal and not runtime.in_notebook():
            status = self.console.status(f"[bold]{name}[/] {detail}".rstrip())
            status.start()
        try:
            yield st
            st.ok = True
        except BaseException:
            st.ok = False
            raise
        finally:
            st.seconds = time.monotonic() - start
            if status is not None:
                status.stop()
            if self.enabled:
                mark = "[green]✓[/]" if st.ok else "[red]✗[/]"
                self.console.print(f"{mark} {name:<8} {st.detail:<40} [dim]{st.seconds:6.2f}s[/]")

    def note(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{message}[/]")

    def summary(self) -> list[dict]:
        return [s.as_dict() for s in self.stages]


def quiet() -> Progress:
    return Progress(enabled=False)

"""Showing a running workload's log as it arrives: the one writer `fair train` and the Python API
(`fairing.config.fn(f)()`, `config.run(wait=True)`, `handle.wait()`) share.

    view = LogView()                 # notebook, terminal or plain, decided here
    view.bind(handle)                # the workload's name, for the "full log" hint
    for line in handle.logs(follow=True): view(line)
    view.close()

- A line holding carriage returns (a tqdm bar) shows as its last state: one line that is rewritten
  in a terminal (`\\r`) or in a notebook (an updated display), never hundreds of lines.
- In a notebook the cell keeps the first `max_bytes` of output; after that it says once
  "output truncated; full log: fair logs NAME" and shows the last `tail` lines in one block that
  is redrawn at most every `interval` seconds. A terminal and a pipe get everything.
- `note(text)` is one line about the run itself (e.g. what an interrupt deleted).

Standard library only at import time; IPython.display is imported inside a notebook, when used."""
from __future__ import annotations

import re
import sys
import time
from collections import deque
from typing import Any, Callable

from . import runtime

MAX_BYTES = 64 * 1024  # what a notebook cell keeps of the log before it shows only the tail
TAIL_LINES = 20
INTERVAL = 0.5  # at most this often, a redraw of the tail block or of a progress bar
_PREFIX = re.compile(r"^\[[^\]\r\n]{1,80}\] ")  # "[node-1] " (multi-replica runs, fairing.kube.logs)


def last_state(line: str) -> tuple[str, bool]:
    """(what a terminal would show of `line`, whether it is still being rewritten). A line with
    carriage returns shows its last non-empty segment, keeping a "[replica] " prefix; a line
    ending in "\\r" is still being rewritten."""
    line = line.rstrip("\n")
    if "\r" not in line:
        return line, False
    m = _PREFIX.match(line)
    prefix, body = (m.group(0), line[m.end():]) if m else ("", line)
    updating = body.endswith("\r")
    parts = [p for p in body.split("\r") if p.strip()]
    return prefix + (parts[-1] if parts else ""), updating


class LogView:
    """Callable with one log line at a time; see the module docstring."""

    def __init__(self, name: str | None = None, *, mode: str | None = None,
                 write: Callable[[str], Any] | None = None, note: Callable[[str], Any] | None = None,
                 max_bytes: int = MAX_BYTES, tail: int = TAIL_LINES, interval: float = INTERVAL):
        if mode is None:
            mode = "notebook" if runtime.in_notebook() else (
                "terminal" if runtime.is_interactive(sys.stdout) else "plain")
        if mode not in ("notebook", "terminal", "plain"):
            raise ValueError(f"unknown LogView mode {mode!r}")
        self.mode, self.name = mode, name
        self._write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        self._note = note or (lambda s: (sys.stderr.write(s + "\n"), sys.stderr.flush()))
        self.max_bytes, self.tail_lines, self.interval = max_bytes, tail, interval
        self.lines = 0  # lines received
        self.shown = 0  # bytes shown in full
        self.truncated = False
        self._tail: deque[str] = deque(maxlen=tail)
        self._bar = None  # notebook: the display handle of the line being rewritten
        self._bar_text: str | None = None  # terminal/plain: the text of the line being rewritten
        self._tail_handle = None
        self._last_draw = 0.0
        self._dirty = False

    # -- the log ---------------------------------------------------------------------------------
    def bind(self, handle: Any) -> None:
        """The workload whose log this is (its name goes into the truncation hint)."""
        self.name = self.name or getattr(handle, "name", None)

    def __call__(self, line: str) -> None:
        self.lines += 1
        text, updating = last_state(line)
        if updating:
            self._update(text)
        else:
            self._line(text)

    def note(self, text: str) -> None:
        """One line about the run (not part of its log)."""
        self._end_bar()
        self._note(text)

    def close(self) -> None:
        """The log ended: a bar still being rewritten stays as it is; the tail block is redrawn."""
        if self._bar_text is not None and self.mode != "notebook":
            self._end_bar()
        self._bar = None
        if self._dirty:
            self._draw_tail()

    # -- rendering -------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        if self.mode == "notebook":
            if self._bar is not None:  # the bar's final state replaces it, in place
                self._display_update(self._bar, text)
                self._bar = None
                self.shown += len(text) + 1
                return
            self._keep(text)
            return
        if self._bar_text is not None:
            self._bar_text = None
            if self.mode == "terminal":
                self._write("\r" + text + "\x1b[K\n")
                return
        self._write(text + "\n")

    def _update(self, text: str) -> None:
        now = time.monotonic()
        if self.mode == "terminal":
            if self._bar_text is None or now - self._last_draw >= self.interval:
                self._write("\r" + text + "\x1b[K")
                self._last_draw = now
            self._bar_text = text
        elif self.mode == "plain":
            self._bar_text = text  # written once, when it ends: a pipe cannot rewrite a line
        elif self.truncated:
            self._tail_push(text)
        elif self._bar is None:
            self._bar = self._display(text)
            self._last_draw = now
        elif now - self._last_draw >= self.interval:
            self._display_update(self._bar, text)
            self._last_draw = now

    def _end_bar(self) -> None:
        if self._bar_text is not None:
            text, self._bar_text = self._bar_text, None
            self._write(("\r" + text + "\x1b[K\n") if self.mode == "terminal" else text + "\n")

    def _keep(self, text: str) -> None:
        """Notebook: the line in full while under the cap, else into the tail block."""
        size = len(text.encode("utf-8", "replace")) + 1
        if not self.truncated and self.shown + size <= self.max_bytes:
            self.shown += size
            self._write(text + "\n")
            return
        if not self.truncated:
            self.truncated = True
            where = f"fair logs {self.name}" if self.name else "handle.logs()"
            self._write(f"... output truncated after {self.shown // 1024} KB; the last {self.tail_lines} lines "
                        f"follow (full log: {where})\n")
        self._tail_push(text)

    def _tail_push(self, text: str) -> None:
        self._tail.append(text)
        self._dirty = True
        if time.monotonic() - self._last_draw >= self.interval:
            self._draw_tail()

    def _draw_tail(self) -> None:
        text = "\n".join(self._tail)
        if self._tail_handle is None:
            self._tail_handle = self._display(text)
        else:
            self._display_update(self._tail_handle, text)
        self._last_draw = time.monotonic()
        self._dirty = False

    @staticmethod
    def _display(text: str):
        from IPython.display import display

        sys.stdout.flush()  # what was printed before shows before the block
        return display({"text/plain": text}, raw=True, display_id=True)

    @staticmethod
    def _display_update(handle: Any, text: str) -> None:
        handle.update({"text/plain": text}, raw=True)


def wanted(quiet: bool | None) -> bool:
    """Stream the log? quiet=True: no; False: yes; None: when a person watches (a notebook or a
    terminal; $FAIRING_PROGRESS=1/0 forces it), like the progress lines."""
    if quiet is not None:
        return not quiet
    from .settings import progress as forced

    f = forced()
    return runtime.is_interactive() if f is None else f

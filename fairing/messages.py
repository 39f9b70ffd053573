"""How fairing talks to a person besides errors: notices (one line saying what fairing decided for
you) and warnings. In Python both stay ordinary: notices go to the `fairing` logger, warnings are
`warnings.warn`. The `fair` CLI calls `install_cli()` so that each prints as one line on stderr,
`fair: ...` and `warning: ...`, without the file:line: Category frame and echoed source line."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

_sink: Callable[[str], None] | None = None
# Tracebacks with errors (--debug or $FAIRING_DEBUG): a value of this process, set by the CLI,
# never written to the environment, where workloads and child processes would inherit it.
_debug = False


def set_debug(on: bool = True) -> None:
    global _debug
    _debug = on


def debugging() -> bool:
    return _debug


def notice(message: str) -> None:
    """Tell the user something fairing did on their behalf (e.g. requirements it added)."""
    if _sink is not None:
        _sink(message)
    else:
        logging.getLogger("fairing").info(message)


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def format_warning(message, category=None, filename=None, lineno=None, line=None) -> str:
    return f"warning: {one_line(message)}\n"


def install_cli(write: Callable[[str], None] | None = None, *, quiet_notices: bool = False) -> None:
    """Route warnings and notices to one-line messages on stderr (the CLI's process only)."""
    global _sink
    write = write or (lambda text: (sys.stderr.write(text + "\n"), sys.stderr.flush()))

    def show(message, category, filename, lineno, file=None, line=None):
        write(format_warning(message).rstrip("\n"))

    warnings.showwarning = show
    _sink = None if quiet_notices else (lambda m: write(f"fair: {one_line(m)}"))


def out(text: str = "") -> None:
    """A line of the command's own output (stdout, flushed: pipes and progress interleave)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def info(text: str) -> None:
    """A line for the person at the terminal (stderr), never part of the output."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def tell(message: str) -> None:
    """A line the person must see whatever the settings (e.g. what an interrupt deleted): the CLI's
    `fair: ...` line, or one `fairing: ...` line on stderr in Python (a notebook cell shows it)."""
    if _sink is not None:
        _sink(message)
    else:
        info(f"fairing: {one_line(message)}")

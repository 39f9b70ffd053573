"""`python` preprocessor: ship a script, or a directory with its executable, and run it.

A file entry ships that file alone (plus `include`); a directory entry ships the directory (minus
ignored paths) and runs an explicit or guessed executable. Entrypoint: `python -u <executable>`
(unbuffered, so logs stream while the job runs).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..context import BuildContext
from ..errors import ConfigError
from .base import PYTHON, Preprocessor
from .files import collect

# Tried in order when a directory has no explicit executable.
GUESSES = ("train.py", "main.py", "__main__.py")


class PythonPreprocessor(Preprocessor):
    """Options (besides the base ones): `executable` (path relative to the directory) and `args`
    (extra argv). Both can also be given per call to `prepare`."""

    kind = "python"

    def __init__(self, *, executable: str | None = None, args: Sequence[str] = (), **kw):
        super().__init__(**kw)
        self.executable = executable
        self.args = tuple(args)

    def prepare(self, entry: str | os.PathLike, *, executable: str | None = None,
                args: Sequence[str] | None = None) -> BuildContext:
        path = Path(entry)
        if not path.exists():
            raise ConfigError(f"{path} does not exist", hint="pass a Python file or a directory containing one")
        executable = executable or self.executable
        args = tuple(self.args if args is None else args)
        if path.is_dir():
            files = collect(path)
            exe = self._executable(path, files, executable)
            base_dir, auto_reqs = path, path / "requirements.txt"
        else:
            if executable:
                raise ConfigError(f"executable={executable!r} only applies to a directory, but {path} is a file",
                                  hint=f"pass the directory, or drop executable and run {path.name}")
            if path.suffix != ".py":
                raise ConfigError(f"{path} is not a Python file", hint="pass a .py file, or use the notebook preprocessor for .ipynb")
            files = collect(path)
            exe, base_dir, auto_reqs = path.name, path.parent, None
        files.update(self.included_files(base_dir))
        return self._context(
            files,
            [PYTHON, "-u", exe, *args],
            requirements=self.resolve_requirements(base_dir, auto_reqs),
        )

    @staticmethod
    def _executable(root: Path, files: dict, explicit: str | None) -> str:
        if explicit:
            rel = Path(explicit).as_posix()
            if os.path.isabs(explicit) or rel.startswith("../"):
                raise ConfigError(f"executable {explicit!r} must be a path inside {root}", hint="give it relative to the directory")
            if rel not in files:
                target = root / rel
                why = ("is a directory" if target.is_dir() else "is excluded by an ignore rule" if target.exists()
                       else "does not exist")
                raise ConfigError(f"executable {rel} {why} in {root}", hint="check the name, or your .fairingignore / .gitignore")
            return rel
        for name in GUESSES:
            if name in files:
                return name
        top = sorted(k for k in files if "/" not in k and k.endswith(".py"))
        if len(top) == 1:
            return top[0]
        if not top:
            raise ConfigError(f"no Python file at the top level of {root}",
                              hint="pass executable='path/to/script.py' (relative to the directory)")
        raise ConfigError(
            f"cannot guess which file to run in {root}: candidates are {', '.join(top)}",
            hint=f"pass executable='{top[0]}' (or name the script train.py or main.py)",
        )

"""Training–serving skew, checked before building: the packages pickled objects come from, at the
versions they were pickled with, against the versions the image pins.

Pickles are read as data, never loaded (loading runs code and imports the heavy packages):
- every `module.name` global a pickle refers to (cloudpickle'd functions and their closures, model
  objects) maps to its distribution and the version installed here, the process that pickled it;
- scikit-learn estimators also store the version that fitted them (`_sklearn_version`), which wins
  over the installed one, so a model file made elsewhere is judged by its own version.
joblib files (numpy arrays written raw between pickle opcodes, optionally compressed) are scanned
for the opcodes around those strings rather than parsed. A version the image's requirements do not
pin is not judged: the image decides it, and there is nothing to compare with."""
from __future__ import annotations

import bz2
import gzip
import lzma
import re
import sys
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Mapping

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pk", ".sav", ".cloudpickle")
MAX_SCAN_BYTES = 1 << 30  # bigger files are not read at all: the check must stay cheap
_SKLEARN = re.compile(rb"_sklearn_version\x94?(?:\x8c(.)|X(....))", re.S)
_NAME = re.compile(rb"^[A-Za-z_][\w.]*$")


class SkewWarning(UserWarning):
    """A pickled object will be loaded by a different version of its package than made it."""


def _decompress(data: bytes) -> bytes:
    try:
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
        if data[:3] == b"BZh":
            return bz2.decompress(data)
        if data[:6] == b"\xfd7zXZ\x00" or data[:1] == b"\x5d":
            return lzma.decompress(data)
        if data[:1] == b"\x78":
            return zlib.decompress(data)
    except (OSError, ValueError, EOFError, lzma.LZMAError, zlib.error):
        pass
    return data


def _short_str(data: bytes, i: int) -> tuple[bytes, int] | None:
    """A SHORT_BINUNICODE string at i (and the index after it and an optional MEMOIZE)."""
    if i + 1 >= len(data) or data[i] != 0x8C:
        return None
    n = data[i + 1]
    s = data[i + 2:i + 2 + n]
    j = i + 2 + n
    if j < len(data) and data[j] == 0x94:
        j += 1
    return s, j


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
# cloudpickle refers to a module a function uses as a global through these, with the name as argument.
_IMPORTERS = {"subimport", "_import_module", "import_module", "__import__"}


def _walk_globals(data: bytes, mods: set[str]) -> None:
    """Follow the opcodes (with the memo, which holds module names used more than once) as far as
    the stream is a plain pickle: GLOBAL / STACK_GLOBAL modules, and modules cloudpickle imports by
    name. Stops quietly where joblib's raw array data begins."""
    import pickletools

    memo: dict[int, object] = {}
    recent: list[object] = []  # values pushed, as far as we track them (strings, else None)
    want_module = False
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in _STRINGS:
                value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                value = memo.get(int(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
                continue
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = recent[-1] if recent else None
                continue
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                mod, attr = (arg.split(" ", 1) if name == "GLOBAL" else (recent[-2:] + [None, None])[:2]
                             if len(recent) >= 2 else (None, None))
                if isinstance(mod, str):
                    mods.add(mod)
                want_module = attr in _IMPORTERS
                recent.append(None)
                continue
            else:
                recent.append(None)
                continue
            recent.append(value)
            if want_module and isinstance(value, str):
                mods.add(value)
                want_module = False
    except Exception:  # not a pickle from here on (joblib array data, a truncated file)
        return


def globals_in(data: bytes) -> set[str]:
    """Module names of the globals a pickle refers to: walked opcode by opcode, then also found by
    scanning (GLOBAL opcodes of protocols 0-3, STACK_GLOBAL after two short strings in 4-5), so
    the raw array data joblib writes between opcodes does not hide what follows it."""
    mods: set[str] = set()
    # A pickle may follow a header (fairing's function payload starts with a JSON line).
    start = re.search(rb"\x80[\x02-\x05]", data)
    _walk_globals(data[start.start():] if start else data, mods)
    for m in re.finditer(rb"c([A-Za-z_][\w.]*)\n([A-Za-z_][\w.]*)\n", data):
        mods.add(m.group(1).decode())
    for m in re.finditer(rb"\x8c", data):
        first = _short_str(data, m.start())
        if first is None or not _NAME.match(first[0]):
            continue
        second = _short_str(data, first[1])
        if second is None or not _NAME.match(second[0]):
            continue
        if second[1] < len(data) and data[second[1]] == 0x93:
            mods.add(first[0].decode())
    return mods


def sklearn_versions(data: bytes) -> set[str]:
    out = set()
    for m in _SKLEARN.finditer(data):
        if m.group(1) is not None:
            n = m.group(1)[0]
            start = m.end()
            raw = data[start:start + n]
        else:
            n = int.from_bytes(m.group(2), "little")
            raw = data[m.end():m.end() + n]
        try:
            out.add(raw.decode("ascii"))
        except UnicodeDecodeError:
            continue
    return out


def _distributions(tops: set[str]) -> dict[str, list[str]]:
    """{top-level module: [distributions]} for just these modules. A module named like its
    distribution (numpy, joblib) is found directly; the others (sklearn -> scikit-learn) from the
    distributions' top_level.txt, stopping once all are found. importlib's packages_distributions()
    would read every installed RECORD, close to a second in a big environment."""
    from importlib.metadata import PackageNotFoundError, distribution, distributions

    found: dict[str, list[str]] = {}
    for top in tops:
        try:
            found[top] = [distribution(top).metadata["Name"]]
        except PackageNotFoundError:
            continue
    missing = tops - set(found)
    if missing:
        for dist in distributions():
            names = (dist.read_text("top_level.txt") or "").split()
            for top in missing.intersection(names):
                found.setdefault(top, []).append(dist.metadata["Name"])
            if missing <= set(found):
                break
    return found


def _installed(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _pins(requirements: Iterable[str]) -> dict[str, object]:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for r in requirements:
        try:
            req = Requirement(r)
        except InvalidRequirement:
            continue
        if req.specifier:
            pins[canonicalize_name(req.name)] = req
    return pins


def pickled_versions(data: bytes) -> dict[str, tuple[str, str]]:
    """{distribution: (version, how it is known)} for what a pickle refers to."""
    from packaging.utils import canonicalize_name

    data = _decompress(data)
    found: dict[str, tuple[str, str]] = {}
    tops = {mod.split(".")[0] for mod in globals_in(data)}
    tops = {t for t in tops if t not in sys.stdlib_module_names and t not in ("__main__", "__builtin__", "copy_reg")}
    dists = _distributions(tops) if tops else {}
    for top in sorted(tops):
        for dist in dists.get(top, []):
            v = _installed(dist)
            if v:
                found[canonicalize_name(dist)] = (v, "installed here")
    for v in sorted(sklearn_versions(data)):
        found["scikit-learn"] = (v, "stored in the pickle")
    return found


def check(files: Mapping[str, object], requirements: Iterable[str]) -> list[str]:
    """Warn (SkewWarning) for each pickled package whose version the image's pins exclude; returns
    the messages."""
    pickles = sorted(((d, s) for d, s in files.items() if d.endswith(PICKLE_SUFFIXES)), key=lambda f: f[0])
    requirements = list(requirements)
    if not pickles or not requirements:
        return []  # nothing to compare: spares every run of a plain script the `packaging` import
    from packaging.version import InvalidVersion, Version

    pins = _pins(requirements)
    if not pins:
        return []
    messages = []
    for dst, src in pickles:
        data = _read(src)
        if data is None:
            continue
        what = "the pickled code" if dst.startswith(".fairing/") else dst
        for dist, (version, how) in sorted(pickled_versions(data).items()):
            req = pins.get(dist)
            if req is None:
                continue
            try:
                if req.specifier.contains(Version(version), prereleases=True):
                    continue
            except InvalidVersion:
                continue
            if how == "stored in the pickle":
                made = f"{what} was pickled with {req.name} {version}"
            else:
                made = f"{what} refers to {req.name}, which is {version} here"
            msg = (f"{made}, but the image pins {req}: loading it there may fail or behave differently; "
                   f"pin {req.name}=={version}, or re-create it with {req.name}{req.specifier}")
            messages.append(msg)
            warnings.warn(msg, SkewWarning, stacklevel=3)
    return messages


def _read(src) -> bytes | None:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    p = Path(src)
    try:
        if p.stat().st_size > MAX_SCAN_BYTES:
            return None
        return p.read_bytes()
    except OSError:
        return None


def check_context(ctx) -> list[str]:
    """`check` for a BuildContext (directories shipped as files included)."""
    return check(ctx.files, ctx.requirements)

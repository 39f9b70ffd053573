"""`function` preprocessor: ship a Python function (with its arguments) and run it in the image.

The function is cloudpickled by value when its module is not installed (a notebook, `__main__`, a
local module), and by reference when it comes from an installed package, which the requirements
must then provide. Before shipping, anything the function captures that cannot be pickled (locks,
open files, sockets, DB connections, ...) is found and named. The shim (image_runtime/run_function.py)
checks the Python version before unpickling, runs the function, writes the result to
`$FAIRING_OUTPUT_DIR/result.pkl` and prints it as one `FAIRING_RESULT:<base64>` log line, which
`parse_result` turns back into the value.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import site
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..context import OUTPUT_DIR, RESULT_MARKER, BuildContext
from ..errors import BuildError, ConfigError
from .. import requirements as reqs_mod
from .base import PYTHON, RUNTIME_DIR, Preprocessor, host_python

SHIM = Path(__file__).parent.parent / "image_runtime" / "run_function.py"
PAYLOAD = f"{RUNTIME_DIR}/function.pkl"
LOG_LIMIT = 4 << 20  # base64 chars of a result printed in the log; bigger results stay in the file
FORMAT = 1


class FunctionPreprocessor(Preprocessor):
    """`prepare(fn, args=(), kwargs=None)`. Option `by_value`: extra module names to pickle by
    value (modules that are importable here but will not be installed in the image)."""

    kind = "function"

    def __init__(self, *, by_value: Sequence[str] = (), **kw):
        super().__init__(**kw)
        self.by_value = tuple(by_value)

    def prepare(self, entry: Callable, *, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> BuildContext:
        import cloudpickle

        if not callable(entry):
            raise ConfigError(f"{entry!r} is not a function", hint="pass the function object itself, e.g. prepare(train)")
        args, kwargs = tuple(args), dict(kwargs or {})
        name = getattr(entry, "__qualname__", None) or type(entry).__name__
        payload = dump(entry, args, kwargs, by_value=self.by_value, name=name)
        header = {
            "format": FORMAT,
            "python": host_python(),
            "cloudpickle": cloudpickle.__version__,
            "function": name,
            "output_dir": OUTPUT_DIR,
            "marker": RESULT_MARKER,
            "log_limit": LOG_LIMIT,
        }
        if len(payload) > self.limit():
            raise _too_big(name, entry, args, kwargs, len(payload), self.limit())
        files = self.included_files(Path.cwd())
        files[PAYLOAD] = json.dumps(header, sort_keys=True).encode() + b"\n" + payload
        files[f"{RUNTIME_DIR}/run_function.py"] = SHIM.read_bytes()
        reqs = reqs_mod.ensure(self.resolve_requirements(Path.cwd()), [f"cloudpickle=={cloudpickle.__version__}"])
        return self._context(
            files,
            [PYTHON, "-u", f"{RUNTIME_DIR}/run_function.py"],
            requirements=reqs,
            python=host_python(),
            outputs={"result": f"{OUTPUT_DIR}/result.pkl"},
        )


def dump(fn: Callable, args: tuple = (), kwargs: dict | None = None, *, by_value: Sequence[str] = (), name: str = "") -> bytes:
    """cloudpickle (fn, args, kwargs), local modules by value; a clear BuildError naming the
    captured object when something cannot be pickled."""
    import cloudpickle

    kwargs = kwargs or {}
    name = name or getattr(fn, "__qualname__", repr(fn))
    modules = set(by_value) | {m for m in referenced_modules(fn, args, kwargs) if is_local_module(m)}
    with pickling_by_value(modules):
        try:
            return cloudpickle.dumps((fn, args, kwargs))
        except Exception as e:
            culprit = find_unpicklable(fn, args, kwargs)
            if culprit is None:
                raise BuildError(f"cannot ship function {name}: {type(e).__name__}: {e}",
                                 hint="make sure everything the function uses can be pickled") from None
            label, obj = culprit
            kind, advice = describe(obj)
            raise BuildError(
                f"cannot ship function {name}: it captures {label} ({_article(kind)} {kind}), which cannot be pickled; {advice}",
                hint="everything a shipped function uses from outside (globals, closures, defaults, arguments) is pickled",
            ) from None


def _too_big(name, fn, args, kwargs, size: int, limit: int) -> BuildError:
    """Name the captured values that make the pickle big: usually a dataset read at module level."""
    import cloudpickle

    from .base import MAX_CONTEXT_ENV, size_text

    sizes = []
    for label, v in captured(fn, args, kwargs):
        try:
            sizes.append((len(cloudpickle.dumps(v)), label))
        except Exception:
            continue
    biggest = ", ".join(f"{label} ({size_text(n)})" for n, label in sorted(sizes, key=lambda t: (-t[0], t[1]))[:3])
    return BuildError(
        f"function {name} pickles to {size_text(size)}, over the {size_text(limit)} limit; biggest captured: {biggest or 'none'}",
        hint=f"load large data inside the function instead of capturing it, or raise the limit with {MAX_CONTEXT_ENV}",
    )


# -- what a function captures -----------------------------------------------------------------------

def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def captured(fn: Any, args: tuple = (), kwargs: Mapping | None = None) -> Iterator[tuple[str, Any]]:
    """(label, value) for everything pickling `fn` would drag along: referenced globals, closure
    cells, defaults, bound `self`, and the call's arguments. Labels read like "'db'" or
    "argument 1"."""
    if inspect.ismethod(fn):
        yield "'self'", fn.__self__
        fn = fn.__func__
    code = getattr(fn, "__code__", None)
    if code is not None:
        g = getattr(fn, "__globals__", {})
        for n in sorted(_code_names(code)):
            if n in g:
                yield repr(n), g[n]
        for n, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
            try:
                yield repr(n), cell.cell_contents
            except ValueError:  # an empty cell (variable not assigned yet)
                pass
        defaults = getattr(fn, "__defaults__", None) or ()
        positional = code.co_varnames[: code.co_argcount]
        for n, v in zip(positional[len(positional) - len(defaults):], defaults):
            yield f"default of {n!r}", v
        for n, v in (getattr(fn, "__kwdefaults__", None) or {}).items():
            yield f"default of {n!r}", v
    elif not isinstance(fn, (types.BuiltinFunctionType, type)):
        yield "the callable itself", fn
    for i, a in enumerate(args, 1):
        yield f"argument {i}", a
    for k, v in (kwargs or {}).items():
        yield f"keyword argument {k!r}", v


def referenced_modules(fn, args, kwargs, depth: int = 3) -> set[str]:
    """Names of modules whose code the pickle would reference, following functions we will pickle
    by value (so a notebook helper calling another local helper works)."""
    mods: set[str] = set()
    seen: set[int] = set()

    def visit(f, a=(), kw=None, d=0):
        if id(f) in seen or d > depth:
            return
        seen.add(id(f))
        m = getattr(f, "__module__", None)
        if m:
            mods.add(m)
        for _, v in captured(f, a, kw):
            if isinstance(v, types.ModuleType):
                mods.add(v.__name__)
            elif isinstance(v, (types.FunctionType, type)):
                if is_local_module(getattr(v, "__module__", "") or ""):
                    visit(v, d=d + 1)
                else:
                    mods.add(getattr(v, "__module__", "") or "")
            else:
                mods.add(type(v).__module__)

    visit(fn, args, kwargs)
    mods.discard("")
    return mods


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(getattr(site, "getsitepackages", lambda: [])())
    roots.add(getattr(site, "getusersitepackages", lambda: None)())
    return [Path(r).resolve() for r in roots if r]


def is_local_module(module_name: str) -> bool:
    """A module the image will not have: not from the stdlib or an installed package."""
    if module_name in ("__main__", "builtins") or module_name not in sys.modules:
        return False
    mod = sys.modules[module_name]
    f = getattr(mod, "__file__", None)
    if not f:
        return False  # builtin or namespace package: import by reference
    p = Path(f).resolve()
    return not any(root == p or root in p.parents for root in _installed_roots())


@contextlib.contextmanager
def pickling_by_value(modules):
    import cloudpickle

    added = []
    already = set(cloudpickle.list_registry_pickle_by_value())
    for m in sorted(modules):
        if m in sys.modules and m != "__main__" and m not in already:
            cloudpickle.register_pickle_by_value(sys.modules[m])
            added.append(m)
    try:
        yield
    finally:
        for m in added:
            cloudpickle.unregister_pickle_by_value(sys.modules[m])


def _picklable(obj) -> bool:
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
        return True
    except Exception:
        return False


def find_unpicklable(fn, args=(), kwargs=None) -> tuple[str, Any] | None:
    """The first captured object that cannot be pickled, narrowed down into containers and
    attributes ("'cfg'['conn']") and through local helper functions ("'db' (via helper)")."""
    seen: set[int] = set()

    def narrow(label: str, obj, via: str = "", depth: int = 0):
        if depth > 6:
            return label + via, obj
        items: list[tuple[str, Any]] = []
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            for sub, v in captured(obj):
                if id(v) not in seen:
                    seen.add(id(v))
                    if not _picklable(v):
                        return narrow(sub, v, f" (via {getattr(obj, '__qualname__', label)})", depth + 1)
            return label + via, obj
        if isinstance(obj, dict):
            items = [(f"{label}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            items = [(f"{label}[{i}]", v) for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType)):
            items = [(f"{label}.{k}", v) for k, v in vars(obj).items()]
        for sub, v in items:
            if not _picklable(v):
                return narrow(sub, v, via, depth + 1)
        return label + via, obj

    for label, obj in captured(fn, args, kwargs):
        if not _picklable(obj):
            return narrow(label, obj)
    return None


# Friendly names and the fix for the usual suspects; anything else is named by its type.
_KNOWN = [
    ("_thread.lock", "threading.Lock", "create it inside the function instead"),
    ("_thread.RLock", "threading.RLock", "create it inside the function instead"),
    ("socket.socket", "socket.socket", "connect inside the function instead"),
    ("sqlite3.Connection", "sqlite3.Connection", "open it inside the function instead"),
    ("sqlite3.Cursor", "sqlite3.Cursor", "open the connection inside the function instead"),
    ("builtins.generator", "generator", "build it inside the function, or pass a list"),
]


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def describe(obj) -> tuple[str, str]:
    import io

    t = type(obj)
    full = f"{t.__module__}.{t.__qualname__}"
    for name, pretty, advice in _KNOWN:
        if full == name:
            return pretty, advice
    if isinstance(obj, io.IOBase):
        return f"open file {getattr(obj, 'name', '')!r}".replace(" ''", ""), "open it inside the function instead"
    if "connection" in t.__qualname__.lower() or "cursor" in t.__qualname__.lower():
        return full, "open it inside the function instead"
    return full.removeprefix("builtins."), "create it inside the function instead"


# The result is read back by fairing.results (deployers read it too, without importing a
# preprocessor); re-exported here, where the README has always imported it from.
from ..results import parse_result  # noqa: E402,F401

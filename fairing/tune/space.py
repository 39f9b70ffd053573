"""Search-space values: `uniform`, `loguniform`, `intrange`, `choice`, and the CLI's `--param` syntax.

    space = {"lr": loguniform(1e-4, 1e-1), "layers": choice([1, 2, 3]), "x": uniform(0, 6)}
    parse_param("lr=1e-4..1e-1:log")  -> ("lr", LogUniform(0.0001, 0.1))

Each value knows how to ask Optuna for a sample, how to lay itself out on a grid, how Katib
writes it (`parameters[].feasibleSpace`) and how to read a trial's value back from text (env and
args are strings). Optuna is imported by the caller, never here: this module stays light."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

PARAM_ENV_PREFIX = "FAIRING_PARAM_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number, not {v!r}", hint="e.g. uniform(0, 6)")
    return v


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        _number(self.low, "uniform low"), _number(self.high, "uniform high")
        if not self.low < self.high:
            raise ConfigError(f"uniform({self.low}, {self.high}): low must be below high",
                              hint="swap the bounds")

    log = False

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def grid(self, n: int) -> list:
        if n <= 1:
            return [self._mid()]
        if self.log:
            a, b = math.log(self.low), math.log(self.high)
            return [float(math.exp(a + (b - a) * i / (n - 1))) for i in range(n)]
        return [float(self.low + (self.high - self.low) * i / (n - 1)) for i in range(n)]

    def _mid(self) -> float:
        return math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2

    def katib(self) -> dict:
        fs = {"min": katib_number(self.low), "max": katib_number(self.high)}
        if self.log:
            fs["distribution"] = "logUniform"
        return {"parameterType": "double", "feasibleSpace": fs}

    def parse(self, text: str) -> float:
        return float(text)

    def describe(self) -> str:
        return f"{type(self).__name__.lower()}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class LogUniform(Uniform):
    log = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise ConfigError(f"loguniform({self.low}, {self.high}): low must be above 0",
                              hint="a log scale needs positive bounds, e.g. loguniform(1e-4, 1e-1)")


@dataclass(frozen=True)
class IntRange:
    """Whole numbers from `low` to `high`, both included."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        for what, v in (("low", self.low), ("high", self.high), ("step", self.step)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"intrange {what} must be a whole number, not {v!r}",
                                  hint="e.g. intrange(1, 8); use uniform() for fractions")
        if not self.low < self.high:
            raise ConfigError(f"intrange({self.low}, {self.high}): low must be below high", hint="swap the bounds")
        if self.step < 1:
            raise ConfigError(f"intrange step must be 1 or more, not {self.step}", hint="e.g. intrange(8, 64, step=8)")
        if self.log and (self.low < 1 or self.step != 1):
            raise ConfigError(f"intrange({self.low}, {self.high}, log=True) needs low >= 1 and step 1",
                              hint="a log scale needs positive bounds")

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self, n: int) -> list:
        vals = self.values()
        if n >= len(vals):
            return vals
        if n <= 1:
            return [vals[len(vals) // 2]]
        picked = sorted({vals[round(i * (len(vals) - 1) / (n - 1))] for i in range(n)})
        return picked

    def katib(self) -> dict:
        fs = {"min": str(self.low), "max": str(self.high)}
        if self.step != 1:
            fs["step"] = str(self.step)
        if self.log:
            fs["distribution"] = "logUniform"
        return {"parameterType": "int", "feasibleSpace": fs}

    def parse(self, text: str) -> int:
        return int(float(text)) if re.fullmatch(r"[+-]?\d+(\.0*)?", text.strip()) else int(text)

    def describe(self) -> str:
        extra = (f", step={self.step}" if self.step != 1 else "") + (", log" if self.log else "")
        return f"intrange({self.low}, {self.high}{extra})"


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("choice() needs at least one value", hint="e.g. choice([1, 2, 3])")
        for v in self.values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ConfigError(f"choice value {v!r} is a {type(v).__name__}",
                                  hint="choices are strings, numbers, booleans or None")
        texts = [_text(v) for v in self.values]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"choice{list(self.values)} has duplicate values", hint="list each value once")

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.values))

    def grid(self, n: int) -> list:
        return list(self.values)

    def katib(self) -> dict:
        return {"parameterType": "categorical", "feasibleSpace": {"list": [_text(v) for v in self.values]}}

    def parse(self, text: str) -> Any:
        """The original value back from its text (Katib substitutes strings)."""
        for v in self.values:
            if _text(v) == text:
                return v
        raise ValueError(f"{text!r} is not one of {[_text(v) for v in self.values]}")

    def describe(self) -> str:
        return "choice(" + ", ".join(_text(v) for v in self.values) + ")"


Param = Uniform | IntRange | Choice


def uniform(low: float, high: float) -> Uniform:
    """A float drawn evenly between low and high."""
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    """A float between low and high on a log scale (learning rates, regularisation)."""
    return LogUniform(low, high)


def intrange(low: int, high: int, step: int = 1, *, log: bool = False) -> IntRange:
    """A whole number from low to high, both included."""
    return IntRange(low, high, step, log)


def choice(values: Iterable[Any], *more: Any) -> Choice:
    """One of the given values: choice([1, 2, 3]) or choice("adam", "sgd")."""
    if more or isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = (values, *more)
    return Choice(tuple(values))


def _text(v: Any) -> str:
    """How a value is written into args, env and Katib: the same text everywhere."""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def value_text(v: Any) -> str:
    return _text(v)


def katib_number(v: float) -> str:
    """A number as Katib's feasibleSpace wants it: a string, floats in full precision (repr)."""
    return repr(float(v)) if isinstance(v, float) else str(v)


def env_name(name: str) -> str:
    """FAIRING_PARAM_<NAME>: upper case; names are identifiers already."""
    return PARAM_ENV_PREFIX + name.upper()


def check_space(params: Mapping[str, Any]) -> dict[str, Param]:
    """Validate a search space (names and values); plain lists and tuples mean choice()."""
    if not params:
        raise ConfigError("the search space is empty", hint='pass params={"lr": fairing.loguniform(1e-4, 1e-1)}')
    out: dict[str, Param] = {}
    upper: dict[str, str] = {}
    for name, p in params.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"invalid parameter name {name!r}",
                              hint="use letters, digits and _ (it becomes --NAME and FAIRING_PARAM_NAME)")
        if isinstance(p, (list, tuple)):
            p = choice(p)
        if not isinstance(p, (Uniform, IntRange, Choice)):
            raise ConfigError(f"parameter {name!r} is {p!r}, not a search-space value",
                              hint="use fairing.uniform, loguniform, intrange or choice")
        if name.upper() in upper:
            raise ConfigError(f"parameters {upper[name.upper()]!r} and {name!r} share FAIRING_PARAM_{name.upper()}",
                              hint="rename one of them")
        upper[name.upper()] = name
        out[name] = p
    return out


# --- the CLI syntax ----------------------------------------------------------------------------

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(rf"^(?P<low>{_NUM})\.\.(?P<high>{_NUM})(?::(?P<opt>[a-z]+))?$")
PARAM_SYNTAX = ("NAME=LOW..HIGH (a float), NAME=LOW..HIGH:log (log scale), NAME=LOW..HIGH:int "
                "(whole numbers, both ends included) or NAME=A,B,C (choice)")


def _literal(text: str) -> Any:
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if re.fullmatch(_NUM, t):
        return float(t)
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    return t


def parse_param(spec: str) -> tuple[str, Param]:
    """`lr=1e-4..1e-1:log`, `x=0..6` (float), `layers=1..8:int`, `opt=adam,sgd` -> (name, value).
    A bare range is a float even with whole-number bounds (`dropout=0..1` means [0, 1], not {0, 1})."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ConfigError(f"bad --param {spec!r}: expected {PARAM_SYNTAX}", hint="e.g. --param lr=1e-4..1e-1:log")
    if not _NAME.match(name):
        raise ConfigError(f"bad --param {spec!r}: {name!r} is not a valid name",
                          hint="use letters, digits and _, e.g. --param lr=1e-4..1e-1:log")
    rest = rest.strip()
    m = _RANGE.match(rest)
    try:
        if m:
            lo, hi, opt = m.group("low"), m.group("high"), m.group("opt")
            if opt not in (None, "log", "int", "float"):
                raise ConfigError(f"bad --param {spec!r}: unknown option ':{opt}'",
                                  hint="use :log (log scale), :int or :float after the range")
            whole = all(re.fullmatch(r"[+-]?\d+", x) for x in (lo, hi))
            if opt == "int":
                if not whole:
                    raise ConfigError(f"bad --param {spec!r}: ':int' needs whole-number bounds",
                                      hint="e.g. --param layers=1..8:int")
                return name, IntRange(int(lo), int(hi))
            if opt == "log":
                return name, LogUniform(float(lo), float(hi))
            return name, Uniform(float(lo), float(hi))
        if ".." in rest:
            raise ConfigError(f"bad --param {spec!r}: a range is LOW..HIGH with numbers",
                              hint="e.g. --param x=0..6 or --param lr=1e-4..1e-1:log")
        values = [v.strip() for v in rest.split(",")]
        if len(values) < 2 or any(not v for v in values):
            raise ConfigError(f"bad --param {spec!r}: expected {PARAM_SYNTAX}",
                              hint="a choice lists two or more values: --param layers=1,2,3")
        return name, Choice(tuple(_literal(v) for v in values))
    except ConfigError as e:
        if e.message.startswith("bad --param"):
            raise
        raise ConfigError(f"bad --param {spec!r}: {e.message}", hint=e.hint) from None


def parse_params(specs: Iterable[str]) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for spec in specs:
        name, p = parse_param(spec)
        if name in out:
            raise ConfigError(f"--param {name} given twice", hint="give each parameter once")
        out[name] = p
    return check_space(out)


def describe_space(space: Mapping[str, Param]) -> dict[str, str]:
    return {name: p.describe() for name, p in space.items()}

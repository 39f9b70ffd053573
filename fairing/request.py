"""What a facade asks the pipeline for, as typed values (fairing.pipeline reads them):

    Stage("job", {"backoff_limit": 0})     one stage by name, with its explicit options
    Request(entry, settings, ...)          everything `plan` needs; config, api, serving, tune,
                                           kfp and the CLI fill one in instead of wiring stages
    Variant(name=..., mutators=...)        what one use of a plan's deployer adds (a tuning trial)
    Wait(on_log=..., result=...)           how `execute` waits for the workload, and what it
                                           keeps or removes afterwards

Plain frozen dataclasses with no imports beyond the standard library, so facades can build them
cheaply and tests can compare them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Stage:
    """A stage chosen by name (a row of fairing.stages) and the options it is made with."""

    name: str | None  # None: let the plan choose, with these options (e.g. builder_options only)
    options: Mapping[str, Any] = field(default_factory=dict)

    def with_options(self, **options: Any) -> "Stage":
        return Stage(self.name, {**self.options, **options})


@dataclass(frozen=True)
class Retrain:
    """A run that registers its outputs as version N+1 of `model` when it succeeds, and moves the
    gate's alias to it when `gate` ("accuracy >= champion") holds. Done in the pod, after its
    outputs are saved (a CronJob's runs have no client waiting)."""

    model: str
    gate: str | None = None


@dataclass(frozen=True)
class Request:
    """One run as a facade asks for it. Explicit stages win over settings, settings over guesses.

    `build_only`: `fair build` (always an image, nothing deployed). `prebuilt`: an image exists
    already (nothing to package or build). `prepare` goes to the preprocessor's prepare(entry, ...)."""

    entry: Any
    settings: Any  # fairing.settings.Settings
    preprocessor: Stage | None = None
    builder: Stage | None = None
    deployer: Stage | None = None
    prepare: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    build_only: bool = False
    prebuilt: bool = False
    retrain: Retrain | None = None


@dataclass(frozen=True)
class Variant:
    """Additions to the plan's deployer for one use of it: a name, pod mutators applied after the
    plan's own, and options. A tuning run deploys one build many times, each trial a Variant."""

    name: str | None = None
    mutators: tuple[Callable, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


CLEANUP_NEVER, CLEANUP_ON_SUCCESS = "never", "on-success"


@dataclass(frozen=True)
class Wait:
    """How `execute` waits. `on_log` receives the workload's log lines while it runs. `result`:
    read the function's return value into the record and RunResult.value ("required": a missing
    value fails the run, as fairing.config.fn needs). `cleanup`: CLEANUP_ON_SUCCESS deletes the
    workload once it succeeded (a failed one stays for `fair logs NAME`). `timeout` None: the
    settings' timeout. `keep`: an interrupt (KeyboardInterrupt) leaves the workload running instead
    of deleting it. `prefix`: "[replica] " on log lines (True: always, None: only when several
    replicas run at once)."""

    on_log: Callable[[str], None] | None = None
    result: bool | str = False
    cleanup: str = CLEANUP_NEVER
    timeout: float | None = None
    keep: bool = False
    prefix: bool | None = True

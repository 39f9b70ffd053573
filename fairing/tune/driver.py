"""The built-in tuner: Optuna asks for parameters, a runner runs each trial as a workload,
`parallel` at a time, and the trial's printed metrics go back to Optuna.

Optuna does the searching (random, grid, TPE, CMA-ES: maintained, well-tested samplers); this
module only schedules. Trials run in worker threads because each one mostly waits (for a
process, a container or a Job); the study is only touched from the calling thread. Ctrl-C
deletes the running trials before it propagates."""
from __future__ import annotations

import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Mapping

from ..errors import ConfigError, FairingError
from .metrics import missing_metric_message, parse_metrics
from .result import FAILED, RUNNING, STOPPED, SUCCEEDED, Trial, TuneFailed, TuneResult
from .space import Choice, Param

ALGORITHMS = ("random", "grid", "tpe", "cmaes")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("the built-in tuner (backends jobs and local) needs optuna",
                          hint="pip install optuna (or 'fairing[tune]'), or use --backend katib") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def grid_space(space: Mapping[str, Param], trials: int) -> dict[str, list]:
    """Values per parameter for grid search: every choice, and for ranges about
    trials ** (1 / number of ranges) evenly spaced points (at least 2)."""
    discrete = 1
    ranges = []
    for name, p in space.items():
        if isinstance(p, Choice):
            discrete *= len(p.values)
        else:
            ranges.append(name)
    per = max(2, int(math.floor((max(trials, 1) / discrete) ** (1 / len(ranges)) + 1e-9))) if ranges else 0
    return {name: p.grid(per) for name, p in space.items()}


def grid_size(space: Mapping[str, Param], trials: int) -> int:
    n = 1
    for vals in grid_space(space, trials).values():
        n *= len(vals)
    return n


def make_sampler(algorithm: str, space: Mapping[str, Param], trials: int, parallel: int, seed: int | None):
    optuna = _optuna()
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}", hint=f"choose one of: {', '.join(ALGORITHMS)}")
    startup = min(10, max(2, trials // 3))
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        class Grid(optuna.samplers.GridSampler):
            # GridSampler calls study.stop() once the grid is used up, which only works inside
            # study.optimize(); this driver uses ask/tell and caps the trials at the grid size.
            def after_trial(self, study, trial, state, values):
                pass

        return Grid(grid_space(space, trials), seed=seed)
    if algorithm == "tpe":
        # constant_liar: running trials count as (pessimistic) results, so parallel trials spread out.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=parallel > 1)
    try:
        import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it, and says so only mid-run)
    except ImportError:
        raise ConfigError("algorithm cmaes needs the cmaes package", hint="pip install cmaes (or 'fairing[tune]')") from None
    if all(isinstance(p, Choice) for p in space.values()):
        raise ConfigError("CMA-ES needs at least one numeric range; this space has only choices",
                          hint="use --algorithm tpe, random or grid")
    # Choices fall back to independent (random) sampling inside CMA-ES; that is expected, not news.
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)


class Runner:
    """Runs one trial to the end: `run(trial)` returns (ok, log_text, error). `stop(trial)` may be
    called from another thread and must make `run` return soon."""

    def run(self, trial: Trial) -> tuple[bool, str, str | None]:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self, trial: Trial) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def settle(self) -> None:
        """Called once every trial has returned: finish what `run` left going (deletions)."""


def check_counts(trials: int, parallel: int, max_failed: int | None) -> None:
    for what, v, lo in (("trials", trials, 1), ("parallel", parallel, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{what} must be a whole number >= {lo}, not {v!r}", hint=f"e.g. {what}=4")
    if max_failed is not None and (isinstance(max_failed, bool) or not isinstance(max_failed, int) or max_failed < 0):
        raise ConfigError(f"max_failed must be a whole number >= 0, not {max_failed!r}",
                          hint="max_failed=0 stops at the first failed trial")


def finish_trial(trial: Trial, ok: bool, log_text: str, error: str | None, objective: str) -> None:
    """The trial's state, metrics and objective from how it ended and what it printed."""
    trial.metrics = parse_metrics(log_text or "")
    trial.value = trial.metrics.get(objective)
    if not ok:
        trial.state = FAILED
        trial.error = error or "failed"
        last = last_line(log_text or "")
        if last and last not in trial.error:
            # A cluster's reason ("exited with code 1") says how it ended; the log says why.
            trial.error += f"; last output: {last}"
    elif trial.value is None:
        trial.state = FAILED
        trial.error = missing_metric_message(objective)
    else:
        trial.state = SUCCEEDED


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("FAIRING_RESULT:")]
    return lines[-1][:300] if lines else ""


def run_study(result: TuneResult, runner: Runner, *, name: str, trials: int, parallel: int,
              max_failed: int | None, seed: int | None = None,
              on_update: Callable[[TuneResult, Trial | None], None] | None = None) -> TuneResult:
    """Drive the search: ask, run `parallel` trials at a time, tell. Stops after `trials`, when
    more than `max_failed` trials failed, or on Ctrl-C (running trials are deleted first)."""
    optuna = _optuna()
    space = result.space
    check_counts(trials, parallel, max_failed)
    if result.algorithm == "grid":
        trials = min(trials, grid_size(space, trials))
    direction = "maximize" if result.goal == "maximize" else "minimize"
    study = optuna.create_study(direction=direction,
                                sampler=make_sampler(result.algorithm, space, trials, parallel, seed))
    running: dict[Future, tuple[Any, Trial]] = {}
    failed = 0
    stopping: str | None = None
    update = on_update or (lambda r, t: None)

    def launch(pool: ThreadPoolExecutor) -> None:
        ot = study.ask()
        params = {n: p.suggest(ot, n) for n, p in space.items()}
        t = Trial(number=len(result.trials), name=f"{name}-{len(result.trials)}", params=params, state=RUNNING)
        result.trials.append(t)
        started = time.monotonic()

        def job() -> tuple[bool, str, str | None]:
            try:
                return runner.run(t)
            finally:
                t.seconds = time.monotonic() - started

        update(result, t)  # before it starts: its run record exists when its workload is made
        running[pool.submit(job)] = (ot, t)

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="fairing-trial")
    try:
        while True:
            while not stopping and len(running) < parallel and len(result.trials) < trials:
                launch(pool)
            if not running:
                break
            # A short timeout keeps the main thread responsive to Ctrl-C.
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                ot, t = running.pop(fut)
                try:
                    ok, text, error = fut.result()
                except FairingError as e:  # the trial could not even start (deploy refused)
                    ok, text, error = False, "", e.message
                except Exception as e:  # noqa: BLE001 - one broken trial must not lose the others
                    ok, text, error = False, "", f"{type(e).__name__}: {e}"
                if t.state == STOPPED:
                    study.tell(ot, state=optuna.trial.TrialState.FAIL)
                    update(result, t)
                    continue
                finish_trial(t, ok, text, error, result.objective)
                if t.state == SUCCEEDED:
                    study.tell(ot, t.value)
                else:
                    failed += 1
                    study.tell(ot, state=optuna.trial.TrialState.FAIL)
                update(result, t)
                if not stopping and max_failed is not None and failed > max_failed:
                    stopping = (f"stopped after {failed} failed trial{'s' if failed > 1 else ''} "
                                f"(max_failed={max_failed}); last: trial {t.number}: {t.error}")
                    for _, other in running.values():
                        other.state = STOPPED
                        other.error = "stopped: too many failed trials"
                        runner.stop(other)
    except BaseException:
        # Ctrl-C (or anything unexpected): delete what is running, then let it propagate; a second
        # Ctrl-C meanwhile does not leave half the trials behind.
        from ..runhandle import shield_interrupts

        with shield_interrupts():
            for _, t in list(running.values()):
                t.state = STOPPED
                t.error = "interrupted"
                try:
                    runner.stop(t)
                except Exception:  # noqa: BLE001 - keep deleting the others
                    pass
        result.status, result.reason = "Interrupted", "interrupted"
        pool.shutdown(wait=True, cancel_futures=True)
        with shield_interrupts():
            runner.settle()
        update(result, None)
        raise
    pool.shutdown(wait=True)
    runner.settle()
    if stopping:
        result.status, result.reason = "Failed", stopping
    elif result.best is None:
        last = next((t for t in reversed(result.trials) if t.error), None)
        result.status = "Failed"
        result.reason = "no trial finished" + (f"; last: trial {last.number}: {last.error}" if last else "")
    else:
        result.status = "Succeeded"
    update(result, None)
    return result


def raise_if_failed(result: TuneResult) -> TuneResult:
    if result.status == "Failed":
        raise TuneFailed(result.reason or "tuning failed",
                         hint="the trials are in the error's .result; fix the failing trial or raise max_failed",
                         result=result)
    return result


class DeployerRunner(Runner):
    """Each trial is a workload from the plan's deployer (local process/container, or a Job) on
    the one built image; its log is read when it ends, then it is deleted."""

    def __init__(self, make_deployer: Callable[[Trial], Any], image: Any, *, timeout: float | None = None,
                 keep: bool = False, objective: str | None = None,
                 on_ended: Callable[[Trial, Any], None] | None = None):
        import threading

        self.on_ended = on_ended  # (trial, handle) once it ended, before it is deleted: its outputs are kept

        self.make_deployer = make_deployer
        self.image = image
        self.timeout = timeout
        self.keep = keep
        self.objective = objective
        self.handles: dict[int, Any] = {}
        self._deleting: list[Any] = []  # deleted without waiting; settle() waits until they are gone
        self._lock = threading.Lock()

    def run(self, trial: Trial) -> tuple[bool, str, str | None]:
        handle = self.make_deployer(trial).deploy(self.image)
        with self._lock:
            self.handles[trial.number] = handle
            stopped = trial.state == STOPPED
        if stopped:  # stopped while it was being created
            self._delete(handle)
            return False, "", trial.error
        ok, error = True, None
        try:
            try:
                handle.wait(timeout=self.timeout)
            except FairingError as e:
                ok, error = False, e.message
            text = ""
            if trial.state != STOPPED:
                text, log_error = self._final_log(handle, ok)
                if ok and log_error and not text:
                    ok, error = False, f"its log could not be read: {log_error}"
                if self.on_ended is not None:
                    self.on_ended(trial, handle)
        finally:
            if not self.keep or trial.state == STOPPED:
                with self._lock:
                    self.handles.pop(trial.number, None)
                # The trial is over once its log is read (and its outputs were kept by the
                # container before it exited): its slot goes to the next trial now. Its Job goes
                # at once and the garbage collector removes its finished pod after (a foreground
                # deletion would hold the run for the pod's ~2 s of termination); settle() makes
                # sure every such Job is gone before the run returns.
                self._delete(handle, wait=False)
        return ok, text, error

    def _final_log(self, handle: Any, ok: bool) -> tuple[str, str | None]:
        """The log once the workload ended. A real node's kubelet may report the container done a
        moment before its last lines reach the log file, so read again (briefly) when the
        objective or the last words of a failure may still be on their way."""
        import time

        text, err = log_text(handle)
        for _ in range(4):
            wanted = (self.objective is not None and self.objective not in parse_metrics(text)) or not ok
            if not wanted:
                break
            time.sleep(0.5)
            again, err2 = log_text(handle)
            if len(again) <= len(text) and not ok:
                break  # nothing more came: a failure's log is complete
            text, err = (again, err2) if len(again) >= len(text) else (text, err)
        return text, err

    def stop(self, trial: Trial) -> None:
        with self._lock:
            handle = self.handles.pop(trial.number, None)
        if handle is not None:
            self._delete(handle)

    def _delete(self, handle: Any, *, wait: bool = True) -> None:
        import inspect

        try:
            params = inspect.signature(handle.delete).parameters
            if not wait and "wait" in params:
                handle.delete(wait=False, **({"propagation": "Background"} if "propagation" in params else {}))
                with self._lock:
                    self._deleting.append(handle)
            else:
                handle.delete()
        except FairingError:
            pass  # already gone

    def settle(self) -> None:
        """Wait until every trial deleted without waiting is gone (nothing left behind)."""
        with self._lock:
            pending, self._deleting = self._deleting, []
        import inspect

        for handle in pending:
            try:
                # Gone already: no wait; still going: waits until it is (with the same propagation).
                bg = "propagation" in inspect.signature(handle.delete).parameters
                handle.delete(**({"propagation": "Background"} if bg else {}))
            except FairingError:
                pass


def log_text(handle: Any) -> tuple[str, str | None]:
    """(the whole log of a finished workload, why it could not be read), whatever the handle kind."""
    reader = getattr(handle, "log_text", None)
    try:
        if callable(reader):
            return reader(), None
        return "\n".join(handle.logs(follow=False)), None
    except FairingError as e:
        return "", e.message

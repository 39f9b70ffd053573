"""Waiting for a workload as part of a run: the run record learns how it ended.

`wait_for` is what `pipeline.execute` does when asked to wait (fairing.request.Wait): stream the
logs, wait, take metrics from the log lines, keep the function's result, clean up. `RunHandle` is
the handle `execute` returns for a detached run (submit() without waiting): waiting on it later
settles the record the same way, as if the run had been waited for."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from .deployers.base import Handle
from .errors import DeployError, FairingError, WaitTimeout
from .request import CLEANUP_ON_SUCCESS, Wait

_DONE = ("Succeeded", "Failed")


class RunHandle(Handle):
    """A deployer's handle plus the run it belongs to. Every verb and attribute is the inner
    handle's; only `wait` also settles the record (once: a record that ended stays as it is)."""

    def __init__(self, inner: Any, run: Any, *, result: bool = False, owned: bool = True):
        # Handle.__init__ is not called: name, namespace and dry_run are the inner handle's.
        # `owned`: this session created the workload (an interrupt deletes it); fairing.attach's
        # handles are not owned, and keep what they were attached to.
        self.inner, self.run, self._result, self.owned = inner, run, result, owned

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found on this class: url, client(), status_detail, mode, ...
        return getattr(self.inner, name)

    # Handle's class-level defaults would hide the inner handle's values: read them through.
    name = property(lambda self: self.inner.name)
    namespace = property(lambda self: getattr(self.inner, "namespace", None))
    dry_run = property(lambda self: getattr(self.inner, "dry_run", False))
    what = property(lambda self: getattr(self.inner, "what", "workload"))

    def status(self) -> str:
        return self.inner.status()

    def logs(self, *args: Any, **kwargs: Any):
        return self.inner.logs(*args, **kwargs)

    def result(self) -> Any:
        return read_result(self.inner, self.run)

    def delete(self, *args: Any, **kwargs: Any) -> None:
        return self.inner.delete(*args, **kwargs)

    def manifests(self) -> list[dict]:
        return self.inner.manifests()

    def wait(self, timeout: float | None = None, *, quiet: bool | None = None, keep: bool = False) -> str:
        """Wait for the workload, showing its log as it runs (unless `quiet`; by default when a
        person watches: a notebook or a terminal). An interrupt (Ctrl-C, a notebook's stop
        button) deletes the workload, or with `keep=True` leaves it running and says how to
        reattach."""
        from .logview import LogView, wanted

        import time

        done = self.run is not None and self.run.doc.get("status") in _DONE
        run = None if done else self.run  # the record to settle, if any
        view = LogView() if wanted(quiet) and not done else None
        streamed = False
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if view is not None:
                try:
                    stream(self.inner, view, prefix=None, run=run, deadline=deadline)
                    streamed = True
                except WaitTimeout:
                    raise
                except DeployError:
                    pass  # a log that cannot be followed: the wait below still says how it ends
            status = self.inner.wait(timeout=_left(deadline))
        except KeyboardInterrupt:
            raise interrupted(self.inner, run, keep=keep or not self.owned) from None
        except WaitTimeout:
            raise  # still running: nothing to record yet
        except DeployError as e:
            # Only a workload that really ended Failed is recorded so (not one gone unreachable).
            if run is not None and _status_of(self.inner) == "Failed":
                from .runs.hook import local_outputs

                read_metrics(self.inner, run, streamed=streamed)
                settle_outputs(self.inner, run)  # first: the trackers get the outputs with the outcome
                run.fail(e, files=local_outputs(self.inner))
            raise
        if run is not None and status in _DONE:
            finish(self.inner, run, status, streamed=streamed, result=self._result)
        return status

    # -- in a notebook ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        from .display import handle_text

        return handle_text(self)

    def _repr_html_(self) -> str:
        from .display import handle_html

        return handle_html(self)


def _left(deadline: float | None) -> float | None:
    """What is left of a wait's timeout after following the log (a moment at least: the workload
    may have ended with its log, and its handle still has to say so)."""
    import time

    return None if deadline is None else max(deadline - time.monotonic(), 1.0)


def unwrap(handle: Any) -> Any:
    """The deployer's own handle inside a RunHandle (or `handle` itself)."""
    return handle.inner if isinstance(handle, RunHandle) else handle


def wait_for(handle: Any, progress: Any, policy: Wait, *, timeout: float | None = None, run: Any = None,
             result: bool = False) -> tuple[str, Any]:
    """Wait for the workload as `policy` says; returns (status, the function's return value or
    None). With `run` (a record), metrics are taken from the log lines and the record gets the
    outcome (and, for a function, its return value: `result`)."""
    import time

    inner = unwrap(handle)
    on_log = policy.on_log
    timeout = policy.timeout if policy.timeout is not None else timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with progress.stage("wait") as st:
            if on_log is not None:
                stream(inner, on_log, prefix=policy.prefix, run=run, deadline=deadline)
            status = inner.wait(timeout=_left(deadline))
            st.detail = str(status)
    except KeyboardInterrupt:
        raise interrupted(inner, run, keep=policy.keep) from None
    except BaseException as e:
        if run is not None:
            from .runs.hook import local_outputs

            read_metrics(inner, run, streamed=on_log is not None)
            if not isinstance(e, WaitTimeout):
                settle_outputs(inner, run)  # a failed run's checkpoint is what its user needs most
            run.fail(e, files=local_outputs(inner))  # a failed notebook's executed copy matters most
        raise
    value = None
    if run is not None:
        value = finish(inner, run, status, streamed=on_log is not None,
                       result=policy.result or result, required=policy.result == "required")
    elif policy.result:
        value = read_result(inner)
    if policy.cleanup == CLEANUP_ON_SUCCESS and status == "Succeeded":
        try:
            inner.delete()
        except FairingError:
            pass  # the outcome is what the caller asked for; a failed cleanup is not worth hiding it
    return status, value


def stream(inner: Any, on_log: Callable[[str], Any], *, prefix: bool | None = True, run: Any = None,
           deadline: float | None = None) -> None:
    """Follow the workload's log until it ends, each line to `on_log` (and to the record's metrics).
    A LogView (fairing.logview) learns the workload's name first and is closed at the end.
    `deadline` (time.monotonic()): WaitTimeout then, even while the log is silent; the workload
    keeps running."""
    bind = getattr(on_log, "bind", None)
    if bind is not None:
        bind(inner)
    logs = inner.logs(follow=True, prefix=prefix) if prefix is not True and _takes_prefix(inner) \
        else inner.logs(follow=True)
    from .context import RESULT_MARKER

    try:
        for line in log_lines(logs) if deadline is None else _until(log_lines(logs), deadline, inner):
            if run is not None:
                run.log(line)
            if RESULT_MARKER not in line[:120]:  # a function's return value is for fairing to read
                on_log(line)
    finally:
        close = getattr(logs, "close", None)
        if close is not None:
            try:
                close()  # a follow stream's threads and connections end now, also on an interrupt
            except ValueError:
                pass  # a generator still running in _until's thread: it ends with the workload's log
        done = getattr(on_log, "close", None)
        if done is not None:
            done()


def _until(lines: Iterator[str], deadline: float, inner: Any) -> Iterator[str]:
    """`lines` read in a thread, yielded here until `deadline`: a silent log cannot hold a wait
    past its timeout (the caller's finally closes the stream, which ends the thread). Lines are
    handed to the caller's thread, where a notebook's output and an interrupt belong."""
    import queue
    import threading
    import time

    q: queue.Queue = queue.Queue(maxsize=1024)
    end = object()

    def pump() -> None:
        try:
            for line in lines:
                q.put(line)
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            q.put(e)
        finally:
            q.put(end)

    threading.Thread(target=pump, name="fairing-log", daemon=True).start()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            name = getattr(inner, "name", None) or "the workload"
            raise WaitTimeout(f"{name} did not finish within the wait's timeout (its log is still open)",
                              hint=f"it keeps running: fair logs {name} -f, or fairing.attach({name!r}).wait()")
        try:
            item = q.get(timeout=min(left, 0.25))
        except queue.Empty:
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _takes_prefix(inner: Any) -> bool:
    import inspect

    try:
        return "prefix" in inspect.signature(inner.logs).parameters
    except (TypeError, ValueError):
        return False


def interrupted(inner: Any, run: Any, *, keep: bool = False) -> KeyboardInterrupt:
    """A KeyboardInterrupt arrived while waiting: delete the workload (shielded: a second interrupt
    does not stop the delete half way), or with `keep` leave it running; record and say which, in
    one line. Returns the KeyboardInterrupt to raise, carrying that line."""
    from .messages import tell

    name = getattr(inner, "name", None) or "?"
    ns = getattr(inner, "namespace", None)
    label = f"{getattr(inner, 'what', 'workload')} {ns + '/' if ns else ''}{name}"
    with shield_interrupts():
        if keep:
            msg = (f"interrupted: {label} keeps running; follow it with `fair logs {name} -f` "
                   f"or fairing.attach({name!r}), stop it with `fair delete {name}`")
            if run is not None and run.doc.get("status") not in _DONE:
                run.note(status="Deployed", reason="interrupted; kept running")  # settled later by fair status
        else:
            try:
                inner.delete()  # a cluster workload: returns once the object and its pods are gone
                msg = f"interrupted: deleted {label}"
            except Exception as e:  # noqa: BLE001 - say what is left, never hide the interrupt
                msg = (f"interrupted: could not delete {label} ({getattr(e, 'message', None) or e}); "
                       f"delete it with `fair delete {name}`")
            if run is not None and run.doc.get("status") not in _DONE:
                run.finish("Failed", "interrupted" + (f"; {label} deleted" if msg.startswith("interrupted: deleted")
                                                      else f"; {label} may still exist"))
        tell(msg)
    return KeyboardInterrupt(msg)


class shield_interrupts:
    """`with shield_interrupts():` a SIGINT (Ctrl-C, a kernel interrupt) arriving inside the block
    is held back until it ends, so a cleanup finishes. Only the main thread receives signals; in
    any other thread this does nothing."""

    def __enter__(self) -> "shield_interrupts":
        import signal
        import threading

        self.hits = 0
        self._old = None
        if threading.current_thread() is threading.main_thread():
            def hold(signum, frame):
                self.hits += 1

            try:
                self._old = signal.signal(signal.SIGINT, hold)
            except ValueError:  # pragma: no cover - not the main interpreter
                self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            import signal

            signal.signal(signal.SIGINT, self._old)


def finish(handle: Any, run: Any, status: str, *, streamed: bool, result: Any = False, required: bool = False) -> Any:
    """Record a workload that ended: its metrics, and its result when `result`. `required`: a
    result that cannot be read fails the run (and raises)."""
    from .runs.hook import local_outputs

    read_metrics(handle, run, streamed=streamed)
    value, has = None, False
    if required:
        try:
            value, has = read_result(handle, run), True
        except BaseException as e:
            run.fail(e)
            raise
    elif result:
        value, has = _result_of(handle, run)
    settle_outputs(handle, run)  # first: the trackers get the outputs with the outcome
    run.finish(str(status), result=value, has_result=has, files=local_outputs(handle))
    mirror_registered(run)
    return value


def mirror_registered(run: Any) -> list[dict]:
    """A retrain's pod registered (and maybe promoted) a model, with no MLflow client: this client,
    waiting and tracking to MLflow, mirrors it to MLflow's Model Registry now."""
    uri = next((t.uri for t in run.trackers if getattr(t, "name", None) == "mlflow"), None)
    if not (uri and (run.doc.get("model") or {}).get("registered")):
        return []
    from .models.mirror import after_runs

    return after_runs([run.doc], uri)


def settle_outputs(handle: Any, run: Any) -> None:
    from .runs.hook import settle_outputs as settle

    settle(handle, run)


def _status_of(handle: Any) -> str | None:
    try:
        return handle.status()
    except Exception:  # noqa: BLE001 - gone or unreachable: the outcome is not known
        return None


def read_metrics(handle: Any, run: Any, *, streamed: bool) -> None:
    """Metrics from the finished workload's log, when it was not streamed through the record."""
    if streamed:
        return
    try:
        for line in log_lines(handle.logs(follow=False)):
            run.log(line)
    except Exception:  # noqa: BLE001 - logs may be gone (cleanup); the record just has no metrics
        pass


def read_result(handle: Any, run: Any = None) -> Any:
    """The function's return value: from the log when small, else from the run's outputs."""
    from .results import ResultInOutputs

    try:
        return handle.result()
    except ResultInOutputs as e:
        run_id = getattr(run, "id", None) or getattr(handle, "run_id", None)
        if not run_id:
            raise
        import cloudpickle

        from . import runs
        from .outputs.fetch import read_file

        record = run.doc if run is not None else runs.get(run_id)
        return cloudpickle.loads(read_file(record, e.name))


def _result_of(handle: Any, run: Any = None) -> tuple[Any, bool]:
    try:
        return read_result(handle, run), True
    except Exception:  # noqa: BLE001 - no result to record is not a failed run
        return None, False


def log_lines(logs: Any) -> Iterator[str]:
    """A handle's logs (text, bytes, or an iterable of either) as lines without newlines."""
    if logs is None:
        return
    if isinstance(logs, (str, bytes)):
        logs = logs.decode(errors="replace") if isinstance(logs, bytes) else logs
        yield from logs.splitlines()
        return
    for item in logs:
        if isinstance(item, bytes):
            item = item.decode(errors="replace")
        yield item.rstrip("\n")

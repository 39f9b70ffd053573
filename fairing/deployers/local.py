"""The `local` deployer: the embedded default when there is no cluster and no registry.

Two modes, and it always says which one it used (`handle.mode`):
- container: a Docker/Podman API is reachable ($DOCKER_HOST or a default socket): the image (built
  into the engine by the docker builder, pulled from a registry, or loaded from an OCI layout) runs
  in a container labelled `app.kubernetes.io/managed-by=fairing`, so `fair status/logs/delete/list`
  find it again later.
- process: no engine: the build context is written to a temp dir and its entrypoint runs as a child
  process, with a virtualenv for its requirements (none when there are none). The temp dir goes
  away on delete() or at interpreter exit.

A serving context (`context.kind == "serve"`) is handed to LocalServingDeployer."""
from __future__ import annotations

import atexit
import copy
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..context import OUTPUT_DIR, RESULT_MARKER, BuildContext, BuiltImage
from ..errors import BuildError, ConfigError, DeployError

MANAGED_BY = {"app.kubernetes.io/managed-by": "fairing"}
NAME_LABEL = "fairing.dev/name"
KIND_LABEL = "fairing.dev/kind"  # the context kind; "serve" containers belong to local_serving
DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")


# --- engine discovery --------------------------------------------------------------------------

def engine_candidates(docker_host: str | None = None) -> list[str]:
    """Engine URLs to try, most explicit first: the argument, $DOCKER_HOST, default sockets."""
    if docker_host:
        return [docker_host]
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    socks = list(DEFAULT_SOCKETS)
    if os.environ.get("XDG_RUNTIME_DIR"):
        socks.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "podman", "podman.sock"))
    return [f"unix://{s}" for s in socks if os.path.exists(s)]


def find_engine(docker_host: str | None = None, timeout: float = 3) -> str | None:
    """The first engine URL that answers a ping, or None."""
    for url in engine_candidates(docker_host):
        try:
            _client(url, timeout=timeout).ping()
            return url
        except Exception:  # any failure to ping means "not usable", we try the next one
            continue
    return None


def resolve_mode(setting: str = "auto", docker_host: str | None = None) -> tuple[str, str | None]:
    """("container", engine_url) or ("process", None) for the local_mode setting."""
    setting = setting or "auto"
    if setting == "process":
        return "process", None
    url = find_engine(docker_host)
    if url:
        return "container", url
    if setting == "container":
        tried = ", ".join(engine_candidates(docker_host)) or "no DOCKER_HOST and no default socket"
        raise DeployError(f"no Docker/Podman API answered ({tried})",
                          hint="start one (e.g. `podman system service`) and set DOCKER_HOST, "
                               "or use local_mode=process")
    return "process", None


def _client(url: str, timeout: float = 60):
    import docker

    return docker.DockerClient(base_url=url, timeout=timeout, version="auto")


def new_name(prefix: str = "fairing") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- pod template -> what to run ---------------------------------------------------------------

def _main_container(template: dict) -> dict:
    for c in template.get("spec", {}).get("containers", []):
        if c.get("name") == "main":
            return c
    raise DeployError("the pod template has no container named 'main'", hint="report this as a bug")


def apply_mutators(template: dict, mutators: Sequence) -> dict:
    """The shared pod mutators (fairing.deployers.pod) work on a pod template dict; the local
    deployer reads env and resources back out of the main container."""
    t = copy.deepcopy(dict(template))
    for m in mutators:
        out = m(t)
        if out is not None:
            t = out
    return t


def _env_list(container: dict) -> dict[str, str]:
    env = {}
    for e in container.get("env", []) or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            raise ConfigError(f"env {e['name']} comes from a Secret/ConfigMap, which a local run cannot read",
                              hint="pass the value with --env K=V for local runs")
    return env


def _cpu_to_nano(v: str) -> int:
    v = str(v)
    return int(float(v[:-1]) * 1e6) if v.endswith("m") else int(float(v) * 1e9)


def _mem_to_bytes(v: str) -> int:
    v = str(v)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3, "M": 10**6,
             "G": 10**9, "T": 10**12}
    for u in sorted(units, key=len, reverse=True):
        if v.endswith(u):
            return int(float(v[: -len(u)]) * units[u])
    return int(float(v))


# --- the deployer ------------------------------------------------------------------------------

class LocalDeployer:
    name_prefix = "fairing"

    def __init__(self, namespace: str | None = None, *, kubeconfig: str | None = None,
                 context: str | None = None, name: str | None = None, mutators: Sequence = (),
                 labels: dict | None = None, annotations: dict | None = None, cleanup: bool = False,
                 dry_run: bool = False, mode: str | tuple | None = None, docker_host: str | None = None,
                 python: str | None = None, pull: bool | None = None):
        # namespace/kubeconfig/context are accepted so a profile can switch deployers freely.
        self.name = name
        self.mutators = tuple(mutators)
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.cleanup = cleanup
        self.dry_run = dry_run
        if isinstance(mode, tuple):
            mode, docker_host = mode[0], mode[1] or docker_host
        self._mode = mode or "auto"
        self.docker_host = docker_host
        self.python = python or sys.executable
        self.pull = pull

    @property
    def mode(self) -> str:
        """"container" or "process" (probes the engine once when left to auto)."""
        if self._mode not in ("container", "process"):
            self._mode, url = resolve_mode(self._mode, self.docker_host)
            self.docker_host = url or self.docker_host
        elif self._mode == "container" and not self.docker_host:
            self.docker_host = resolve_mode("container", None)[1]
        return self._mode

    def _serving(self, image: BuiltImage) -> bool:
        return image.context is not None and image.context.kind == "serve"

    def _serving_deployer(self):
        import inspect

        from .local_serving import LocalServingDeployer

        kw = dict(name=self.name, mutators=self.mutators, labels=self.labels, annotations=self.annotations,
                  cleanup=self.cleanup, dry_run=self.dry_run, docker_host=self.docker_host)
        params = inspect.signature(LocalServingDeployer).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kw = {k: v for k, v in kw.items() if k in params}
        return LocalServingDeployer(**kw)

    def render(self, image: BuiltImage) -> list[dict]:
        """What a local run would do, as a manifest-like dict (nothing is started)."""
        if self._serving(image):
            return self._serving_deployer().render(image)
        t = apply_mutators(image.pod_template, self.mutators)
        c = _main_container(t)
        ctx = image.context
        mode = self.mode
        spec: dict[str, Any] = {
            "mode": mode,
            "command": list(c.get("command", [])) + list(c.get("args", [])),
            "workingDir": c.get("workingDir"),
            "env": c.get("env", []),
            "resources": c.get("resources", {}),
        }
        if mode == "container":
            spec["image"] = image.ref
            spec["engine"] = self.docker_host
        else:
            spec["requirements"] = list(ctx.requirements) if ctx else []
            spec["python"] = self.python
        return [{
            "apiVersion": "fairing.dev/v1",
            "kind": "LocalRun",
            "metadata": {"name": self.name or "<generated>", "labels": {**MANAGED_BY, **self.labels},
                         "annotations": self.annotations},
            "spec": spec,
        }]

    def deploy(self, image: BuiltImage):
        if self.dry_run:
            raise ConfigError("deploy() called with dry_run=True", hint="call render() for a dry run")
        if self._serving(image):
            return self._serving_deployer().deploy(image)
        name = self.name or new_name(self.name_prefix)
        template = apply_mutators(image.pod_template, self.mutators)
        if self.mode == "container":
            return ContainerHandle.start(name, image, template, self.docker_host, labels=self.labels,
                                         pull=self.pull)
        return ProcessHandle.start(name, image, template, python=self.python)

    # -- finding earlier runs (container mode only: processes end with the command that ran them)
    def attach(self, name: str):
        """A ContainerHandle, or for a served model (label fairing.dev/kind=serve) the serving
        handle, so `fair status/delete` of an endpoint see its readiness, url and predict()."""
        if self.mode != "container":
            raise DeployError(f"no local container engine to look for {name!r} in",
                              hint="local process runs end with the command that started them")
        handle = ContainerHandle.find(name, self.docker_host)
        if (handle.container.labels or {}).get(KIND_LABEL) == "serve":
            from .local_serving import LocalServingDeployer

            return LocalServingDeployer(docker_host=self.docker_host).attach(name)
        return handle

    def list(self) -> list[dict]:
        if self.mode != "container":
            return []
        return ContainerHandle.list(self.docker_host)


# --- process mode ------------------------------------------------------------------------------

_live_dirs: set[str] = set()
_live_procs: dict[int, subprocess.Popen] = {}


@atexit.register
def _cleanup_at_exit() -> None:
    for proc in list(_live_procs.values()):
        _kill_group(proc)
    for d in list(_live_dirs):
        shutil.rmtree(d, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _live_procs.pop(proc.pid, None)


def cache_dir() -> Path:
    from ..oci.cache import cache_root  # the one $FAIRING_CACHE root

    return cache_root()


def venv_for(requirements: Sequence[str], python: str, log: io.TextIOBase | None = None) -> Path:
    """A virtualenv with `requirements` installed, cached by (python, requirements) so a second
    local run with the same requirements starts at once. Built aside, then renamed into place, so
    a failed install never leaves a half-made venv in the cache."""
    key = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()[:16]
    root = cache_dir() / "venvs"
    final = root / key
    if (final / ".complete").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
    try:
        subprocess.run([python, "-m", "venv", str(work)], check=True, capture_output=True)
        reqs = work / "requirements.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        proc = subprocess.run([str(work / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                               "-q", "-r", str(reqs)], capture_output=True, text=True)
        if log is not None:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["?"]
            raise BuildError(f"installing requirements for the local run failed: {last[0][:300]}",
                             hint=f"check the requirements ({', '.join(requirements)[:200]}) install with pip here")
        (work / ".complete").write_text("")
        # Venvs hard-code their path in scripts; `python -m ...` with the moved dir still works because
        # we only ever run bin/python, which resolves its prefix from pyvenv.cfg next to it.
        try:
            work.rename(final)
        except OSError:  # a concurrent run finished first: use theirs
            shutil.rmtree(work, ignore_errors=True)
        return final
    except subprocess.CalledProcessError as e:
        shutil.rmtree(work, ignore_errors=True)
        raise BuildError(f"creating a virtualenv with {python} failed: {(e.stderr or b'').decode()[-200:]}",
                         hint="install the venv module (Debian: apt install python3-venv)") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def satisfied(requirements: Sequence[str], python: str) -> bool:
    """True when every requirement is an exact `name==version` pin that this interpreter already
    has (e.g. the function preprocessor's cloudpickle pin): then no virtualenv is needed."""
    import re
    from importlib import metadata

    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return False
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", req)
        if not m:
            return False
        try:
            if metadata.version(m.group(1)) != m.group(2):
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


class ProcessHandle:
    mode = "process"

    def __init__(self, name: str, root: Path, proc: subprocess.Popen, ctx: BuildContext | None,
                 output_dir: Path):
        self.name = name
        self.namespace = None
        self.root = root
        self.proc = proc
        self.context = ctx
        self.output_dir = output_dir
        self.log_path = root / "output.log"
        self._deleted = False

    @classmethod
    def start(cls, name: str, image: BuiltImage, template: dict, *, python: str) -> "ProcessHandle":
        ctx = image.context
        if ctx is None:
            raise DeployError("a local process run needs the build context", hint="report this as a bug")
        c = _main_container(template)
        root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        _live_dirs.add(str(root))
        try:
            from ..context import write_context

            app = write_context(ctx, root / "app")
            output_dir = root / "output"
            output_dir.mkdir()
            log = open(root / "output.log", "w", buffering=1)
            exe = python
            if ctx.requirements and not satisfied(ctx.requirements, python):
                exe = str(venv_for(list(ctx.requirements), python, log) / "bin" / "python")
            argv = [str(a) for a in list(c.get("command") or ctx.entrypoint) + list(c.get("args", []))]
            if argv and (Path(argv[0]).name in ("python", "python3") or argv[0].startswith("python3.")):
                argv[0] = exe
            # Paths inside the image's workdir/output dir map to the temp dir.
            workdir = c.get("workingDir") or ctx.workdir
            argv = [_remap(a, workdir, str(app), OUTPUT_DIR, str(output_dir)) for a in argv]
            env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
            env.update({k: _remap(v, workdir, str(app), OUTPUT_DIR, str(output_dir))
                        for k, v in _env_list(c).items()})
            env.update({"FAIRING_RUNTIME": "1", "FAIRING_OUTPUT_DIR": str(output_dir),
                        "PYTHONUNBUFFERED": "1", "FAIRING_NAME": name})
            try:
                proc = subprocess.Popen(argv, cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                raise DeployError(f"cannot start {argv[0]}: {e.strerror}",
                                  hint="check the entry point's command") from None
            finally:
                log.close()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            _live_dirs.discard(str(root))
            raise
        _live_procs[proc.pid] = proc
        return cls(name, root, proc, ctx, output_dir)

    def status(self) -> str:
        if self._deleted:
            return "Deleted"
        rc = self.proc.poll()
        if rc is None:
            return "Running"
        return "Succeeded" if rc == 0 else "Failed"

    def wait(self, timeout: float | None = None) -> str:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.name} is still running after {timeout:g}s",
                              hint="wait longer (--timeout) or stop it with handle.delete()") from None
        _live_procs.pop(self.proc.pid, None)
        if rc != 0:
            raise DeployError(f"{self.name} failed with exit code {rc}: {self._last_line()}",
                              hint="the full output is in handle.logs() / printed above")
        return "Succeeded"

    def _last_line(self) -> str:
        lines = [l for l in self._read().splitlines() if l.strip() and not l.startswith(RESULT_MARKER)]
        return lines[-1][:300] if lines else "(no output)"

    def _read(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self, follow: bool = False) -> Iterator[str]:
        """Lines of output; with follow, until the process ends."""
        try:
            f = open(self.log_path, errors="replace")
        except FileNotFoundError:
            return
        with f:
            buf = ""
            while True:
                chunk = f.read(65536)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    yield from lines
                    continue
                if not follow or self.proc.poll() is not None:
                    rest = f.read()
                    buf += rest
                    if rest:
                        continue
                    if buf:
                        yield buf
                    return
                time.sleep(0.05)

    def result(self) -> Any:
        return _result(self.context, self.output_dir, self._read())

    def delete(self) -> None:
        _kill_group(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
        _live_dirs.discard(str(self.root))
        self._deleted = True

    def manifests(self) -> list[dict]:
        return []


def _remap(s: str, workdir: str, app: str, out_in: str, out_local: str) -> str:
    if s == workdir or s.startswith(workdir.rstrip("/") + "/"):
        return app + s[len(workdir.rstrip("/")):]
    if s == out_in or s.startswith(out_in + "/"):
        return out_local + s[len(out_in):]
    return s


def _result(ctx: BuildContext | None, output_dir: Path | None, log_text: str) -> Any:
    """The function's return value: the result.pkl the shim wrote, else its FAIRING_RESULT log line
    (the format belongs to the function preprocessor)."""
    from ..preprocessors.function import parse_result

    if ctx is not None and ctx.kind != "function":
        raise ConfigError(f"a {ctx.kind} workload has no return value", hint="read its output with logs()")
    if output_dir is not None and (output_dir / "result.pkl").is_file():
        import cloudpickle

        return cloudpickle.loads((output_dir / "result.pkl").read_bytes())
    return parse_result(log_text)


# --- container mode ----------------------------------------------------------------------------

class ContainerHandle:
    mode = "container"

    def __init__(self, name: str, container, client, ctx: BuildContext | None = None,
                 tmp: Path | None = None):
        self.name = name
        self.namespace = None
        self.container = container
        self.client = client
        self.context = ctx
        self.tmp = tmp

    @classmethod
    def start(cls, name: str, image: BuiltImage, template: dict, url: str, *, labels: dict | None = None,
              pull: bool | None = None) -> "ContainerHandle":
        import docker.errors

        client = _client(url, timeout=600)
        c = _main_container(template)
        ref = _ensure_image(client, image, pull)
        env = _env_list(c)
        env["FAIRING_RUNTIME"] = "1"
        res = c.get("resources", {}) or {}
        limits = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        kw: dict[str, Any] = {}
        if limits.get("cpu"):
            kw["nano_cpus"] = _cpu_to_nano(limits["cpu"])
        if limits.get("memory"):
            kw["mem_limit"] = _mem_to_bytes(limits["memory"])
        all_labels = {**MANAGED_BY, NAME_LABEL: name, **(labels or {})}
        if image.context is not None:
            all_labels[KIND_LABEL] = image.context.kind
        # create + start rather than run(): run() is the same two calls, and when the start fails
        # (e.g. the command does not exist in the image) it leaves the created container behind.
        # Keeping the two apart lets us remove exactly the container we created, never a
        # same-named one that was already there.
        try:
            container = client.containers.create(
                ref, entrypoint=list(c.get("command") or []) or None, command=list(c.get("args") or []) or None,
                working_dir=c.get("workingDir"), environment=env, labels=all_labels, name=name, **kw)
        except docker.errors.APIError as e:
            raise DeployError(f"the engine at {url} refused to create a container from {ref}: {e.explanation or e}",
                              hint="check the image exists in the engine (`podman images`) and the name is free") from None
        try:
            container.start()
        except BaseException as e:
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # already gone: nothing is left behind either way
                pass
            if not isinstance(e, docker.errors.APIError):
                raise
            argv = " ".join(list(c.get("command") or []) + list(c.get("args") or [])) or "(the image's default)"
            raise DeployError(f"the engine at {url} could not start {name} ({argv[:200]}): {_one_line(e)}",
                              hint="check the command exists in the image (entry point / executable) "
                                   "and the resources are valid; nothing was left in the engine") from None
        return cls(name, container, client, image.context)

    @classmethod
    def find(cls, name: str, url: str) -> "ContainerHandle":
        import docker.errors

        client = _client(url)
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            raise DeployError(f"no local workload named {name!r}",
                              hint="`fair list` shows the workloads fairing started") from None
        if container.labels.get("app.kubernetes.io/managed-by") != "fairing":
            raise DeployError(f"container {name!r} was not started by fairing",
                              hint="fairing only manages what it started; `fair list` shows those")
        return cls(name, container, client)

    @classmethod
    def list(cls, url: str) -> list[dict]:
        client = _client(url)
        out = []
        for c in client.containers.list(all=True, filters={"label": "app.kubernetes.io/managed-by=fairing"}):
            out.append({"name": c.name, "kind": "container", "where": "local", "status": _state(c.attrs),
                        "image": c.attrs.get("Config", {}).get("Image", ""),
                        "run_id": (c.labels or {}).get("fairing.dev/run-id")})
        return sorted(out, key=lambda d: d["name"])

    def status(self) -> str:
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return "Deleted"
        return _state(self.container.attrs)

    def wait(self, timeout: float | None = None) -> str:
        import requests

        try:
            rc = self.container.wait(timeout=timeout)["StatusCode"] if timeout else self._wait_forever()
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise DeployError(f"{self.name} is still running after {timeout:g}s",
                              hint=f"wait longer (--timeout) or stop it with `fair delete {self.name}`") from None
        if rc != 0:
            last = [l for l in self._read().splitlines() if l.strip() and not l.startswith(RESULT_MARKER)]
            raise DeployError(f"{self.name} failed with exit code {rc}: {(last[-1] if last else '(no output)')[:300]}",
                              hint=f"see the output with `fair logs {self.name}`")
        return "Succeeded"

    def _wait_forever(self) -> int:
        import requests

        while True:  # the SDK's wait has a client-side read timeout; keep asking until it returns
            try:
                return self.container.wait(timeout=3600)["StatusCode"]
            except requests.exceptions.ReadTimeout:
                continue

    def _read(self) -> str:
        return self.container.logs(stdout=True, stderr=True).decode(errors="replace")

    def logs(self, follow: bool = False) -> Iterator[str]:
        yield from container_logs(self.container, follow)

    def result(self) -> Any:
        out = None
        try:
            bits, _ = self.container.get_archive(OUTPUT_DIR)
            tmp = Path(tempfile.mkdtemp(prefix="fairing-result-"))
            with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                tar.extractall(tmp, filter="data")
            out = tmp / Path(OUTPUT_DIR).name
        except Exception:  # no output dir in the container: the stdout marker is the fallback
            out = None
        try:
            return _result(self.context, out, self._read())
        finally:
            if out is not None:
                shutil.rmtree(out.parent, ignore_errors=True)

    def delete(self) -> None:
        import docker.errors

        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def manifests(self) -> list[dict]:
        return []


def _one_line(e) -> str:
    text = " ".join(str(getattr(e, "explanation", None) or e).split())
    return text[:300]


def _state(attrs: dict) -> str:
    st = attrs.get("State", {})
    status = st.get("Status", "")
    if status in ("created", "configured", "initialized"):
        return "Pending"
    if status in ("running", "paused", "restarting"):
        return "Running"
    if status in ("exited", "stopped", "dead"):
        return "Succeeded" if st.get("ExitCode", 1) == 0 else "Failed"
    return status.capitalize() or "Unknown"


def _ensure_image(client, image: BuiltImage, pull: bool | None) -> str:
    """The reference the engine can run: a local image ID as is, an OCI layout loaded into the
    engine, or a registry reference pulled (by digest) if the engine doesn't have it."""
    import docker.errors

    ref = image.ref
    if ref.startswith("oci:"):
        return _load_layout(client, ref)
    if ref.startswith("context:"):
        raise DeployError("this image was never built (local process context)", hint="report this as a bug")
    if pull is not True:
        try:
            client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError:
            pass
    try:
        client.images.pull(ref)
    except docker.errors.APIError as e:
        raise DeployError(f"the engine could not pull {ref}: {e.explanation or e}",
                          hint="check the registry is reachable from the engine (insecure registries "
                               "must be listed in registries.conf / daemon.json)") from None
    return ref


def _load_layout(client, ref: str) -> str:
    """Load `oci:DIR@sha256:...` into the engine as an OCI archive; returns the loaded image ID."""
    path = ref[4:].split("@", 1)[0]
    layout = Path(path)
    if not (layout / "index.json").is_file():
        raise DeployError(f"{layout} is not an OCI image layout", hint="build again with an oci:DIR target")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=p.relative_to(layout).as_posix(), recursive=False)
    try:
        images = client.images.load(buf.getvalue())
    except Exception as e:  # docker.errors.APIError and friends: the engine refused the archive
        raise DeployError(f"the engine could not load the OCI layout {layout}: {e}",
                          hint="use --builder docker to build straight into the engine") from None
    if not images:
        raise DeployError(f"the engine loaded nothing from {layout}", hint="use --builder docker instead")
    return images[0].id


def container_logs(container, follow: bool = False) -> Iterator[str]:
    """A container's output (stdout and stderr) as lines; with `follow`, until it exits."""
    if not follow:
        yield from container.logs(stdout=True, stderr=True).decode(errors="replace").splitlines()
        return
    buf = b""
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if buf:
        yield buf.decode(errors="replace")

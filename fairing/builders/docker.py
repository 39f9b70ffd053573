"""The `docker` builder: a generated Dockerfile built and pushed through a Docker Engine API
(Docker, or Podman's Docker-compatible service), using the `docker` SDK's low-level APIClient.

How dependencies get into the image: the base image may have python3 but no pip (Debian's python3
without python3-pip), the build may have no network, and Debian's Python refuses `pip install` into
the system (PEP 668). So the wheels for the image's Python/platform and a pip wheel are downloaded
on the host (`pip download --only-binary=:all:`, cached under $FAIRING_CACHE), sent in the build
context, and installed by running pip straight from its wheel with `--no-index --target`. The
dependency step comes before the code COPY, so a code change reuses the engine's cached layers.

The context tar and Dockerfile helpers here are shared with the `cluster` (kaniko) builder."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from .. import templates
from ..context import BuildContext
from ..errors import BuildError, ConfigError
from ..publish.engine import EngineImage
from ..publish.target import ENGINE, REGISTRY, Target
from .base import Builder, context_hash

log = logging.getLogger(__name__)

DEPS_SITE = "/opt/fairing/deps"  # where requirements are installed (on PYTHONPATH)
APP_DIR = "app"  # context folder holding the user's files
DEPS_DIR = ".fairing/deps"  # context folder holding requirements.txt and wheels
IN_MEMORY_LIMIT = 64 << 20  # contexts larger than this are spooled to a temp file
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------------------------
# Dockerfile and context (shared with the cluster builder)
# ---------------------------------------------------------------------------------------------

def _env_value(value: str) -> str:
    # Double-quoted Dockerfile value: escape what the parser would interpret ($ expands variables).
    return '"' + re.sub(r'(["\\$])', r"\\\1", value) + '"'


def dockerfile(ctx: BuildContext, base_image: str, *, pip_wheel: str | None = None,
               run: Sequence[str] = ()) -> str:
    """The Dockerfile for `ctx` on `base_image`. `pip_wheel` is the file name of the pip wheel in
    the context's deps folder (None when there are no requirements); `run` are extra shell
    commands (e.g. system packages) run before the dependency step."""
    if not ctx.entrypoint:
        raise ConfigError("the build context has no entrypoint", hint="give the command to run in the image")
    steps = "".join(f"RUN {cmd}\n" for cmd in run)
    if ctx.requirements:
        if not pip_wheel:
            raise ValueError("requirements need a pip wheel in the context")
        steps += templates.render("Dockerfile.deps", pip_wheel=pip_wheel, site=DEPS_SITE)
    env_lines = []
    for key, value in sorted(ctx.env.items()):
        if not _ENV_NAME.match(key):
            raise ConfigError(f"invalid environment variable name {key!r}",
                              hint="use letters, digits and underscores, not starting with a digit")
        if "\n" in value or "\r" in value:
            raise ConfigError(f"environment variable {key} contains a line break",
                              hint="pass multi-line values as a file in the context instead")
        env_lines.append(f"ENV {key}={_env_value(value)}\n")
    return templates.render(
        "Dockerfile",
        base=base_image,
        workdir=ctx.workdir,
        steps=steps,
        env="".join(env_lines),
        entrypoint=json.dumps(list(ctx.entrypoint)),
    )


def context_entries(ctx: BuildContext, dockerfile_text: str, deps: Path | None) -> dict[str, bytes | Path]:
    """Every entry of the build context: Dockerfile, the user's files under app/, and
    requirements.txt plus wheels under .fairing/deps/ (when there are requirements)."""
    from ..oci.layer import clean_path, tree

    out: dict[str, bytes | Path] = {"Dockerfile": dockerfile_text.encode()}
    for dst, src in {**ctx.model_files, **ctx.files}.items():  # the model's files go with the code here
        path = f"{APP_DIR}/{clean_path(dst)}"
        if isinstance(src, bytes):
            out[path] = src
        elif Path(src).is_dir() and not Path(src).is_symlink():
            out.update(tree(Path(src), path))
        else:
            out[path] = Path(src)
    if not ctx.files:
        # `COPY app/` needs the folder even when empty; a directory source only contributes its type.
        out[APP_DIR] = Path(templates.__file__).parent
    if ctx.requirements:
        assert deps is not None
        out[f"{DEPS_DIR}/requirements.txt"] = ("\n".join(ctx.requirements) + "\n").encode()
        for wheel in sorted(deps.glob("*.whl")):
            out[f"{DEPS_DIR}/{wheel.name}"] = wheel
    return out


def context_file(ctx: BuildContext, dockerfile_text: str, deps: Path | None) -> IO[bytes]:
    """The context as a rewound, reproducible .tar.gz (written by the one deterministic tar writer,
    fairing.oci.layer.write_layer): in memory when small, else an anonymous temp file that is
    deleted on close, so nothing is left behind if the build fails. Engines and kaniko both
    accept a gzip'd context."""
    from ..oci.layer import write_layer

    entries = context_entries(ctx, dockerfile_text, deps)
    size = sum(len(v) if isinstance(v, bytes) else v.lstat().st_size for v in entries.values())
    f: IO[bytes] = io.BytesIO() if size < IN_MEMORY_LIMIT else tempfile.TemporaryFile(prefix="fairing-context-")
    try:
        write_layer(entries, f)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


# ---------------------------------------------------------------------------------------------
# Wheels for the dependency step, downloaded on the host
# ---------------------------------------------------------------------------------------------

def planned_pip_wheel() -> str:
    """The pip wheel file a build would ship (the host's pip version), for plans and dry runs."""
    from importlib.metadata import version

    return f"pip-{version('pip')}-py3-none-any.whl"


def check_requirements(requirements: Sequence[str], python: str) -> None:
    for r in requirements:
        # An option ("--index-url=...", "-r file") would change how pip resolves, not what.
        if not r.strip() or r.lstrip().startswith("-") or "\n" in r:
            raise ConfigError(f"invalid requirement {r!r}", hint="give requirements like 'requests==2.32.3'")
    if not re.fullmatch(r"3\.\d+", python):
        raise ConfigError(f"invalid Python version {python!r}", hint="give the image's Python as '3.11'")


def download_wheels(requirements: Sequence[str], python: str, arch: str = "amd64") -> tuple[Path, str]:
    """Wheels for `requirements` plus a pip wheel, for CPython `python` ("3.11") on linux/`arch`,
    cached by (requirements, python, arch, pip version). Returns (dir, pip wheel file name)."""
    from importlib.metadata import version

    from ..oci.cache import cache_root
    from .platforms import platform_tags

    check_requirements(requirements, python)
    pip_version = version("pip")
    tags = platform_tags({"architecture": arch})
    key = hashlib.sha256(json.dumps([list(requirements), python, tags, pip_version]).encode()).hexdigest()[:20]
    dest = cache_root() / "docker" / "wheels" / key
    if dest.is_dir():
        wheels = sorted(dest.glob("pip-*.whl"))
        if wheels:
            return dest, wheels[0].name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        nodot = python.replace(".", "")
        common = [sys.executable, "-m", "pip", "download", "--dest", str(tmp), "--only-binary=:all:",
                  "--python-version", python, "--implementation", "cp",
                  "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none",
                  "--disable-pip-version-check", "--no-input", "--quiet"]
        for tag in tags:
            common += ["--platform", tag]
        # One resolver run for the requirements and the pip that installs them (unless the user
        # pins pip themselves: then their pip wheel does the installing).
        names = {re.split(r"[^A-Za-z0-9._-]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
        args = list(requirements) + ([] if "pip" in names else [f"pip=={pip_version}"])
        proc = subprocess.run(common + args, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            shown = ", ".join(requirements[:5]) + (", ..." if len(requirements) > 5 else "")
            raise BuildError(
                f"could not download wheels for {shown}: {reason}",
                hint=f"the docker builder installs wheels only: pin versions that publish a wheel for "
                     f"CPython {python} on linux/{arch}, and check your pip index settings")
        pip_wheels = sorted(tmp.glob("pip-*.whl"))
        try:
            tmp.rename(dest)
        except OSError:  # another build filled the cache first; theirs is as good as ours
            return dest, sorted(dest.glob("pip-*.whl"))[0].name
        return dest, pip_wheels[0].name
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Engine streams
# ---------------------------------------------------------------------------------------------

_STEP = re.compile(r"^\s*(?:Step|STEP)\s+(\d+)/(\d+)\s*:\s*(.*?)\s*$")


def parse_build_stream(events: Iterable[dict], emit: Callable[[str], None]) -> str:
    """Follow a /build stream; return the image ID. An error event raises BuildError naming the step
    that failed (Docker prints "Step 3/6 : RUN ...", Podman/buildah "STEP 3/6: RUN ...")."""
    step = None
    image_id = None
    tail: list[str] = []
    for ev in events:
        if "stream" in ev:
            for line in str(ev["stream"]).splitlines():
                if not line.strip():
                    continue
                emit(line)
                m = _STEP.match(line)
                if m:
                    step, tail = m.groups(), []
                else:
                    tail = (tail + [line])[-20:]
                    done = re.match(r"^Successfully built ([0-9a-f]+)", line)
                    if done and not image_id:
                        image_id = done.group(1)
        if "aux" in ev and isinstance(ev["aux"], dict) and ev["aux"].get("ID"):
            image_id = ev["aux"]["ID"]
        if ev.get("error") or ev.get("errorDetail"):
            detail = ev.get("errorDetail") or {}
            msg = (detail.get("message") or ev.get("error") or "unknown error").strip()
            # buildah repeats the step ("building at STEP \"RUN ...\": "); we name it ourselves.
            msg = re.sub(r'^building at STEP ".*?": ', "", " ".join(msg.split()))
            if len(msg) > 300:
                msg = msg[:300] + "..."
            where = f"step {step[0]}/{step[1]} `{step[2]}`" if step else "the build"
            last = next((ln.strip() for ln in reversed(tail) if ln.strip()), None)
            hint = f"the step's output ended with: {last[:200]}" if last else "see the build output above"
            err = BuildError(f"image build failed at {where}: {msg}", hint=hint)
            err.step = step  # type: ignore[attr-defined]
            err.output = tail  # type: ignore[attr-defined]
            raise err
    if not image_id:
        raise BuildError("the engine finished the build without reporting an image",
                         hint="check the engine's logs; the build output is above")
    return image_id


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------

def engine_host(docker_host: str | None = None) -> str:
    from ..engine.discover import resolve  # the same sockets the local deployers try

    return resolve(docker_host, probe=False)


def connect(docker_host: str | None = None, timeout: int = 3600):
    """A docker.APIClient for `docker_host` (default $DOCKER_HOST, else the first default socket
    present), after checking an engine answers there (fairing.engine: the API version comes from
    /_ping, since version="auto" asks /version, which costs Podman ~0.4 s per call)."""
    from ..engine.discover import api_client
    from ..engine.errors import EngineFailure, typed

    host = engine_host(docker_host)
    try:
        with typed():
            return api_client(host, timeout)
    except EngineFailure as e:
        raise BuildError(f"no Docker engine at {host}; start one or use --builder append",
                         hint=f"set DOCKER_HOST to a running Docker or Podman API socket; cause: {e.message}") from None


def host_arch() -> str:
    import platform

    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class DockerBuilder(Builder):
    """Build with a Docker Engine API (Docker or Podman), push, return the image pinned by digest.

    base_image: image to build FROM (the engine pulls it).
    docker_host: engine URL; default $DOCKER_HOST.
    python / arch: the image's Python ("3.11") and CPU ("amd64") used to pick wheels; default the
        context's Python (or the host's) and this machine's architecture (set `arch` when a
        remote engine runs on another CPU).
    run: extra shell commands run in the image before the dependency step (system packages).
    push: push to the registry (False: the target is the engine itself; the image stays there,
        pinned by its image ID).
    """

    name = "docker"

    def __init__(self, base_image: str, *, docker_host: str | None = None, python: str | None = None,
                 arch: str | None = None, run: Sequence[str] = (), push: bool = True, pull: bool = False,
                 nocache: bool = False, output: Callable[[str], None] | None = None):
        if not base_image:
            raise ConfigError("the docker builder needs a base image", hint="pass base_image='python:3.11-slim'")
        self.base_image, self.docker_host = base_image, docker_host
        self.python, self.arch, self.run = python, arch, tuple(run)
        self.push, self.pull, self.nocache = push, pull, nocache
        self.output = output or (lambda line: log.info("%s", line))

    @classmethod
    def accepts_for(cls, options) -> tuple[str, ...]:
        # The engine tags the image under the target's name; pushing makes it a registry target.
        return (REGISTRY, ENGINE) if options.get("push", True) else (ENGINE,)

    @property
    def accepts(self) -> tuple[str, ...]:
        return self.accepts_for({"push": self.push})

    def _python(self, ctx: BuildContext) -> str:
        return self.python or ctx.python or f"{sys.version_info.major}.{sys.version_info.minor}"

    @contextmanager
    def _engine(self, target: Target) -> Iterator[Any]:
        """A connected engine client, closed afterwards; engine failures become one BuildError."""
        from ..engine.errors import EngineFailure, typed

        client = connect(self.docker_host)
        try:
            with typed():
                yield client
        except EngineFailure as e:
            raise BuildError(f"the engine at {engine_host(self.docker_host)} failed while building {target}: {e.message}",
                             hint="check the engine is healthy (docker info) and retry") from None
        finally:
            client.close()

    def _engine_build(self, client, ctx: BuildContext, target: Target) -> EngineImage:
        deps, pip_wheel = None, None
        if ctx.requirements:
            arch = self.arch or host_arch()
            deps, pip_wheel = download_wheels(ctx.requirements, self._python(ctx), arch)
        text = dockerfile(ctx, self.base_image, pip_wheel=pip_wheel, run=self.run)
        with context_file(ctx, text, deps) as fileobj:
            events = client.build(fileobj=fileobj, custom_context=True, tag=str(target.ref), rm=True, forcerm=True,
                                  pull=self.pull, nocache=self.nocache, decode=True)
            return EngineImage(parse_build_stream(events, self.output), target.ref)

    # -- interface -------------------------------------------------------------------------------
    def plan(self, ctx: BuildContext, target) -> dict[str, Any]:
        t = self.target(target, ctx)
        if ctx.requirements:
            check_requirements(ctx.requirements, self._python(ctx))
        return {
            "builder": self.name,
            "engine": engine_host(self.docker_host),
            "base": self.base_image,
            "target": str(t),
            "push": self.push,
            "context_hash": context_hash(ctx),
            "requirements": list(ctx.requirements),
            "python": self._python(ctx) if ctx.requirements else None,
            "files": sorted(f"{APP_DIR}/{k}" for k in ctx.files),
            "dockerfile": dockerfile(ctx, self.base_image, pip_wheel=planned_pip_wheel() if ctx.requirements else None,
                                     run=self.run),
        }

    def image(self, ctx: BuildContext, target) -> EngineImage:
        """Build `ctx` in the engine, tagged with the target's name (nothing pushed)."""
        t = self.target(target, ctx)
        self.plan(ctx, t)  # all input checks happen before the engine is contacted
        with self._engine(t) as client:
            return self._engine_build(client, ctx, t)

    def publish_needs(self):
        """The engine keeps the image (push=False) or pushes it: the publisher needs a connection."""
        from ..publish.pick import Needs

        return Needs(engine=self._engine, say=self.output)

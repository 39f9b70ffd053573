"""The values that flow through the pipeline: preprocessor -> BuildContext -> builder -> BuiltImage
-> deployer -> Handle (the one Handle interface is fairing.deployers.base.Handle). Plain frozen
dataclasses so each stage is testable on its own."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Union

# A file in the build context comes from disk (Path) or is generated (bytes: pickles, shims).
Source = Union[Path, bytes]

WORKDIR = "/app"
# Where the function shim writes the return value inside the container; the deployer fetches it.
OUTPUT_DIR = "/tmp/fairing-output"
RESULT_MARKER = "FAIRING_RESULT:"
# The outputs shim's last line on a Job, after the command ended and its outputs were saved:
# FAIRING_EXIT:<nonce>:<exit code>. The nonce is the client's ($FAIRING_EXIT_MARK on the pod, taken
# out of the command's own environment), so a script cannot end its wait by printing the line.
EXIT_MARK_ENV = "FAIRING_EXIT_MARK"
EXIT_PREFIX = "FAIRING_EXIT:"
# A Job its client follows by attaching: the shim waits this many seconds for "go" on stdin
# (image_runtime/outputs.py wait_for_go; fairing.kube.attach).
ATTACH_WAIT_ENV = "FAIRING_ATTACH_WAIT"


def exit_line(text: str) -> tuple[str, int, str] | None:
    """(nonce, exit code, what came before it on the line) of the shim's exit line, else None.
    A command's last output without a newline shares the line (the runtime ends a line at the
    newline the shim writes). Exit lines are never shown; what came before them is."""
    i = text.rfind(EXIT_PREFIX)
    if i < 0:
        return None
    parts = text[i:].rstrip("\r\n").split(":")
    if len(parts) != 3 or len(parts[1]) != 16 or not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    try:
        return parts[1], int(parts[2]), text[:i]
    except ValueError:
        return None


@dataclass(frozen=True)
class ServeSpec:
    """What a serving deployer needs to know about the model server in the image: the model's name
    (in URLs and object names), the port it listens on, and the protocol clients speak by default.
    Travels typed with the context; the server in the image gets the same values as env."""

    model_name: str
    port: int = 8080
    protocol: str = "v1"
    # A registered model the server follows (NAME@ALIAS), and the outputs store its registry is in:
    # the deploy gives the pod that store (and its credentials, in the run's Secret).
    follow: str | None = None
    follow_store: str | None = None


@dataclass(frozen=True)
class ModelLayer:
    """A registered model version's files as one layer already in a registry (written when the
    version was registered: image_runtime/modellayer.py): an uncompressed tar of the files under
    /models, mounted from `source` ("registry/repo") into the image's repository, never uploaded."""

    digest: str
    size: int
    source: str
    files: int = 0   # how many files it holds, and their bytes: for plans and messages
    bytes: int = 0


@dataclass(frozen=True)
class BuildContext:
    """What to put in the image. `files` maps a POSIX path relative to `workdir` to its source."""

    files: Mapping[str, Source]
    entrypoint: tuple[str, ...]
    requirements: tuple[str, ...] = ()
    python: str | None = None  # "3.11": the Python that produced pickles, for the runtime check
    workdir: str = WORKDIR
    env: Mapping[str, str] = field(default_factory=dict)
    kind: str = "python"  # name of the preprocessor that made it
    # Files the workload writes that a user can fetch afterwards, e.g. {"result": ".../result.pkl"}.
    outputs: Mapping[str, str] = field(default_factory=dict)
    serve: ServeSpec | None = None  # set by the serve preprocessor: this context is a model server
    # A model's files (fair deploy --model), placed under `workdir` like `files` but kept out of the
    # code: the append builder makes them a layer of their own (cached and reused by digest, not
    # counted against the context size limit); other builders copy them with the code.
    model_files: Mapping[str, Source] = field(default_factory=dict)
    # Or the model's files as a layer in the registry, mounted (append builder, same registry).
    model_layer: ModelLayer | None = None

    def size(self) -> int:
        return sum(len(s) if isinstance(s, bytes) else Path(s).stat().st_size for s in self.files.values())


@dataclass(frozen=True)
class BuildStats:
    seconds: float = 0.0
    layers_uploaded: int = 0
    layers_skipped: int = 0
    bytes_uploaded: int = 0
    # Where the time went, seconds: resolve, download, install, tar, compress (tar and compress:
    # CPU seconds summed over threads), layers (their wall time), upload (publishing's wall time,
    # after the image was complete: the append builder sends each layer to a registry as soon as
    # it is made), sending (its blob sends, summed over threads). Empty for other builders. When
    # layers were begun while resolving (builders/deps/speculate.py), also counts (ints):
    # speculated (groups whose speculative layers were used), speculated_early (of their layers,
    # those made before resolution answered), speculated_unused; and speculate, the seconds spent
    # hashing the store's wheels for it.
    phases: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltImage:
    """An image pinned by digest, and the context it was built from."""

    ref: str  # "registry/repo@sha256:..." (or "oci:DIR@sha256:..." for a layout)
    digest: str
    tag: str | None = None
    # A k8s PodTemplateSpec (as a dict) to run the image with, when one is handed in (a rerun's);
    # else deployers make it from the context (fairing.deployers.template.template_of).
    pod_template: Mapping[str, Any] = field(default_factory=dict)
    stats: BuildStats = field(default_factory=BuildStats)
    context: BuildContext | None = None
    # The requirements as pip resolved them ("name==version"), when the builder knows (append).
    resolved_requirements: tuple[str, ...] = ()


def write_context(ctx: BuildContext, root: Path) -> Path:
    """Materialise the context's files under `root` (used by local runs and tests)."""
    import shutil

    from .errors import ConfigError

    root = Path(root)
    # Checked before writing anything: pathlib would put '../x' beside the root and let an
    # absolute path replace it. Preprocessors never make such paths; hand-built contexts might.
    every = {**ctx.model_files, **ctx.files}
    for dst in every:
        p = PurePosixPath(dst)
        if not dst or p.is_absolute() or ".." in p.parts:
            raise ConfigError(f"context path {dst!r} must be relative and inside the context",
                              hint="use a path like 'src/train.py', without a leading '/' or '..'")
    for dst, src in sorted(every.items()):
        out = root / dst
        out.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            out.write_bytes(src)
        else:
            shutil.copy2(src, out)
    return root

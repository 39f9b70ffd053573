"""Local container runs: the image runs through the Docker/Podman API (fairing.engine) in a
container labelled app.kubernetes.io/managed-by=fairing, so `fair status/logs/delete/list` find it
again later."""
from __future__ import annotations

import contextlib
import io
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ...context import OUTPUT_DIR, RESULT_MARKER, BuildContext, BuiltImage
from ...engine import containers as engine
from ...engine import discover
from ...errors import DeployError, WaitTimeout
from .. import labels as L
from ..base import Handle
from . import spec
from .process import read_result


class ContainerHandle(Handle):
    """A workload in a local container. status/wait/logs/result/delete like a cluster Job's handle."""

    mode = "container"

    def __init__(self, name: str, container, client, ctx: BuildContext | None = None):
        super().__init__(name)
        self.container, self.client, self.context = container, client, ctx

    @classmethod
    def start(cls, name: str, image: BuiltImage, template: dict, url: str, *, labels: dict | None = None,
              pull: bool | None = None) -> "ContainerHandle":
        client = discover.client(url, timeout=600)
        _, c = spec.main_container(template)
        ref = engine.ensure_image(client, image.ref, pull)
        env = spec.env(c)
        env["FAIRING_RUNTIME"] = "1"
        all_labels = {**L.MANAGED, L.NAME: name, **(labels or {})}
        if image.context is not None:
            all_labels[L.KIND] = image.context.kind
        container = engine.start(
            client, url, ref, name=name, argv=" ".join(spec.argv(c)) or "(the image's default)",
            create={**spec.create_args(c, env), "labels": all_labels},
            refused_hint="check the image exists in the engine (`podman images`) and the name is free",
            start_hint="check the command exists in the image (entry point / executable) "
                       "and the resources are valid; nothing was left in the engine")
        return cls(name, container, client, image.context)

    @classmethod
    def find(cls, name: str, url: str) -> "ContainerHandle":
        client = discover.client(url)
        container = engine.get(client, name)
        if container is None:
            raise DeployError(f"no local workload named {name!r}",
                              hint="`fair list` shows the workloads fairing started")
        if not L.is_managed(container.labels):
            raise DeployError(f"container {name!r} was not started by fairing",
                              hint="fairing only manages what it started; `fair list` shows those")
        return cls(name, container, client)

    @classmethod
    def list(cls, url: str) -> list[dict]:
        client = discover.client(url)
        out = [{"name": c.name, "kind": "container", "where": "local", "status": engine.state(c.attrs),
                "image": c.attrs.get("Config", {}).get("Image", ""),
                "run_id": (c.labels or {}).get(L.RUN_ID)}
               for c in engine.list_labelled(client, L.MANAGED_SELECTOR)]
        return sorted(out, key=lambda d: d["name"])

    def status(self) -> str:
        return engine.state(self.container.attrs) if engine.reload(self.container) else "Deleted"

    def wait(self, timeout: float | None = None) -> str:
        rc = engine.wait(self.container, timeout)
        if rc is None:
            raise WaitTimeout(f"{self.name} is still running after {timeout:g}s",
                              hint=f"wait longer (--timeout) or stop it with `fair delete {self.name}`")
        if rc != 0:
            raise DeployError(f"{self.name} failed with exit code {rc}: "
                              f"{engine.last_line(self.container, skip=RESULT_MARKER)}",
                              hint=f"see the output with `fair logs {self.name}`")
        return "Succeeded"

    def logs(self, follow: bool = False) -> Iterator[str]:
        yield from engine.logs(self.container, follow)

    @contextlib.contextmanager
    def copy_outputs(self) -> Iterator[Path | None]:
        """The container's output dir, copied to a temp dir for the block (None: it has none)."""
        tmp = Path(tempfile.mkdtemp(prefix="fairing-output-"))
        try:
            try:
                bits, _ = self.container.get_archive(OUTPUT_DIR)
                with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                    tar.extractall(tmp, filter="data")
                out = tmp / Path(OUTPUT_DIR).name
            except Exception:  # noqa: BLE001 - no output dir in the container
                out = None
            yield out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def result(self) -> Any:
        # No output dir in the container: the stdout marker is the fallback.
        with self.copy_outputs() as out:
            return read_result(self.context, out, engine.read(self.container))

    def delete(self) -> None:
        engine.remove(self.container)

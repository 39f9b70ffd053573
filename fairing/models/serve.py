"""A model reference made into files on this machine, for serving: NAME, NAME:N, NAME@ALIAS (a
registered version), run:ID (a run's outputs) or best:TUNE_RUN_ID (the best trial's). Each file is
fetched once into a cache dir named by the version's digest and checked against its digest, so two
deploys of iris@champion that resolve to the same version place the same bytes.

A version registered into a registry store also has its files as one image layer (its "layer"):
an image pushed to the same registry gets that layer by cross-repository mount (`layer_for`), and
the files are then never fetched here at all (`fetch_model(..., download=False)` resolves only)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import FairingError


@dataclass(frozen=True)
class ModelFiles:
    dir: Path
    ref: str                  # what was asked for: iris@champion, run:3f2a9c, ...
    resolved: str             # iris:3, or run:<id>
    model: str | None
    version: int | None
    run: str | None
    digest: str               # the version document's digest (or the run's file list's)
    files: list = field(default_factory=list)
    store: str | None = None  # the model registry's store (a registered version)
    layer: dict | None = None  # the version's image layer {digest, size, mediaType}, when it has one
    backend: Any = field(default=None, compare=False, repr=False)  # where the files are read from

    @property
    def alias(self) -> str | None:
        """ALIAS when the reference is NAME@ALIAS (what a server can follow)."""
        return self.ref.split("@", 1)[1] if self.model and "@" in self.ref else None

    def labels(self) -> dict[str, str]:
        """For the run record, the model server's metrics and `fair status`."""
        out = {"ref": self.ref, "resolved": self.resolved, "digest": self.digest}
        if self.model:
            out["model"], out["version"] = self.model, str(self.version)
        if self.run:
            out["run"] = self.run
        return out


def fetch_model(ref: str, dest: str | Path | None = None, *, store: str | None = None,
                download: bool = True) -> ModelFiles:
    """The files `ref` names; with download=False only resolved (`fetch(m)` fetches them later)."""
    from ..outputs import store as ostore
    from ..outputs.fetch import index, store_of
    from ..settings import cache_dir
    from . import resolve_run
    from .registry import Registry

    text = str(ref).strip()
    if text.startswith(("run:", "best:")):
        record = resolve_run(text)
        _, doc = index(record)
        files = doc.get("files") or []
        if not files:
            raise FairingError(f"run {record['id']} kept no files to serve",
                               hint="write the model to $FAIRING_OUTPUT_DIR (fairing.outputs_dir()) in the run")
        digest = "sha256:" + hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        backend = ostore.open_backend(store_of(record))
        model, version, run, resolved = None, None, record["id"], f"run:{record['id']}"
        store_text, layer = None, None
    else:
        reg = Registry(store)
        v = reg.get(text)
        files, digest, backend, store_text = v["files"], v["digest"], reg.backend, reg.text
        model, version, run, resolved = v["model"], v["version"], (v.get("run") or {}).get("id"), v["ref"]
        layer = v.get("layer")
    d = Path(dest) if dest is not None else cache_dir() / "models" / digest.split(":", 1)[1][:24]
    m = ModelFiles(d, text, resolved, model, version, run, digest, list(files), store_text, layer, backend)
    return fetch(m) if download else m


def fetch(m: ModelFiles) -> ModelFiles:
    """`m`'s files into `m.dir`, each checked by digest (a file already there and right is kept)."""
    from ..image_runtime.outputs import file_digest

    d, ref, backend = m.dir, m.ref, m.backend
    for f in m.files:
        rel = PurePosixPath(f["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise FairingError(f"model {ref} names an unsafe path {f['path']!r}", hint="the store was written by hand")
        out = d / rel
        if out.is_file() and out.stat().st_size == f["size"] and file_digest(str(out)) == f["digest"]:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            backend.get_blob(f["digest"], str(out))
        except Exception as e:  # noqa: BLE001 - store errors of any backend: one line
            raise FairingError(f"fetching {f['path']} of model {ref} failed: {e}", hint="check the store and try again") from None
    return m


def layer_for(m: ModelFiles | None, target: Any) -> Any:
    """The version's layer as a BuildContext.model_layer, when an image pushed to `target` (a
    publish Target) can mount it: the version has a layer, in a registry store on the target's
    registry. None otherwise (another registry, an S3 or directory store, a version registered
    before layers, a run's outputs): the files are fetched here and made into a layer as before."""
    import urllib.parse

    from ..context import ModelLayer
    from ..publish.target import REGISTRY

    if m is None or not m.layer or not m.store or target is None or target.kind != REGISTRY:
        return None
    u = urllib.parse.urlsplit(m.store)
    if u.scheme not in ("oci", "oci+http") or u.netloc != target.ref.registry:
        return None
    return ModelLayer(m.layer["digest"], int(m.layer["size"]), f"{u.netloc}/{u.path.strip('/')}",
                      len(m.files), sum(int(f["size"]) for f in m.files))


def describe(m: Any) -> str:
    return f"{m.ref} = {m.resolved}" + (f" (run {m.run})" if m.run and m.model else "")

"""The model registry: versions and aliases as small documents in the outputs store, beside the
runs whose files they name. Nothing is uploaded again: a version lists its run's file blobs by
digest; an alias move is a document that names a version by number and digest.

Documents (names are OCI tags, the strictest of the three stores):

    model.NAME.vN            version N: its run (id, image, params, metrics, source digest, git),
                             its files [{path, digest, size, mediaType}]. Written once (exclusive).
    model.NAME.ALIAS.K       the K-th move of ALIAS: {version, digest, previous, by, moved}.
                             Written once (exclusive): the history, and the truth of where ALIAS
                             points (the highest K).
    model.NAME.ALIAS         a copy of the version ALIAS points to, for tools that read a tag (on a
                             registry it is the same manifest as model.NAME.vN: same digest).

Concurrency: register writes v(N+1) and promote writes ALIAS.(K+1) with an exclusive put, after
reading N or K. Of two people doing it at once one put succeeds; the other gets Exists and a
ConcurrentUpdate error here: nothing is overwritten, nothing is lost (see each backend's put_doc
for how exclusive it is: link(2), If-None-Match, a registry's read-back)."""
from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Any

from ..errors import ConfigError, FairingError
# The documents themselves are read and written by image_runtime.modeldocs (stdlib), which a
# scheduled retrain's pod and a model server following an alias use too: one writer of the format.
from ..image_runtime import modeldocs as docs
from ..image_runtime.modeldocs import ALIAS_RE, VERSION_RE  # noqa: F401 - part of this module's API

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
NAME_HINT = "a model name is lowercase letters, digits, - and _ (e.g. iris, churn-v2)"


class ConcurrentUpdate(FairingError):
    """Someone else registered or promoted at the same moment and won: nothing was overwritten."""


# --- names and references ----------------------------------------------------------------------

def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"bad model name {name!r}", hint=NAME_HINT)
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
        raise ConfigError(f"bad alias {alias!r}",
                          hint="an alias is a lowercase word (champion, staging, prod-eu), not v<number>")
    return alias


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """NAME, NAME:N, NAME@ALIAS -> (name, version, alias)."""
    text = (ref or "").strip()
    if "@" in text:
        name, alias = text.split("@", 1)
        return check_name(name), None, check_alias(alias)
    if ":" in text:
        name, v = text.split(":", 1)
        if not v.lstrip("v").isdigit():
            raise ConfigError(f"bad model version in {ref!r}", hint="write NAME:N (e.g. iris:3) or NAME@ALIAS (iris@champion)")
        return check_name(name), int(v.lstrip("v")), None
    return check_name(text), None, None


# --- the store ---------------------------------------------------------------------------------

def store_spec(store: str | None = None):
    """The store the registry lives in: `store`, else the `outputs` setting, else the local store."""
    from ..outputs import store as ostore

    text = store
    if text is None:
        from ..settings import load

        text = load().outputs
    spec = ostore.parse(text) if text else ostore.local_default()
    if spec is None:
        raise ConfigError("the outputs store is `none`: there is nowhere to keep models",
                          hint="set outputs: (oci://HOST/REPO, s3://BUCKET/PREFIX or a directory), or pass --store")
    if spec.claim is not None:
        raise ConfigError(f"models cannot live in {spec.text}: a volume in the cluster is not readable from here",
                          hint="use oci://HOST/REPO, s3://BUCKET/PREFIX or a directory for the model registry")
    return spec


class Registry:
    """The model registry in one outputs store."""

    def __init__(self, store: str | None = None, backend: Any = None):
        self.spec = store_spec(store) if backend is None else None
        self.text = self.spec.text if self.spec is not None else backend.describe()
        self._backend = backend

    @property
    def backend(self):
        if self._backend is None:
            from ..outputs import store as ostore

            self._backend = ostore.open_backend(self.spec)
        return self._backend

    def _call(self, fn, *args, **kw):
        from ..image_runtime import outputs as shim
        from ..image_runtime import outputs_s3

        try:
            return fn(*args, **kw)
        except (shim.Exists, outputs_s3.Exists, docs.Raced):
            raise
        except (shim.StoreError, outputs_s3.S3Error, OSError) as e:
            raise FairingError(f"the model registry in {self.text} cannot be used: {e}",
                               hint="check the store's address and credentials (fair config show)") from None

    # --- reading ---
    def names(self, prefix: str = "model.") -> list[str]:
        return self._call(self.backend.list_docs, prefix)

    def versions(self, name: str) -> list[int]:
        return self._call(docs.versions, self.backend, name)

    def aliases(self, name: str) -> dict[str, dict]:
        """{alias: its latest move document}."""
        seqs = self._call(docs.alias_seqs, self.backend, name)
        return {a: self._call(self.backend.get_doc, f"model.{name}.{a}.{k}") for a, k in sorted(seqs.items())}

    def models(self) -> list[str]:
        seen = set()
        for n in self.names():
            parts = n.split(".")
            if len(parts) >= 3 and VERSION_RE.match(parts[2]) and len(parts) == 3:
                seen.add(parts[1])
        return sorted(seen)

    def version(self, name: str, n: int) -> dict:
        doc = self._call(self.backend.get_doc, f"model.{name}.v{n}")
        if doc is None:
            have = self.versions(name)
            if not have:
                raise ConfigError(f"no model {name!r} in {self.text}", hint=self._models_hint())
            raise ConfigError(f"model {name} has no version {n}", hint=f"its versions: {_span(have)}")
        return doc

    def _models_hint(self) -> str:
        names = self.models()
        return ("models here: " + ", ".join(names[:10])) if names else "register one: fair models register NAME --run RUN_ID"

    def get(self, ref: str) -> dict:
        """The version document NAME, NAME:N or NAME@ALIAS names (with "ref" and "digest" added)."""
        name, n, alias = parse_ref(ref)
        if alias is not None:
            moves = self.aliases(name)
            if alias not in moves:
                if not self.versions(name):
                    raise ConfigError(f"no model {name!r} in {self.text}", hint=self._models_hint())
                have = ", ".join(moves) or "none yet"
                raise ConfigError(f"model {name} has no alias {alias!r}",
                                  hint=f"its aliases: {have}; set one with fair models promote {name} N --alias {alias}")
            move = moves[alias]
            doc = self.version(name, move["version"])
            if _digest(doc) != move["digest"]:
                raise FairingError(f"{name}@{alias} names version {move['version']} by digest {move['digest']}, "
                                   f"but that version now reads differently", hint="the store was changed by hand; re-promote")
        else:
            if n is None:
                have = self.versions(name)
                if not have:
                    raise ConfigError(f"no model {name!r} in {self.text}", hint=self._models_hint())
                n = have[-1]
            doc = self.version(name, n)
        return {**doc, "ref": f"{name}:{doc['version']}", "digest": _digest(doc)}

    # --- writing ---
    def register(self, name: str, run: dict, *, path: str | None = None, run_ref: str | None = None) -> dict:
        """Version N+1 of `name` from the run record `run` (its outputs in the store); the version
        already made from the same run and files when there is one (with "already": True)."""
        from ..outputs.fetch import index

        check_name(name)
        _, index_doc = index(run)
        files = list(index_doc.get("files") or [])
        if path is not None:
            want = str(PurePosixPath(path)).strip("/")
            chosen = [f for f in files if f["path"] == want or f["path"].startswith(want + "/")]
            if not chosen:
                have = ", ".join(f["path"] for f in files[:8]) or "none"
                raise ConfigError(f"run {run['id']} has no output {path!r}", hint=f"its outputs: {have}")
            files = chosen
        if not files:
            raise ConfigError(f"run {run['id']} kept no files to make a model of",
                              hint="write the model to $FAIRING_OUTPUT_DIR (fairing.outputs_dir()) in the run")
        had = self._call(docs.registered_from, self.backend, name, run["id"], files)
        if had is not None:  # this run's files are a version already: registering again is a no-op
            return {**had, "ref": f"{name}:{had['version']}", "digest": _digest(had), "already": True}
        self._bring_blobs(run, files)
        doc = docs.new_version(name, files, run_summary(run, index_doc), path=path, layer=self._layer(files))
        if run_ref and run_ref != run["id"]:
            doc["run"]["via"] = run_ref
        doc = self._exclusive(lambda: docs.put_version(self.backend, name, doc),
                              f"model.{name}.v{(self.versions(name) or [0])[-1] + 1}",
                              f"{name} version {{n}} was registered by someone else at the same moment")
        return {**doc, "ref": f"{name}:{doc['version']}", "digest": _digest(doc)}

    def promote(self, name: str, version: int | str, alias: str) -> dict:
        """Point `alias` of `name` at `version`; returns the move document (with "changed")."""
        check_name(name)
        check_alias(alias)
        n = _version_number(name, version)
        doc = self.version(name, n)
        k = self._call(docs.alias_seqs, self.backend, name).get(alias, 0)
        return self._exclusive(lambda: docs.move_alias(self.backend, name, alias, doc, expect_seq=k),
                               f"model.{name}.{alias}.{k + 1}",
                               f"{name}@{alias} was moved by someone else at the same moment")

    def _exclusive(self, write, doc_name: str, lost: str):
        """write() (an exclusive put of modeldocs); a lost race is ConcurrentUpdate, naming who won."""
        from ..image_runtime import outputs as shim
        from ..image_runtime import outputs_s3

        try:
            return self._call(write)
        except (shim.Exists, outputs_s3.Exists, docs.Raced):
            now = self._call(self.backend.get_doc, doc_name) or {}
            who = f" ({now.get('by')}, {now.get('created') or now.get('moved')})" if now.get("by") else ""
            raise ConcurrentUpdate(f"{lost.format(n=doc_name.rsplit('.', 1)[1].lstrip('v'))}{who}; nothing of yours was written",
                                   hint="look again (fair models show) and run the command again if it still applies") from None

    def _bring_blobs(self, run: dict, files: list[dict]) -> None:
        """The version's files must be in this store: they are when the run kept its outputs here
        (nothing moves). Otherwise each missing blob is mounted (same registry) or copied once."""
        from ..outputs import store as ostore
        from ..outputs.fetch import store_of

        src_spec = store_of(run)
        if self.spec is not None and src_spec.text == self.spec.text:
            return
        src = ostore.open_backend(src_spec)
        import tempfile

        for f in files:
            if self._call(self.backend.has_blob, f["digest"]):
                continue
            same_host = (src_spec.kind == "registry" and self.spec is not None and self.spec.kind == "registry"
                         and src_spec.spec["url"] == self.spec.spec["url"])
            if same_host and self._call(self.backend.mount_blob, f["digest"], src_spec.spec["repo"]):
                continue
            with tempfile.TemporaryDirectory(prefix="fairing-model-") as d:
                tmp = os.path.join(d, "blob")
                self._call(src.get_blob, f["digest"], tmp)
                self._call(self.backend.put_blob, f["digest"], f["size"], tmp)


    def _layer(self, files: list[dict]) -> dict | None:
        """On a registry store: the files as one image layer (image_runtime/modellayer.py), which a
        serving image or a modelcar of this version mounts instead of uploading the files again.
        The files come through this machine once, into a temporary dir, here and nowhere else."""
        import tempfile

        from ..image_runtime import modellayer

        if not modellayer.wanted(self.backend):
            return None
        with tempfile.TemporaryDirectory(prefix="fairing-model-layer-") as d:
            self._call(docs.fetch_files, self.backend, {"files": files}, d)
            return self._call(docs.write_layer, self.backend, files, d)


# --- helpers -------------------------------------------------------------------------------------

def run_summary(run: dict, index_doc: dict | None = None) -> dict:
    """What a version knows of its run: the record's code, image, params, metrics (the pod's
    record in the store's index fills in what a synced record lacks)."""
    image = run.get("image") or {}
    pod = (index_doc or {}).get("record") or {}
    git = run.get("git") or {}
    out = {"id": run["id"], "command": run.get("command"), "entry": run.get("entry"),
           "status": run.get("status") or pod.get("status"), "store": (run.get("outputs") or {}).get("store"),
           "image": image.get("ref") or pod.get("image"), "image_digest": image.get("digest"),
           "base_image": image.get("base"), "source_digest": (run.get("source") or {}).get("digest"),
           "source_files": (run.get("source") or {}).get("files"),
           "params": run.get("params") or {}, "metrics": run.get("metrics") or {},
           "requirements": run.get("requirements"),
           "git": {k: git.get(k) for k in ("commit", "branch", "dirty") if k in git} or None,
           "parent": run.get("parent"), "finished": run.get("finished") or pod.get("finished")}
    return {k: v for k, v in out.items() if v not in (None, {}, [])}


def _version_number(name: str, version: int | str) -> int:
    if isinstance(version, int):
        return version
    text = str(version).strip()
    if ":" in text or "@" in text:
        other, n, alias = parse_ref(text)
        if other != name:
            raise ConfigError(f"{text} is a version of model {other}, not of {name}",
                              hint=f"promote a version of {name}: fair models promote {name} N --alias ALIAS")
        if n is None:
            raise ConfigError(f"give a version number, not {text!r}", hint=f"e.g. fair models promote {name} 3 --alias champion")
        return n
    if not text.lstrip("v").isdigit():
        raise ConfigError(f"bad version {text!r}", hint="a version is a number, e.g. 3")
    return int(text.lstrip("v"))


def _digest(doc: dict) -> str:
    return docs.digest_of(doc)


def _span(ns: list[int]) -> str:
    return ", ".join(map(str, ns)) if len(ns) <= 6 else f"{ns[0]}..{ns[-1]}"

"""Where a build goes, parsed once: a registry repository, an OCI layout directory, or an engine.

    registry/repo[:tag]   pushed to a registry; the result is pinned as registry/repo@sha256:...
    oci:DIR[:tag]         written to an OCI image layout directory (no registry needed)
    registry/repo[:tag]   with an engine builder and no push: tagged in the Docker/Podman engine,
                          pinned by the engine's image ID

Every builder parses its target with `parse`, once per build; the stages after it receive the
`Target` value, never the string. A target without a tag gets the context hash (`tagged`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from ..oci import layout, reference
from ..oci.reference import Reference

REGISTRY, LAYOUT, ENGINE = "registry", "layout", "engine"
# Engines (docker tag/push) name images lower-case host/path, host included: a bare "team/train"
# would be pushed to Docker Hub.
_ENGINE_REPO = re.compile(r"[a-z0-9.:_/-]+")


@dataclass(frozen=True)
class Target:
    kind: str  # REGISTRY, LAYOUT or ENGINE
    text: str  # as the user gave it, for messages
    ref: Reference | None = None  # registry and engine targets
    path: Path | None = None  # layout targets
    tag: str | None = None

    def tagged(self, tag: str) -> "Target":
        """This target with `tag` if it has none yet (a tag the user gave always wins)."""
        if self.tag:
            return self
        ref = self.ref.with_tag(tag) if self.ref is not None else None
        return replace(self, ref=ref, tag=tag)

    @property
    def name(self) -> str:
        """Where, without the tag: `registry/repo` or `oci:DIR`."""
        return f"oci:{self.path}" if self.kind == LAYOUT else self.ref.name

    def __str__(self) -> str:
        if self.kind == LAYOUT:
            return f"{self.name}:{self.tag}" if self.tag else self.name
        return str(self.ref)


def parse(target: "str | Target", *, builder: str = "append", accepts: tuple[str, ...] = (REGISTRY, LAYOUT)) -> Target:
    """The target a `builder` may write to. `accepts` lists the kinds it can publish to; a
    registry-shaped string is a REGISTRY target if accepted, else an ENGINE one (an engine builder
    that does not push). Raises ConfigError saying what is wrong and what to write instead."""
    if isinstance(target, Target):
        if target.kind not in accepts:
            raise ConfigError(f"the {builder} builder cannot write to {target.text!r}", hint=_hint(accepts))
        return target
    if not target and LAYOUT in accepts:
        raise ConfigError("no image target given", hint="pass target='registry/repo[:tag]' or 'oci:DIR[:tag]'")
    if not target or (layout.is_layout(target) and LAYOUT not in accepts):
        raise ConfigError(f"the {builder} builder cannot write to {target!r}", hint=_hint(accepts))
    if layout.is_layout(target):
        path, tag = layout.parse_target(target)
        return Target(LAYOUT, target, path=path, tag=tag)
    if REGISTRY not in accepts and ENGINE not in accepts:
        raise ConfigError(f"the {builder} builder cannot write to {target!r}", hint=_hint(accepts))
    engine_named = ENGINE in accepts  # the engine tags this name, pushed or not
    if engine_named:
        if "@" in target:
            raise ConfigError(f"target {target!r} names a digest; a build can only push to a tag",
                              hint="drop the @sha256:... part")
        repo, _ = reference.split_tag(target)
        if repo != repo.lower() or not _ENGINE_REPO.fullmatch(repo) or "/" not in repo:
            raise ConfigError(f"invalid image repository {repo!r}",
                              hint="use lower-case registry/name, e.g. 127.0.0.1:5000/team/train")
    ref = reference.parse(target)
    if ref.digest:
        raise ConfigError(f"cannot push to a digest ({target})", hint="give a tag or no tag: the digest is computed from the content")
    kind = REGISTRY if REGISTRY in accepts else ENGINE
    return Target(kind, target, ref=ref, tag=ref.tag)


def _hint(accepts: tuple[str, ...]) -> str:
    if LAYOUT in accepts:
        return "give registry/repo[:tag] or oci:DIR[:tag]"
    return "give a registry target like 127.0.0.1:5000/team/train; only the append builder writes oci: layouts"

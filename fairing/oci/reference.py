"""Image references: `[registry[:port]/]repo[:tag][@digest]`, with Docker Hub's defaults."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import ConfigError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

# From the distribution reference grammar (distribution/reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")

_EXAMPLE = "use registry/repo[:tag][@sha256:...], e.g. 127.0.0.1:5000/team/train:v1"


@dataclass(frozen=True)
class Reference:
    registry: str  # "127.0.0.1:5000", "docker.io"
    repository: str  # "team/train", "library/python"
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host that serves the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str | None) -> "Reference":
        if tag is not None and not _TAG_RE.match(tag):
            raise ConfigError(f"invalid image tag {tag!r}", hint="a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "Reference":
        return replace(self, digest=digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def split_tag(ref: str) -> tuple[str, str | None]:
    """`host:5000/repo:tag` -> ("host:5000/repo", "tag"), without checking either part: a colon
    after the last slash is a tag, before it a port. A digest is dropped."""
    ref = ref.split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, None


def parse(ref: str) -> Reference:
    """Parse an image reference; raise ConfigError saying what is wrong with a bad one."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("empty image reference", hint=_EXAMPLE)
    original, ref = ref, ref.strip()
    if "://" in ref:
        raise ConfigError(f"image reference {original!r} must not contain a URL scheme", hint=_EXAMPLE)
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST_RE.match(digest) or (digest.startswith("sha256:") and not _SHA256_RE.match(digest)):
            raise ConfigError(f"invalid digest in image reference {original!r}", hint="a digest looks like sha256:<64 hex digits>")
    ref, tag = split_tag(ref)
    if tag is not None:
        if not _TAG_RE.match(tag):
            raise ConfigError(f"invalid tag {tag!r} in image reference {original!r}", hint="a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repo = first, rest
        if not _HOST_RE.match(registry):
            raise ConfigError(f"invalid registry host {registry!r} in image reference {original!r}", hint=_EXAMPLE)
    else:
        registry, repo = DOCKER_HUB, ref
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if not repo or not _REPO_RE.match(repo):
        why = "uppercase letters are not allowed" if repo != repo.lower() else "only lowercase letters, digits and . _ - / are allowed"
        raise ConfigError(f"invalid repository {repo!r} in image reference {original!r}: {why}", hint=_EXAMPLE)
    if len(registry) + 1 + len(repo) > 255:
        raise ConfigError(f"image reference {original!r} is longer than 255 characters", hint="use a shorter repository name")
    return Reference(registry=registry, repository=repo, tag=tag, digest=digest)


def is_loopback(host: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1, with or without a port."""
    h = host
    if h.startswith("["):
        h = h[1:h.find("]")]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h == "localhost" or h.startswith("127.") or h == "::1"

"""The local base image: Debian bookworm (debootstrap minbase) + Python 3.11.

No public registry is reachable, so the rig builds the root filesystem from the apt mirror once,
caches a deterministic tarball at ~/.cache/fairing/base/bookworm-py311.tar, imports it with podman
and publishes it in every manifest flavour clients meet:
  127.0.0.1:5000/fairing/python:3.11        Docker v2 schema 2 manifest
  127.0.0.1:5000/fairing/python:3.11-oci    OCI image manifest
  127.0.0.1:5000/fairing/python:3.11-multi  OCI image index: real linux/amd64 + arm64 placeholder
  127.0.0.1:5000/fairing/python:3.11-list   Docker manifest list: same two platforms
  127.0.0.1:5443/fairing/python:3.11        (TLS + basic auth) same v2s2 manifest
  127.0.0.1:5446/fairing/python:3.11        (token auth) same v2s2 manifest
The arm64 entry is an honest placeholder (one marker file, no Python): it exists so platform
selection is tested against a real index; nothing can run it here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import netutil
from .registry import Registry, SecureRegistry, TokenRegistry
from .state import RigError, cache_dir, log_tail, rig_dir, rig_lock, run
from .tarball import check_tar, write_tree

SUITE = "bookworm"
PYTHON = "3.11"
REPO = "fairing/python"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LABEL = "org.fairing.python"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join([MT_V2S2, MT_LIST, MT_OCI, MT_INDEX])

# Trimmed after debootstrap: nobody runs man inside a training job, and these change per build.
STRIP = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
         "usr/share/linda", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old",
         "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old",
         "var/cache/ldconfig/aux-cache", "debootstrap"]


@dataclass(frozen=True)
class BaseImage:
    docker: str                 # v2s2 tag on the plain registry
    oci: str                    # OCI manifest tag
    index: str                  # OCI image index (amd64 real, arm64 placeholder)
    docker_list: str            # Docker manifest list (same platforms)
    python: str                 # "3.11" (major.minor, what pickles care about)
    python_version: str         # e.g. "3.11.2" (the ENV PYTHON_VERSION in the image)
    tarball: str                # the cached rootfs tar
    secure: str | None = None   # v2s2 tag on the TLS registry
    token: str | None = None    # v2s2 tag on the token registry
    digests: dict = field(default_factory=dict, compare=False)  # ref -> manifest digest


def tarball_path() -> Path:
    return cache_dir() / "base" / f"{SUITE}-py{PYTHON.replace('.', '')}.tar"


# --- root filesystem -----------------------------------------------------------------------------
def apt_mirror() -> str:
    """$FAIRING_RIG_APT_MIRROR, else the Debian mirror apt on this machine uses, else the default."""
    if os.environ.get("FAIRING_RIG_APT_MIRROR"):
        return os.environ["FAIRING_RIG_APT_MIRROR"]
    d822 = Path("/etc/apt/sources.list.d/debian.sources")
    if d822.exists():
        for stanza in re.split(r"\n\s*\n", d822.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.M))
            suites = fields.get("Suites", "").split()
            if SUITE in suites and fields.get("URIs"):
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.exists():
            for line in path.read_text().splitlines():
                m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
                if m:
                    return m.group(1)
    return DEFAULT_MIRROR


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((m for m in mounts if m.startswith(prefix)), reverse=True)


def _remove_rootfs(path: Path) -> None:
    # debootstrap mounts /proc and /sys in the target; a failed run can leave them mounted and
    # rmtree must never descend into a live /proc or /sys.
    for m in _mounts_under(path):
        run(["umount", "-l", m], what=f"rig: unmount {m}", check=False)
    left = _mounts_under(path)
    if left:
        raise RigError(f"cannot clean {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


def python_version(rootfs: Path) -> str:
    status = (rootfs / "var/lib/dpkg/status").read_text()
    m = re.search(rf"^Package: python{re.escape(PYTHON)}\n(?:[^\n]+\n)*?Version: ([0-9.]+)", status,
                  re.M)
    if not m:
        raise RigError(f"debootstrap produced no python{PYTHON} package")
    return m.group(1)


def _strip(rootfs: Path) -> None:
    for rel in STRIP:
        p = rootfs / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            if rel.startswith("var/"):
                p.mkdir()  # apt expects these directories to exist
        elif p.exists() or p.is_symlink():
            p.unlink()
    for pyc in list(rootfs.rglob("__pycache__")):
        if pyc.is_dir() and not pyc.is_symlink():
            shutil.rmtree(pyc)
    for log in (rootfs / "var/log").rglob("*"):
        if log.is_file():
            log.write_bytes(b"")
    # Host-specific files debootstrap copies in; the runtime mounts its own anyway.
    (rootfs / "etc/hostname").write_text("fairing\n")
    for f in ("etc/resolv.conf", "etc/hosts"):
        p = rootfs / f
        if p.is_symlink() or p.exists():
            p.unlink()
        p.write_text("" if f.endswith("resolv.conf") else "127.0.0.1\tlocalhost\n")


def ensure_rootfs_tarball() -> tuple[Path, str]:
    """Build (once) the cached rootfs tarball; returns (path, full Python version)."""
    tar_path = tarball_path()
    meta_path = tar_path.with_suffix(".json")
    with rig_lock():
        if tar_path.exists() and meta_path.exists():
            return tar_path, json.loads(meta_path.read_text())["python_version"]
        if not shutil.which("debootstrap"):
            raise RigError("debootstrap is not installed (./scripts/setup installs it)")
        tar_path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=tar_path.parent))
        try:
            rootfs = work / "rootfs"
            mirror = apt_mirror()
            started = time.monotonic()
            try:
                run(["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(rootfs),
                     mirror], what=f"rig: debootstrap {SUITE} from {mirror}", timeout=1200)
            except RigError as e:
                # debootstrap's own log (inside the target) says which package or URL failed;
                # keep it, since the half-built target is removed below.
                inner = rootfs / "debootstrap" / "debootstrap.log"
                kept = rig_dir() / "debootstrap.log"
                if inner.exists():
                    shutil.copyfile(inner, kept)
                    raise RigError(f"{e}\n--- last lines of {kept} ---\n{log_tail(kept)}") from None
                raise
            version = python_version(rootfs)
            _strip(rootfs)
            tmp = work / "rootfs.tar"
            with open(tmp, "wb") as f:
                write_tree(rootfs, f)
            check_tar(tmp)
            os.replace(tmp, tar_path)
            meta_path.write_text(json.dumps({
                "suite": SUITE, "mirror": mirror, "python_version": version,
                "built_seconds": round(time.monotonic() - started, 1)}))
        finally:
            _remove_rootfs(work)
        return tar_path, version


# --- publishing ----------------------------------------------------------------------------------
def _manifest(url: str, ref_path: str, *, username=None, password=None, ca_file=None):
    r = netutil.registry_request(f"{url}/v2/{REPO}/manifests/{ref_path}",
                                 headers={"Accept": ACCEPT}, username=username, password=password,
                                 ca_file=ca_file)
    if r.status != 200:
        return None, None
    return r.headers.get("content-type", "").split(";")[0], r.headers.get("docker-content-digest")


def _has(url: str, tag: str, media_type: str, **auth) -> str | None:
    """The manifest digest if `tag` exists with the expected media type and all its blobs."""
    mt, digest = _manifest(url, tag, **auth)
    if mt != media_type:
        return None
    r = netutil.registry_request(f"{url}/v2/{REPO}/manifests/{tag}", headers={"Accept": mt}, **auth)
    body = r.json()
    if mt in (MT_V2S2, MT_OCI):
        for blob in [body["config"], *body["layers"]]:
            b = netutil.registry_request(f"{url}/v2/{REPO}/blobs/{blob['digest']}", method="HEAD",
                                         **auth)
            if b.status != 200:
                return None
    else:
        for m in body["manifests"]:
            if _manifest(url, m["digest"], **auth)[0] is None:
                return None
    return digest


def _podman(*args: str, what: str, timeout: float = 600):
    return run(["podman", *args], what=what, timeout=timeout)


def _import(tar: Path, ref: str, version: str, arch: str = "amd64", cmd: str = '["python3"]') -> None:
    changes = [f"ENV PATH={PATH_ENV}", f"ENV PYTHON_VERSION={version}", "ENV LANG=C.UTF-8",
               f"CMD {cmd}", f"LABEL {LABEL}={PYTHON}"]
    argv = ["import", "-q", "--arch", arch, "--os", "linux"]
    for c in changes:
        argv += ["--change", c]
    _podman(*argv, str(tar), ref, what=f"rig: podman import {ref}")


def _placeholder_tar(work: Path) -> Path:
    root = work / "placeholder"
    root.mkdir()
    (root / "FAIRING_PLACEHOLDER").write_text(
        "linux/arm64 placeholder of the fairing test rig: no Python, not runnable.\n")
    path = work / "placeholder.tar"
    with open(path, "wb") as f:
        write_tree(root, f)
    return path


def _manifest_list(name: str, entries: list[str], fmt: str, dest: str) -> None:
    local = f"localhost/fairing-rig/{name}"
    run(["podman", "manifest", "rm", local], what="rig: drop stale manifest list", check=False)
    _podman("manifest", "create", local, what=f"rig: podman manifest create {local}")
    try:
        for entry in entries:
            _podman("manifest", "add", "--tls-verify=false", local, f"docker://{entry}",
                    what=f"rig: podman manifest add {entry}")
        _podman("manifest", "push", "--all", "--tls-verify=false", "--format", fmt, local,
                f"docker://{dest}", what=f"rig: podman manifest push {dest}")
    finally:
        run(["podman", "manifest", "rm", local], what="rig: drop local manifest list", check=False)


def _authfile(work: Path, host: str, username: str, password: str) -> Path:
    import base64

    path = work / "auth.json"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {host: {"auth": token}}}, f)
    return path


def _copy(src: str, dest: str, authfile: Path | None) -> None:
    argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--preserve-digests"]
    if authfile:
        argv += ["--dest-authfile", str(authfile)]
    if dest.startswith("127.0.0.1:5446"):
        argv.append("--dest-tls-verify=false")
    run(argv + [f"docker://{src}", f"docker://{dest}"], what=f"rig: skopeo copy to {dest}",
        timeout=600)


def ensure_base_image(plain: Registry, secure: SecureRegistry | None = None,
                      token: TokenRegistry | None = None) -> BaseImage:
    """Build/push whatever is missing; a warm rig only does a few HEAD requests."""
    with rig_lock():
        tar, version = ensure_rootfs_tarball()
        repo = f"{plain.host}/{REPO}"
        refs = {"docker": f"{repo}:{PYTHON}", "oci": f"{repo}:{PYTHON}-oci",
                "index": f"{repo}:{PYTHON}-multi", "docker_list": f"{repo}:{PYTHON}-list"}
        want = {"docker": MT_V2S2, "oci": MT_OCI, "index": MT_INDEX, "docker_list": MT_LIST}
        digests = {refs[k]: _has(plain.url, refs[k].rsplit(":", 1)[1], want[k]) for k in refs}
        if not all(digests.values()):
            _publish_plain(tar, version, repo, digests, refs)
            digests = {refs[k]: _has(plain.url, refs[k].rsplit(":", 1)[1], want[k]) for k in refs}
            missing = [r for r, d in digests.items() if not d]
            if missing:
                raise RigError(f"base image push did not produce {', '.join(missing)}")
        image = dict(refs, python=PYTHON, python_version=version, tarball=str(tar))
        with tempfile.TemporaryDirectory(prefix="fairing-rig-") as tmp:
            for key, reg in (("secure", secure), ("token", token)):
                if reg is None:
                    continue
                ref = f"{reg.host}/{REPO}:{PYTHON}"
                auth = {"username": reg.username, "password": reg.password,
                        "ca_file": getattr(reg, "ca_file", None)}
                digest = _has(reg.url, PYTHON, MT_V2S2, **auth)
                if not digest:
                    _copy(refs["docker"], ref, _authfile(Path(tmp), reg.host, reg.username,
                                                         reg.password))
                    digest = _has(reg.url, PYTHON, MT_V2S2, **auth)
                    if not digest:
                        raise RigError(f"base image copy to {ref} did not land")
                image[key] = ref
                digests[ref] = digest
        return BaseImage(**image, digests=digests)


def _publish_plain(tar: Path, version: str, repo: str, have: dict, refs: dict) -> None:
    check_tar(tar)  # a poisoned or truncated cache must not become an image
    local = f"localhost/fairing-rig/python:{PYTHON}"
    _import(tar, local, version)
    tls = "--tls-verify=false"
    if not have[refs["docker"]]:
        _podman("push", "-q", tls, "--format", "v2s2", local, f"docker://{refs['docker']}",
                what="rig: push v2s2 base")
    if not have[refs["oci"]]:
        _podman("push", "-q", tls, "--format", "oci", local, f"docker://{refs['oci']}",
                what="rig: push OCI base")
    if not (have[refs["index"]] and have[refs["docker_list"]]):
        with tempfile.TemporaryDirectory(prefix="fairing-rig-") as tmp:
            ph_local = "localhost/fairing-rig/placeholder:arm64"
            _import(_placeholder_tar(Path(tmp)), ph_local, version, arch="arm64",
                    cmd='["/bin/false"]')
            ph_docker = f"{repo}:{PYTHON}-arm64-placeholder"
            ph_oci = f"{repo}:{PYTHON}-arm64-placeholder-oci"
            _podman("push", "-q", tls, "--format", "v2s2", ph_local, f"docker://{ph_docker}",
                    what="rig: push arm64 placeholder (v2s2)")
            _podman("push", "-q", tls, "--format", "oci", ph_local, f"docker://{ph_oci}",
                    what="rig: push arm64 placeholder (OCI)")
            with contextlib.suppress(RigError):
                _podman("rmi", ph_local, what="rig: drop local placeholder")
        # Same-format entries in each list, so no manifest conversion happens inside the push.
        _manifest_list("python-multi", [refs["oci"], ph_oci], "oci", refs["index"])
        _manifest_list("python-list", [refs["docker"], ph_docker], "v2s2", refs["docker_list"])

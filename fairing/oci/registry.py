"""A small client for the OCI distribution API: what a builder needs to read a base image and
push a new one. Blobs are checked (HEAD) before upload, mounted across repositories when the
base is on the same registry, uploaded in one PUT (or PATCH chunks when large), in parallel, and
the manifest goes last, so a tag never points at an image whose blobs are not all there."""
from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlencode, urljoin, urlsplit

from .. import trust
from ..errors import BuildError, tls_untrusted
from .auth import TokenAuth, may_send_credentials
from .cache import cache_root
from .errors import Forbidden, TimedOut, Unauthorized, Unreachable
from .image import ALL_MANIFEST_TYPES, INDEX_TYPES, MANIFEST_TYPES, Image, Layer, sha256
from .reference import DOCKER_HUB, DOCKER_HUB_API, Reference, is_loopback

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

CHUNK_THRESHOLD = 64 << 20  # blobs above this go up in PATCH chunks
# How long a process trusts what it learnt from a registry: the ping (scheme + auth challenge), the
# client with its tokens and connections, which tag a base image points at, which blobs a
# repository has. Long enough for an edit-rebuild loop, short enough that a moved tag or a
# restarted registry is noticed soon. A code-change rebuild then sends only the new layer, the
# config and the manifest (crane's minimum).
CACHE_TTL = 60.0
CHUNK_SIZE = 16 << 20
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class PushStats:
    layers_uploaded: int = 0
    layers_skipped: int = 0  # already there, or mounted from the base repository
    bytes_uploaded: int = 0
    mounted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, uploaded: int = 0, skipped: int = 0, nbytes: int = 0, mounted: int = 0) -> None:
        with self._lock:
            self.layers_uploaded += uploaded
            self.layers_skipped += skipped
            self.bytes_uploaded += nbytes
            self.mounted += mounted


def _registry_errors(r) -> str:
    """The registry's own error codes/messages from a response body (never our request)."""
    try:
        errs = r.json().get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs)[:300]
    except (ValueError, AttributeError):
        return ""


def _retry_after(r, default: float, cap: float) -> float:
    value = r.headers.get("Retry-After") if r is not None else None
    if value:
        try:
            return min(max(float(value), 0.0), cap)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value).timestamp()
                return min(max(when - time.time(), 0.0), cap)
            except (TypeError, ValueError):
                pass
    return min(default, cap)


class _NoNetrc:
    """Session-level auth that does nothing: stops requests from adding ~/.netrc credentials,
    which it would also send over plain HTTP."""

    def __call__(self, r):
        return r


class RegistryClient:
    """One registry host. `insecure` names hosts that may be spoken to over plain HTTP; loopback
    hosts always may. TLS uses the default CAs plus `ca_file` (or $REQUESTS_CA_BUNDLE alone)."""

    def __init__(
        self,
        host: str,
        *,
        insecure=(),
        ca_file: str | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        timeout: tuple[float, float] = (10.0, 300.0),
        chunk_threshold: int = CHUNK_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
        registry_name: str | None = None,
    ):
        import requests
        from requests.adapters import HTTPAdapter

        self.host = host
        self.allow_http = is_loopback(host) or host in set(insecure or ())
        self.retries, self.backoff, self.max_wait, self.timeout = retries, backoff, max_wait, timeout
        self.chunk_threshold, self.chunk_size = chunk_threshold, chunk_size
        self.session = requests.Session()
        self.session.auth = _NoNetrc()
        self.session.headers["User-Agent"] = "fairing"
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Passed on every request: a session-level `verify` loses to $REQUESTS_CA_BUNDLE in requests.
        # The registry's CA is added to the default roots, not put in their place (trust.py).
        self.verify = trust.bundle([("ca_file", ca_file),
                                    ("REQUESTS_CA_BUNDLE", os.environ.get("REQUESTS_CA_BUNDLE"))],
                                   cache_root()) if ca_file else None
        # Credentials are filed under the registry's name ("docker.io"), not its API host.
        self.auth = TokenAuth(registry_name or host, None, self.session)
        self.auth.verify = self.verify
        self._base_url: str | None = None
        self._ping_lock = threading.Lock()
        self.ttl = CACHE_TTL
        self._known: dict[tuple[str, str], float] = {}  # (repo, blob digest) -> trusted until
        self._pins: dict[tuple[str, str], tuple[str, float]] = {}  # (repo, tag) -> (digest, until)
        self._resolved: dict[tuple[str, str, str], tuple] = {}  # (repo, digest, platform) -> resolve()
        self._memo_lock = threading.Lock()

    # -- what this process already knows (see CACHE_TTL) ------------------------------------------
    def _knows(self, repo: str, digest: str) -> bool:
        with self._memo_lock:
            return self._known.get((repo, digest), 0.0) > time.monotonic()

    def _learn(self, repo: str, digest: str) -> None:
        with self._memo_lock:
            self._known[(repo, digest)] = time.monotonic() + self.ttl

    def forget(self, repo: str) -> None:
        """Stop trusting what is known about `repo`'s blobs (e.g. the registry lost them)."""
        with self._memo_lock:
            self._known = {k: v for k, v in self._known.items() if k[0] != repo}

    # -- connection -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        with self._ping_lock:
            if self._base_url is None:
                self._base_url = self._ping()
        return self._base_url

    def _ping(self) -> str:
        """Find the scheme (HTTPS, or HTTP where allowed) and the auth challenge, from GET /v2/."""
        import requests

        last: Exception | None = None
        # A loopback registry is plain HTTP far more often than not (ggcr's name.Registry.Scheme()
        # says http for loopback too): asking HTTP first spares a fresh process the TLS setup
        # (~150 ms, mostly loading the CA bundle) before every first push. A TLS registry on
        # loopback answers plain HTTP with 400 (or drops it), and HTTPS is tried next.
        if is_loopback(self.host):
            schemes = ["http", "https"]
        else:
            schemes = ["https", "http"] if self.allow_http else ["https"]
        for scheme in schemes:
            fallback = scheme != schemes[-1]
            url = f"{scheme}://{self.host}/v2/"
            for attempt in range(self.retries + 1):
                try:
                    r = self.session.get(url, timeout=self.timeout, verify=self.verify)
                except requests.exceptions.SSLError as e:
                    if tls_untrusted(e):
                        raise BuildError(
                            f"the TLS certificate of registry {self.host} is not trusted",
                            hint="pass ca_file=... (or set REQUESTS_CA_BUNDLE) to the registry's CA certificate",
                        ) from None
                    last = e
                    break  # not TLS at all: try plain HTTP if allowed
                except requests.exceptions.ConnectionError as e:
                    last = e
                    if fallback:
                        break  # maybe only the other scheme listens; try it before retrying
                    time.sleep(min(self.backoff * 2**attempt, self.max_wait))
                    continue
                except requests.exceptions.Timeout as e:
                    last = e
                    time.sleep(min(self.backoff * 2**attempt, self.max_wait))
                    continue
                if scheme == "http" and fallback and r.status_code == 400:
                    last = None
                    break  # "Client sent an HTTP request to an HTTPS server": try HTTPS
                if r.status_code in _RETRY_STATUS and attempt < self.retries:
                    time.sleep(_retry_after(r, self.backoff * 2**attempt, self.max_wait))
                    continue
                if r.status_code == 401:
                    self.auth.set_challenge(r.headers.get("WWW-Authenticate"))
                    if self.auth.scheme and not may_send_credentials(url):
                        raise BuildError(
                            f"registry {self.host} requires authentication but speaks plain HTTP; fairing never sends credentials over plain HTTP to a non-loopback host",
                            hint="serve the registry over HTTPS",
                        )
                    return f"{scheme}://{self.host}"
                if r.status_code == 200 or r.status_code in (403, 404):  # some registries 404 /v2/ behind proxies
                    return f"{scheme}://{self.host}"
                raise BuildError(f"registry {self.host} answered HTTP {r.status_code} to GET /v2/", hint="check that this host runs an OCI/Docker registry")
            else:
                continue  # retries exhausted on this scheme
        hint = "check the registry is running and the host:port is right"
        if not self.allow_http:
            hint += f"; for a plain-HTTP registry pass insecure=['{self.host}']"
        raise Unreachable(f"cannot connect to registry {self.host} ({type(last).__name__ if last else 'no answer'})", hint=hint)

    def request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], headers=None, data=None, ok=(200,), stream=False, what: str = "") -> "requests.Response":
        """One API call with auth, retries on connection errors and 408/429/5xx (honouring
        Retry-After, bounded), and one token refresh on 401. `data` may be a callable returning a
        fresh body for each attempt. Raises BuildError unless the status is in `ok`."""
        import requests

        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        if "://" in path_or_url:
            self.base_url  # noqa: B018 - make sure the challenge is known
        refreshed = False
        last = None
        attempt = 0
        while True:
            h = dict(headers or {})
            auth = self.auth.header(scopes, url)
            if auth:
                h["Authorization"] = auth
            body = data() if callable(data) else data
            try:
                r = self.session.request(method, url, headers=h, data=body, timeout=self.timeout, verify=self.verify, stream=stream, allow_redirects=method in ("GET", "HEAD"))
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last, r = e, None
            finally:
                if hasattr(body, "close"):
                    body.close()
            if r is not None and r.status_code == 401 and not refreshed:
                refreshed = True
                self.auth.invalidate(scopes)
                self.auth.set_challenge(r.headers.get("WWW-Authenticate"))
                r.close()
                continue
            if r is not None and (r.status_code not in _RETRY_STATUS or attempt >= self.retries):
                break
            if attempt >= self.retries:
                kind = TimedOut if isinstance(last, requests.exceptions.Timeout) else Unreachable
                raise kind(
                    f"registry {self.host} did not answer {what or method} after {attempt + 1} attempts ({type(last).__name__})",
                    hint="check the registry is running and reachable, then run the build again",
                )
            wait = _retry_after(r, self.backoff * 2**attempt, self.max_wait)
            log.info("retrying %s %s in %.1fs (%s)", method, urlsplit(url).path, wait, r.status_code if r is not None else type(last).__name__)
            if r is not None:
                r.close()
            time.sleep(wait)
            attempt += 1
        if r.status_code in ok:
            return r
        self._fail(r, what or f"{method} {urlsplit(url).path}")

    def _fail(self, r, what: str):
        detail = _registry_errors(r)
        msg = f"registry {self.host} answered HTTP {r.status_code} to {what}" + (f": {detail}" if detail else "")
        if r.status_code == 401:
            raise Unauthorized(msg, hint=self.auth.login_hint())
        if r.status_code == 403:
            raise Forbidden(msg, hint=f"the account has no access to this repository; {self.auth.login_hint()}")
        raise BuildError(msg, hint="retry; if it persists check the registry's logs")

    # -- reading --------------------------------------------------------------------------------
    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index; the digest is verified."""
        r = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", scopes=(f"repository:{repo}:pull",),
            headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)}, ok=(200, 404), what=f"GET manifest {repo}:{ref}",
        )
        if r.status_code == 404:
            raise BuildError(f"image {self.host}/{repo}{'@' if ref.startswith('sha256:') else ':'}{ref} not found", hint="check the name and tag, or push the base image first")
        raw = r.content
        digest = sha256(raw)
        expected = ref if ref.startswith("sha256:") else r.headers.get("Docker-Content-Digest")
        if expected and expected.startswith("sha256:") and expected != digest:
            raise BuildError(f"manifest {self.host}/{repo}:{ref} does not match its digest {expected}", hint="the registry or a proxy altered it; retry or use another registry")
        media_type = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            body_type = json.loads(raw).get("mediaType")
        except (ValueError, AttributeError):
            raise BuildError(f"manifest {self.host}/{repo}:{ref} is not JSON", hint="check the reference") from None
        media_type = body_type or media_type
        if media_type not in ALL_MANIFEST_TYPES:
            raise BuildError(f"image {self.host}/{repo}:{ref} has unsupported manifest type {media_type!r}", hint="use a base image in Docker v2 schema 2 or OCI format (re-push it with a current tool)")
        return raw, media_type, digest

    def pin(self, repo: str, ref: str) -> str | None:
        """The digest `ref` names now (None if absent): a digest is itself; a tag is asked for
        with a HEAD, remembered for the TTL (a rebuild reuses it)."""
        if ref.startswith("sha256:"):
            return ref
        now = time.monotonic()
        with self._memo_lock:
            hit = self._pins.get((repo, ref))
        if hit and hit[1] > now:
            return hit[0]
        digest = self.manifest_digest(repo, ref)
        if digest:
            with self._memo_lock:
                self._pins[(repo, ref)] = (digest, now + self.ttl)
        return digest

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """HEAD a manifest: its digest, or None if absent."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", scopes=(f"repository:{repo}:pull",),
                         headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)}, ok=(200, 404), what=f"HEAD manifest {repo}:{ref}")
        return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None

    def get_blob(self, repo: str, digest: str, write: Callable[[bytes], object] | None = None) -> bytes | None:
        """Fetch a blob, verifying its digest. With `write`, stream chunks to it and return None."""
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scopes=(f"repository:{repo}:pull",), ok=(200, 404), stream=True, what=f"GET blob {digest[:19]}")
        if r.status_code == 404:
            raise BuildError(f"blob {digest} not found in {self.host}/{repo}", hint="the image is incomplete in the registry; re-push it")
        h = hashlib.sha256()
        chunks = []
        import requests

        try:
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
                if write:
                    write(chunk)
                else:
                    chunks.append(chunk)
        except requests.RequestException as e:
            raise BuildError(f"download of blob {digest[:19]} from {self.host}/{repo} broke off ({type(e).__name__})", hint="retry the build") from None
        if f"sha256:{h.hexdigest()}" != digest:
            raise BuildError(f"blob {digest} from {self.host}/{repo} does not match its digest", hint="retry; if it persists the registry's storage may be corrupt")
        return None if write else b"".join(chunks)

    def resolve(self, repo: str, ref: str, platform: str) -> tuple[dict, str, bytes]:
        """The image manifest for `platform` ("os/arch[/variant]"), following an index.
        Returns (manifest, its digest, the config bytes) with the config verified. What a digest
        names never changes, so resolving one is done once per process."""
        key = (repo, ref, platform)
        if ref.startswith("sha256:"):
            with self._memo_lock:
                hit = self._resolved.get(key)
            if hit:
                manifest, digest, config = hit
                return json.loads(json.dumps(manifest)), digest, config  # callers may edit their copy
        raw, media_type, digest = self.get_manifest(repo, ref)
        if media_type in INDEX_TYPES:
            child = select_platform(json.loads(raw), platform, f"{self.host}/{repo}:{ref}")
            raw, media_type, digest = self.get_manifest(repo, child["digest"])
            if media_type not in MANIFEST_TYPES:
                raise BuildError(f"index entry {child['digest']} of {self.host}/{repo}:{ref} is not an image manifest", hint="nested indexes are not supported")
        manifest = json.loads(raw)
        manifest.setdefault("mediaType", media_type)
        config = self.get_blob(repo, manifest["config"]["digest"])
        if ref.startswith("sha256:"):
            with self._memo_lock:
                self._resolved[key] = (json.loads(raw) | {"mediaType": manifest["mediaType"]}, digest, config)
        return manifest, digest, config

    # -- writing --------------------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        """Whether `repo` has the blob; a blob this process saw there within the TTL is not asked for."""
        if self._knows(repo, digest):
            return True
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=(f"repository:{repo}:pull,push",), ok=(200, 404), what=f"HEAD blob {digest[:19]}")
        if r.status_code == 200:
            self._learn(repo, digest)
        return r.status_code == 200

    def mount(self, repo: str, digest: str, from_repo: str) -> str | None:
        """Cross-repository mount. None if mounted; else the upload URL the registry opened (202)."""
        q = urlencode({"mount": digest, "from": from_repo})
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/?{q}", scopes=(f"repository:{repo}:pull,push", f"repository:{from_repo}:pull"),
                         ok=(201, 202), what=f"mount {digest[:19]} from {from_repo}")
        if r.status_code == 201:
            self._learn(repo, digest)
            return None
        return urljoin(self.base_url + "/", r.headers["Location"])

    def upload(self, repo: str, digest: str, size: int, open_body: Callable[[], object], location: str | None = None) -> None:
        """Upload a blob: POST for a session, then one PUT (or PATCH chunks + PUT when large).
        A session lost to a registry restart is started again (bounded)."""
        scopes = (f"repository:{repo}:pull,push",)
        digest_invalid = False
        for _ in range(3):
            if location is None:
                r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, ok=(202,), what=f"start upload of {digest[:19]}")
                location = urljoin(self.base_url + "/", r.headers["Location"])
            try:
                if size > self.chunk_threshold:
                    location = self._patch_chunks(location, scopes, size, open_body, digest)
                    body = None
                else:
                    body = open_body
                sep = "&" if urlsplit(location).query else "?"
                r = self.request("PUT", f"{location}{sep}{urlencode({'digest': digest})}", scopes=scopes,
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(0 if body is None else size)},
                                 data=body, ok=(201, 204, 400, 404, 416), what=f"upload of {digest[:19]}")
            except _SessionLost:
                location = None
                continue
            if r.status_code in (201, 204):
                got = r.headers.get("Docker-Content-Digest")
                if got and got != digest:
                    raise BuildError(f"registry {self.host} stored blob {got} for upload of {digest}", hint="retry; the data changed during upload")
                self._learn(repo, digest)
                return
            if r.status_code == 400 and "DIGEST_INVALID" in _registry_errors(r):
                # Once can be a session the registry half-wrote before a restart; twice is our data.
                if digest_invalid:
                    raise BuildError(f"registry {self.host} rejected blob {digest[:19]}: content does not match its digest", hint="a cached layer changed on disk; clear FAIRING_CACHE's layers/ and retry")
                digest_invalid = True
            log.info("upload session for %s lost (HTTP %s); starting a new one", digest[:19], r.status_code)
            location = None
        raise BuildError(f"registry {self.host} kept losing the upload of blob {digest[:19]}", hint="check the registry's storage and logs, then retry")

    def _patch_chunks(self, location: str, scopes, size: int, open_body, digest: str) -> str:
        with open_body() as f:
            offset = 0
            while offset < size:
                chunk = f.read(self.chunk_size)
                if not chunk:
                    raise BuildError(f"blob {digest[:19]} is shorter than its recorded size", hint="clear FAIRING_CACHE's layers/ and retry")
                end = offset + len(chunk) - 1
                r = self.request("PATCH", location, scopes=scopes, data=chunk, ok=(202, 400, 404, 416),
                                 headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
                                 what=f"upload chunk of {digest[:19]}")
                if r.status_code != 202:
                    raise _SessionLost()
                location = urljoin(location, r.headers["Location"])
                offset = end + 1
        return location

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        what = f"PUT manifest {repo}:{ref}"
        r = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scopes=(f"repository:{repo}:pull,push",),
                         headers={"Content-Type": media_type}, data=raw, ok=(201, 200, 400), what=what)
        if r.status_code == 400:
            # A blob the registry names as unknown that this process remembered as there: the
            # registry lost it (wiped, garbage-collected). push() forgets and sends again.
            with self._memo_lock:
                remembered = [d for (rp, d) in self._known if rp == repo]
            if "BLOB_UNKNOWN" in _registry_errors(r) and any(d in r.text for d in remembered):
                raise _BlobsLost()
            self._fail(r, what)
        digest = sha256(raw)
        got = r.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise BuildError(f"registry {self.host} stored manifest {got}, expected {digest}", hint="the registry rewrote the manifest; use a registry that stores manifests as sent")
        return digest


_clients: dict[tuple, tuple[RegistryClient, float]] = {}
_clients_lock = threading.Lock()


def client_for(registry: str, **options) -> RegistryClient:
    """A client for a registry named as in a Reference ("docker.io" talks to its API host).

    Clients are shared in this process for CACHE_TTL seconds (per registry, options and local
    credentials), so a rebuild reuses the ping, the tokens and the open connections."""
    from .auth import credentials_fingerprint

    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    if "insecure" in options:
        ins = options["insecure"]
        options["insecure"] = (ins,) if isinstance(ins, str) else tuple(sorted(ins or ()))
    key = (registry, tuple(sorted(options.items())), credentials_fingerprint())
    now = time.monotonic()
    with _clients_lock:
        for k in [k for k, (_, until) in _clients.items() if until <= now]:
            del _clients[k]
        if key not in _clients:
            _clients[key] = (RegistryClient(host, registry_name=registry, **options), now + CACHE_TTL)
        return _clients[key][0]


def pinned(registry: str, repo: str, ref: str) -> str | None:
    """The digest a client of `registry` in this process pinned `repo:ref` to within the TTL (a
    build just did: the base it built on), without asking the registry; None if none did."""
    now = time.monotonic()
    with _clients_lock:
        clients = [c for k, (c, until) in _clients.items() if k[0] == registry and until > now]
    for c in clients:
        with c._memo_lock:
            hit = c._pins.get((repo, ref))
        if hit and hit[1] > now:
            return hit[0]
    return None


class _SessionLost(Exception):
    pass


class _BlobsLost(Exception):
    pass


def select_platform(index: dict, platform: str, name: str) -> dict:
    """The index entry for "os/arch[/variant]"; a missing variant in the entry or the request
    matches any (arm64's variant is usually omitted)."""
    want = platform.split("/")
    if len(want) < 2:
        raise BuildError(f"invalid platform {platform!r}", hint="use os/arch[/variant], e.g. linux/amd64")
    os_, arch, variant = want[0], want[1], want[2] if len(want) > 2 else None
    seen = []
    for entry in index.get("manifests") or []:
        p = entry.get("platform") or {}
        seen.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
        if p.get("os") == os_ and p.get("architecture") == arch and (variant is None or p.get("variant") in (None, variant)):
            return entry
    raise BuildError(f"{name} has no image for platform {platform}", hint=f"it has: {', '.join(s for s in seen if s) or 'none'}; pass platform=... to match one")


# -- pushing an image -----------------------------------------------------------------------------
def _open(path: Path):
    return lambda: open(path, "rb")


class Pusher:
    """The blobs of one image sent to one repository as they become known, the manifest last.

    A builder calls `send(layer)` as each layer is made, so the upload of the big layers runs
    beside the rest of the build; `finish(image)` sends whatever is left (the config, layers not
    sent yet), waits for every blob, and only then PUTs the manifest. A build that fails calls
    `close()` instead: no manifest and no tag are written. The blobs that already landed stay,
    unreferenced, until the registry's garbage collection removes them (blobs without a manifest
    are harmless: nothing can pull them by tag, and a rebuild's HEAD finds and reuses them)."""

    def __init__(self, target: Reference, client: RegistryClient, *, fetch: Callable[[Layer], Path], jobs: int = 4,
                 progress: Callable[[str], None] | None = None):
        self.target, self.client, self.fetch = target, client, fetch
        self.say = progress or (lambda msg: log.info("%s", msg))
        self.stats = PushStats()
        self.seconds = 0.0  # wall time of the blob sends, summed over threads
        self._sent: dict[str, Future] = {}  # digest -> its send
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fairing-push")
        # Blobs sent while the build is still running go one at a time: one stream is enough to
        # keep up with the layers being made, and takes less CPU from them than `jobs` streams.
        # With jobs=1 it is the same thread, so one upload at a time stays one, also while an
        # early send still runs (a throttled one waits out its Retry-After) when the image is done.
        self._early = self._pool if jobs <= 1 else ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairing-push-early")
        self._finishing = False
        self._failed: BaseException | None = None  # the first send that failed (set by its thread)

    def __enter__(self) -> "Pusher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, layer: Layer) -> None:
        """Start sending `layer` (once per digest). Raises the first failed send's error, so a
        build whose uploads fail stops early, with the error push() would have raised."""
        self.check()
        with self._lock:
            if layer.digest in self._sent:
                return
            pool = self._pool if self._finishing else self._early
            future = self._sent[layer.digest] = pool.submit(self._timed, self._send_layer, layer)
        future.add_done_callback(self._note)  # outside the lock: a send already done calls it here

    def _note(self, future: Future) -> None:
        # Kept as each send ends, so check() costs nothing however many layers were sent.
        if not future.cancelled() and future.exception() is not None:
            with self._lock:
                self._failed = self._failed or future.exception()

    def check(self) -> None:
        """Raise the error of a send that already failed, if any."""
        with self._lock:
            failed = self._failed
        if failed is not None:
            raise failed

    def close(self) -> None:
        """Stop: sends not started are dropped, running ones are waited for (no thread outlives
        the build). Idempotent."""
        with self._lock:
            for f in self._sent.values():
                f.cancel()
        self._early.shutdown(wait=True)
        self._pool.shutdown(wait=True)

    def _timed(self, fn, *args) -> None:
        t0 = time.perf_counter()
        try:
            fn(*args)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - t0

    def _send_layer(self, layer: Layer) -> None:
        repo, client, stats = self.target.repository, self.client, self.stats
        if client.blob_exists(repo, layer.digest):
            stats.add(skipped=1)
            return
        location = None
        if layer.source and layer.path is None:
            src_registry, _, src_repo = layer.source.partition("/")
            if src_registry == self.target.registry and src_repo != repo:
                location = client.mount(repo, layer.digest, src_repo)
                if location is None:
                    stats.add(skipped=1, mounted=1)
                    return
        path = layer.path or self.fetch(layer)
        self.say(f"uploading layer {layer.digest[7:19]} ({layer.size} bytes)")
        client.upload(repo, layer.digest, layer.size, _open(path), location)
        stats.add(uploaded=1, nbytes=layer.size)

    def _send_config(self, image: Image) -> None:
        data = image.config_bytes
        if self.client.blob_exists(self.target.repository, image.config_digest):
            return
        self.client.upload(self.target.repository, image.config_digest, len(data), lambda: data)
        self.stats.add(nbytes=len(data))

    def finish(self, image: Image) -> str:
        """Send what is left of `image`, wait for every blob, then PUT the manifest (by tag, or by
        digest without a tag; skipped when the tag already points at the same digest). Returns
        the image's digest; `stats` then counts every blob this pusher sent or found."""
        self._finishing = True  # the image is complete: what is left goes on all `jobs` streams
        for layer in image.layers:  # a layer listed twice is still one blob
            self.send(layer)
        with self._lock:
            futures = list(self._sent.values())
        futures.append(self._pool.submit(self._timed, self._send_config, image))
        errors = []
        for f in as_completed(futures):
            try:
                f.result()
            except BaseException as e:  # keep going so we report after every worker has stopped
                errors.append(e)
                for other in futures:
                    other.cancel()
        if errors:
            raise errors[0]
        repo, target = self.target.repository, self.target
        raw, digest = image.manifest_bytes(), image.digest
        if target.tag and self.client.manifest_digest(repo, target.tag) == digest:
            self.say(f"{target.name}:{target.tag} already points at {digest[:19]}")
        else:
            self.client.put_manifest(repo, target.tag or digest, raw, image.media_type)
            self.stats.add(nbytes=len(raw))
        return digest


def push(
    image: Image,
    target: Reference,
    client: RegistryClient,
    *,
    fetch: Callable[[Layer], Path],
    jobs: int = 4,
    progress: Callable[[str], None] | None = None,
    pusher: Pusher | None = None,
) -> tuple[str, PushStats]:
    """Push every blob of `image` to `target`'s repository (in parallel), then the manifest.

    Layers with a local `path` are uploaded if absent; layers in another repository of the same
    registry are mounted (falling back to an upload); other layers are first fetched locally with
    `fetch`. The manifest is PUT only after every blob is confirmed (Pusher.finish). `pusher`:
    one the build already started sending this image's layers with (closed here either way)."""
    pusher = pusher or Pusher(target, client, fetch=fetch, jobs=jobs, progress=progress)
    try:
        with pusher:
            return pusher.finish(image), pusher.stats
    except _BlobsLost:
        # A blob the registry names as unknown that this process remembered as there: the
        # registry lost it (wiped, garbage-collected). Forget, and send everything once more.
        client.forget(target.repository)
        try:
            with Pusher(target, client, fetch=fetch, jobs=jobs, progress=progress) as again:
                return again.finish(image), again.stats
        except _BlobsLost:
            raise BuildError(f"registry {client.host} lost blobs of {target.repository} while the image was pushed",
                             hint="retry; if it persists check the registry's storage and garbage collection") from None


def fetch_to_cache(cache, clients: Callable[[str], RegistryClient]) -> Callable[[Layer], Path]:
    """A `fetch` for `push`/layouts: get a remote layer into the local blob cache (verified)."""

    def fetch(layer: Layer) -> Path:
        hit = cache.get_blob(layer.digest, layer.size)
        if hit:
            return hit
        if not layer.source:
            raise BuildError(f"layer {layer.digest[:19]} has no local copy and no source repository", hint="this is a bug in fairing; please report it")
        registry, _, repo = layer.source.partition("/")
        client = clients(registry)
        return cache.put_blob(layer.digest, layer.size, lambda f: client.get_blob(repo, layer.digest, f.write))

    return fetch

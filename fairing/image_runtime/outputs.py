# Keeps a run's outputs: runs the workload's command, then saves whatever is in $FAIRING_OUTPUT_DIR
# to the outputs store, on success and on failure. Runs inside the image, where fairing is not
# installed: the stdlib only, and syntax Python 3.8 parses.
#
#   python .fairing/outputs.py -- python train.py --lr 0.1
#
# With no store configured ($FAIRING_OUTPUTS_STORE unset) it execs the command: nothing in between.
# The store is content-addressed: a file's blob is uploaded only when the store lacks its digest,
# and the run's index (its record and file list) is written last, so a run is either fully saved
# or absent; an upload killed half-way leaves no index and the next try completes it.
# Backends: "registry" (an OCI artifact tagged run-<id>), "dir" (a mounted volume: pvc://, or a
# local directory), "s3" (outputs_s3.py). fairing's client reads the same stores with these classes.
import base64
import datetime
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

DEFAULT_DIR = "/tmp/fairing-output"
ARTIFACT_TYPE = "application/vnd.fairing.run.outputs.v1"
RECORD_MEDIA_TYPE = "application/vnd.fairing.run.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
FILE_MEDIA_TYPE = "application/octet-stream"
# ModelPack (CNCF model-spec) media type for model weights: a KServe modelcar or a model registry
# can tell the model files from logs and plots.
MODEL_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle", ".pt", ".pth", ".safetensors", ".onnx", ".h5", ".keras",
                  ".bin", ".gguf", ".ckpt", ".pb", ".tflite", ".mar", ".ubj", ".cbm", ".model", ".npz")
TITLE = "org.opencontainers.image.title"
CHUNK = 1 << 20
# Small named documents beside the runs (the model registry's versions and aliases: fairing.models).
# A document may list "files" ({path, digest, size, mediaType}) that the store already holds: on a
# registry they become the artifact's layers (referenced by digest, never uploaded again).
DOC_MEDIA_TYPE = "application/vnd.fairing.doc.v1+json"
DOC_ARTIFACT_TYPE = "application/vnd.fairing.doc.v1"
# How long an exclusive put on a registry waits before reading its tag back (see put_doc).
REGISTRY_SETTLE_S = 0.5
EXIT_NOT_SAVED = 3  # the command succeeded but its outputs could not be saved: the run failed
EXIT_NOT_REGISTERED = 4  # saved, but the model could not be registered (a gate naming a missing metric)
# A retrain (fair train --register NAME [--promote-if GATE]): the model name, and the gate.
REGISTER_ENV, GATE_ENV = "FAIRING_REGISTER", "FAIRING_PROMOTE_IF"
# A Job's exit line (fairing.context.exit_line reads it): $FAIRING_EXIT_MARK is the client's nonce.
EXIT_MARK_ENV, EXIT_PREFIX = "FAIRING_EXIT_MARK", "FAIRING_EXIT:"
# A Job whose client will attach (fairing.kube.attach): how long to wait for its "go" on stdin.
ATTACH_WAIT_ENV = "FAIRING_ATTACH_WAIT"


class StoreError(Exception):
    def __init__(self, message, retryable=False):
        Exception.__init__(self, message)
        self.retryable = retryable


def media_type(path):
    return MODEL_MEDIA_TYPE if path.lower().endswith(MODEL_SUFFIXES) else FILE_MEDIA_TYPE


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def canonical(doc):
    """A document's bytes: the same doc always gives the same bytes (and digest)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_doc_name(name):
    """Document names are OCI tags (the strictest of the three stores): [A-Za-z0-9_][A-Za-z0-9._-]{0,127}."""
    import re
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", name):
        raise ValueError("document name %r is not [A-Za-z0-9_][A-Za-z0-9._-]{0,127}" % (name,))
    return name


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- backends --------------------------------------------------------------------------------------

class DirBackend(object):
    """A directory (a mounted PVC in a pod, or a local cache dir): blobs/sha256/<hex>, runs/<id>.json."""

    def __init__(self, root):
        self.root = root

    def describe(self):
        return self.root

    def _blob(self, digest):
        return os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def has_blob(self, digest):
        return os.path.isfile(self._blob(digest))

    def put_blob(self, digest, size, path):
        dst = self._blob(digest)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = "%s.%d.part" % (dst, os.getpid())
        h = hashlib.sha256()
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                for block in iter(lambda: src.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if "sha256:" + h.hexdigest() != digest:
                raise Changed("%s changed while it was saved" % path)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_blob(self, digest, dest_path):
        copy_checked(lambda: open(self._blob(digest), "rb"), digest, dest_path, self.describe())

    def put_run(self, run_id, doc):
        d = os.path.join(self.root, "runs")
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, ".%s.%d.tmp" % (run_id, os.getpid()))
        with open(tmp, "w") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(d, run_id + ".json"))

    def get_run(self, run_id):
        try:
            with open(os.path.join(self.root, "runs", run_id + ".json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def list_runs(self):
        try:
            names = os.listdir(os.path.join(self.root, "runs"))
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    # --- named documents: docs/<name>.json ---
    def put_doc(self, name, doc, exclusive=False):
        """Write `doc` under `name`; returns its digest. `exclusive`: only if `name` is free, atomically
        (the whole file is written aside, then hard-linked into place: link(2) fails with EEXIST if
        the name exists, so of two writers exactly one wins and no reader sees half a document)."""
        d = os.path.join(self.root, "docs")
        os.makedirs(d, exist_ok=True)
        body = canonical(doc)
        final = os.path.join(d, check_doc_name(name) + ".json")
        tmp = os.path.join(d, ".%s.%d.%s.tmp" % (name, os.getpid(), base64.b32encode(os.urandom(5)).decode()))
        try:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise Exists("%s already holds %s" % (self.describe(), name))
            else:
                os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_doc(self, name):
        try:
            with open(os.path.join(self.root, "docs", check_doc_name(name) + ".json"), "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None

    def list_docs(self, prefix=""):
        try:
            names = os.listdir(os.path.join(self.root, "docs"))
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith(".") and n.startswith(prefix))


def copy_checked(opener, digest, dest_path, where):
    """Stream a blob to dest_path (via dest_path.part, renamed when its digest checks out). The
    network (or source file) is read in a thread while this one hashes and writes: sha256 and the
    write release the GIL, so the three overlap instead of taking turns."""
    import queue
    import threading

    tmp = dest_path + ".part"
    h = hashlib.sha256()
    blocks = queue.Queue(maxsize=8)
    failed = []

    def read(src):
        try:
            with src:
                for block in iter(lambda: src.read(CHUNK), b""):
                    blocks.put(block)
        except BaseException as e:  # noqa: BLE001 - handed to the writer, raised there
            failed.append(e)
        finally:
            blocks.put(None)

    try:
        try:
            src = opener()
        except FileNotFoundError:
            raise StoreError("%s has no blob %s" % (where, digest))
        reader = threading.Thread(target=read, args=(src,), daemon=True)
        reader.start()
        with open(tmp, "wb") as out:
            while True:
                block = blocks.get()
                if block is None:
                    break
                h.update(block)
                out.write(block)
        reader.join()
        if failed:
            raise failed[0]
        if "sha256:" + h.hexdigest() != digest:
            raise StoreError("blob %s from %s does not match its digest" % (digest, where), retryable=True)
        os.replace(tmp, dest_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RegistryBackend(object):
    """An OCI registry: each file one blob (layer), the run's index the config, the artifact tagged
    run-<id> (the tag is the manifest PUT, the last request). Basic and Bearer-token auth."""

    def __init__(self, url, repo, username=None, password=None, ca_file=None, timeout=60):
        import urllib.parse
        u = urllib.parse.urlsplit(url)
        self.scheme, self.host, self.repo = u.scheme or "https", u.netloc, repo
        self.username, self.password, self.ca_file, self.timeout = username, password, ca_file, timeout
        self._auth = None  # the Authorization header once a challenge has been answered

    def describe(self):
        return "oci://%s/%s" % (self.host, self.repo)

    def _conn(self):
        import http.client
        if self.scheme == "http":
            return http.client.HTTPConnection(self.host, timeout=self.timeout)
        import ssl
        return http.client.HTTPSConnection(self.host, timeout=self.timeout,
                                           context=ssl.create_default_context(cafile=self.ca_file))

    def _request(self, method, path, body=None, headers=None, length=None, stream=False):
        """One request (answering an auth challenge once). Returns (status, headers, body or the
        response itself when `stream`). `body` may be a callable returning a fresh file object."""
        for attempt in (0, 1):
            h = dict(headers or {})
            if self._auth:
                h["Authorization"] = self._auth
            data = body() if callable(body) else body
            if length is not None:
                h["Content-Length"] = str(length)
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=h)
                r = conn.getresponse()
            finally:
                if hasattr(data, "close"):
                    data.close()
            if r.status == 401 and attempt == 0:
                challenge = r.getheader("WWW-Authenticate") or ""
                r.read()
                conn.close()
                self._auth = self._answer(challenge)
                if self._auth:
                    continue
            if stream and r.status < 300:
                return r.status, r, r
            payload = r.read()
            conn.close()
            return r.status, r, payload
        return r.status, r, payload  # pragma: no cover - the loop always returns

    def _answer(self, challenge):
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.username is None:
                return None
            return "Basic " + base64.b64encode(("%s:%s" % (self.username, self.password)).encode()).decode()
        if scheme.lower() != "bearer":
            return None
        import re
        import urllib.parse
        import urllib.request
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        query = {"scope": "repository:%s:pull,push" % self.repo}
        if params.get("service"):
            query["service"] = params["service"]
        req = urllib.request.Request(params["realm"] + "?" + urllib.parse.urlencode(query))
        if self.username is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(
                ("%s:%s" % (self.username, self.password)).encode()).decode())
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca_file) if params["realm"].startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as r:
                doc = json.loads(r.read().decode())
        except Exception as e:  # noqa: BLE001 - reported as the registry's refusal below
            code = getattr(e, "code", None)
            raise StoreError("the token server of %s refused a token for %s (%s): check the credentials"
                             % (self.host, self.repo, code or type(e).__name__), retryable=code is None or code >= 500)
        return "Bearer " + (doc.get("token") or doc.get("access_token") or "")

    def _check(self, status, resp, what, ok=(200, 201, 202)):
        if status in ok:
            return
        retry = status >= 500 or status == 429
        if status in (401, 403):
            raise StoreError("%s refused %s (%d): the credentials may not push to %s"
                             % (self.host, what, status, self.repo))
        raise StoreError("%s answered %d to %s" % (self.host, status, what), retryable=retry)

    def has_blob(self, digest):
        status, _, _ = self._request("HEAD", "/v2/%s/blobs/%s" % (self.repo, digest))
        if status == 200:
            return True
        if status == 404:
            return False
        self._check(status, None, "HEAD blob %s" % digest)
        return False

    def _upload(self, digest, size, body):
        status, r, _ = self._request("POST", "/v2/%s/blobs/uploads/" % self.repo, length=0, body=b"")
        self._check(status, r, "starting an upload")
        loc = r.getheader("Location")
        import urllib.parse
        u = urllib.parse.urlsplit(loc)
        path = (u.path or loc) + "?" + ((u.query + "&") if u.query else "") + "digest=" + digest
        status, r, payload = self._request("PUT", path, body=body, length=size,
                                           headers={"Content-Type": "application/octet-stream"})
        if status == 400 and b"DIGEST_INVALID" in payload:
            raise Changed("the upload of %s did not match its digest: the file changed" % digest)
        self._check(status, r, "the upload of %s" % digest)

    def put_blob(self, digest, size, path):
        self._upload(digest, size, lambda: open(path, "rb"))

    def put_blob_stream(self, digest, size, open_chunks):
        """A blob made while it is sent (a model layer): `open_chunks()` gives its bytes in pieces."""
        self._upload(digest, size, open_chunks)

    def get_blob(self, digest, dest_path):
        status, r, body = self._request("GET", "/v2/%s/blobs/%s" % (self.repo, digest), stream=True)
        if status == 404:
            raise StoreError("%s has no blob %s" % (self.describe(), digest))
        self._check(status, r, "GET blob %s" % digest)
        copy_checked(lambda: body, digest, dest_path, self.describe())

    def put_run(self, run_id, doc):
        config = json.dumps(doc, sort_keys=True).encode()
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        if not self.has_blob(cdigest):
            self._upload(cdigest, len(config), config)
        layers = []
        for f in doc.get("files", []):
            layers.append({"mediaType": f.get("mediaType") or FILE_MEDIA_TYPE, "digest": f["digest"],
                           "size": f["size"], "annotations": {TITLE: f["path"]}})
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE,
                    "config": {"mediaType": RECORD_MEDIA_TYPE, "digest": cdigest, "size": len(config)},
                    "layers": layers,
                    "annotations": {"io.fairing.run.id": run_id,
                                    "org.opencontainers.image.created": doc.get("record", {}).get("finished") or _now()}}
        body = json.dumps(manifest, sort_keys=True).encode()
        status, r, _ = self._request("PUT", "/v2/%s/manifests/run-%s" % (self.repo, run_id), body=body,
                                     length=len(body), headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        self._check(status, r, "tagging run-%s" % run_id)

    def get_run(self, run_id):
        status, r, body = self._request("GET", "/v2/%s/manifests/run-%s" % (self.repo, run_id),
                                        headers={"Accept": MANIFEST_MEDIA_TYPE})
        if status == 404:
            return None
        self._check(status, r, "GET run-%s" % run_id)
        manifest = json.loads(body.decode())
        status, r, config = self._request("GET", "/v2/%s/blobs/%s" % (self.repo, manifest["config"]["digest"]))
        self._check(status, r, "GET the record of run-%s" % run_id)
        return json.loads(config.decode())

    def list_runs(self):
        out, path = [], "/v2/%s/tags/list?n=1000" % self.repo
        while path:
            status, r, body = self._request("GET", path)
            if status == 404:
                return out
            self._check(status, r, "listing tags")
            out += [t[4:] for t in (json.loads(body.decode()).get("tags") or []) if t.startswith("run-")]
            link = r.getheader("Link") or ""
            path = link[link.find("<") + 1:link.find(">")] if link.startswith("<") else None
        return sorted(out)

    def _tags(self):
        out, path = [], "/v2/%s/tags/list?n=1000" % self.repo
        while path:
            status, r, body = self._request("GET", path)
            if status == 404:
                return out
            self._check(status, r, "listing tags")
            out += json.loads(body.decode()).get("tags") or []
            link = r.getheader("Link") or ""
            path = link[link.find("<") + 1:link.find(">")] if link.startswith("<") else None
        return out

    # --- named documents: a small OCI artifact per name, tagged <name> ---
    def _tag_digest(self, tag):
        status, r, _ = self._request("HEAD", "/v2/%s/manifests/%s" % (self.repo, tag),
                                     headers={"Accept": MANIFEST_MEDIA_TYPE})
        if status == 404:
            return None
        self._check(status, r, "HEAD %s" % tag)
        return r.getheader("Docker-Content-Digest")

    def put_doc(self, name, doc, exclusive=False):
        """The doc is the artifact's config; its "files" (blobs this repository holds) its layers, so
        pulling the tag (oras, a KServe modelcar, crane) gets the files. Returns the manifest digest.

        `exclusive`: an OCI registry has no compare-and-swap on tags. So: HEAD the tag (taken:
        Exists), PUT, wait REGISTRY_SETTLE_S, read the tag back; another digest there means another
        writer's PUT landed after ours: we lost (Exists), they won. Writers put unique documents (the
        caller adds a nonce), so two manifests never share a digest. This is not a strict guarantee:
        a writer that stalls for longer than REGISTRY_SETTLE_S between its HEAD and its PUT (a
        suspended laptop) can overwrite a winner that has already read its tag back. For people
        promoting by hand the gap between the two requests is milliseconds against half a second;
        where that is not enough, keep the model registry in an s3:// store (conditional PUT) or a
        directory (link(2))."""
        config = canonical(doc)
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        check_doc_name(name)
        if exclusive and self._tag_digest(name) is not None:
            raise Exists("%s already holds %s" % (self.describe(), name))
        if not self.has_blob(cdigest):
            self._upload(cdigest, len(config), config)
        layers = [{"mediaType": f.get("mediaType") or FILE_MEDIA_TYPE, "digest": f["digest"], "size": f["size"],
                   "annotations": {TITLE: f["path"]}} for f in doc.get("files") or []]
        if doc.get("layer"):  # a model version's layer (modellayer.py): referenced, so kept by GC
            layers.append(dict((k, doc["layer"][k]) for k in ("mediaType", "digest", "size")))
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                    "artifactType": doc.get("artifactType") or DOC_ARTIFACT_TYPE,
                    "config": {"mediaType": DOC_MEDIA_TYPE, "digest": cdigest, "size": len(config)},
                    "layers": layers}
        body = json.dumps(manifest, sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        status, r, payload = self._request("PUT", "/v2/%s/manifests/%s" % (self.repo, name), body=body,
                                           length=len(body), headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if status == 400 and b"BLOB_UNKNOWN" in payload:
            raise StoreError("%s lacks a file of %s: its blobs must be in %s first" % (self.describe(), name, self.repo))
        self._check(status, r, "tagging %s" % name)
        if exclusive:
            time.sleep(REGISTRY_SETTLE_S)
            if self._tag_digest(name) != digest:
                raise Exists("%s: another writer put %s at the same time and won" % (self.describe(), name))
        return digest

    def get_doc(self, name):
        status, r, body = self._request("GET", "/v2/%s/manifests/%s" % (self.repo, check_doc_name(name)),
                                        headers={"Accept": MANIFEST_MEDIA_TYPE})
        if status == 404:
            return None
        self._check(status, r, "GET %s" % name)
        manifest = json.loads(body.decode())
        status, r, config = self._request("GET", "/v2/%s/blobs/%s" % (self.repo, manifest["config"]["digest"]))
        self._check(status, r, "GET the document %s" % name)
        return json.loads(config.decode())

    def list_docs(self, prefix=""):
        return sorted(t for t in self._tags() if t.startswith(prefix) and not t.startswith("run-"))

    def mount_blob(self, digest, from_repo):
        """Cross-repository blob mount (same registry): True when the registry mounted it, False
        when it would not (then the caller copies the bytes)."""
        import urllib.parse
        q = urllib.parse.urlencode({"mount": digest, "from": from_repo})
        status, r, _ = self._request("POST", "/v2/%s/blobs/uploads/?%s" % (self.repo, q), length=0, body=b"")
        if status == 201:
            return True
        if status == 202:  # an upload session instead: cancel it
            loc = r.getheader("Location") or ""
            u = urllib.parse.urlsplit(loc)
            try:
                self._request("DELETE", (u.path or loc) + ("?" + u.query if u.query else ""))
            except OSError:
                pass
        return False


def backend(spec, creds=None):
    """The backend a spec (FAIRING_OUTPUTS, a JSON object) names; `creds` from the run's Secret."""
    creds = creds or {}
    kind = spec.get("kind")
    if kind == "dir":
        return DirBackend(spec["path"])
    if kind == "registry":
        return RegistryBackend(spec["url"], spec["repo"], creds.get("username"), creds.get("password"),
                               ca_file=creds.get("ca_file") or spec.get("ca_file"))
    if kind == "s3":
        try:
            from outputs_s3 import S3Backend  # shipped beside this file
        except ImportError:
            from .outputs_s3 import S3Backend  # imported as fairing.image_runtime.outputs
        return S3Backend(spec["endpoint"], spec["bucket"], spec.get("prefix", ""),
                         creds.get("access_key"), creds.get("secret_key"), region=spec.get("region") or "us-east-1",
                         ca_file=creds.get("ca_file") or spec.get("ca_file"), session_token=creds.get("session_token"))
    raise StoreError("unknown outputs store kind %r" % kind)


def backend_from_env(env, spec=None):
    """The store a pod was given: $FAIRING_OUTPUTS_STORE, with the run's Secret ($FAIRING_OUTPUTS_AUTH:
    auth.json, and ca.pem beside it) when there is one."""
    creds = {}
    auth = env.get("FAIRING_OUTPUTS_AUTH")
    if auth and os.path.isfile(auth):
        with open(auth) as f:
            creds = json.load(f)
        ca = os.path.join(os.path.dirname(auth), "ca.pem")
        if os.path.isfile(ca):
            creds.setdefault("ca_file", ca)
    return backend(spec if spec is not None else json.loads(env["FAIRING_OUTPUTS_STORE"]), creds)


def retrying(fn, what, attempts=5, delay=0.5):
    """fn() with retries on what can pass (5xx, 429, dropped connections), backing off."""
    for i in range(attempts):
        try:
            return fn()
        except (StoreError, OSError) as e:
            retry = getattr(e, "retryable", True) if isinstance(e, StoreError) else not isinstance(
                e, (FileNotFoundError, PermissionError, IsADirectoryError)) and getattr(e, "errno", None) != 28
            if not retry or i == attempts - 1:
                raise
            sys.stderr.write("fairing: %s: %s; retrying\n" % (what, e))
            time.sleep(delay * (2 ** i))


# --- saving ----------------------------------------------------------------------------------------

def collect(out_dir):
    """(files [(relpath, abspath)], refused [relpath]): regular files under out_dir; a symlink is
    followed only while it stays inside out_dir (one pointing outside is refused, not copied)."""
    files, refused = [], []
    real_root = os.path.realpath(out_dir)
    for root, dirs, names in os.walk(out_dir, followlinks=False):
        dirs.sort()
        for n in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, out_dir).replace(os.sep, "/")
            real = os.path.realpath(p)
            if os.path.islink(p) and not (real + os.sep).startswith(real_root + os.sep):
                refused.append(rel)
                continue
            if os.path.isfile(real) and not rel.endswith(".part"):
                files.append((rel, real))
    return files, refused


class Changed(StoreError):
    """A file's bytes did not match the digest taken just before: it is still being written."""


class Exists(StoreError):
    """put_doc(..., exclusive=True): the name is taken (someone else wrote it first, or won the race)."""


DirBackend.Exists = RegistryBackend.Exists = Exists  # what an exclusive put that lost raises


def save(out_dir, store, run_id, record, log=sys.stderr, attempts=5, delay=0.5, before_index=None):
    """Save out_dir's files and then the run's index; returns the index. Each file is hashed,
    uploaded if the store lacks it, and checked unchanged afterwards (a file still being written
    is hashed again, a few times, then refused with the run's failure). `before_index(entries)`
    runs once the files are in the store, before the index is written (a retrain registers its
    model there, and its outcome goes into the record the index holds)."""
    files, refused = collect(out_dir) if os.path.isdir(out_dir) else ([], [])
    for rel in refused:
        log.write("fairing: %s points outside the outputs dir: not saved\n" % rel)
    entries = []
    for rel, path in files:
        for tries in range(4):
            before = os.stat(path)
            digest = file_digest(path)
            try:
                if not retrying(lambda: store.has_blob(digest), "checking " + rel, attempts, delay):
                    retrying(lambda: store.put_blob(digest, before.st_size, path), "saving " + rel, attempts, delay)
            except Changed:
                pass
            else:
                after = os.stat(path)
                if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
                    break
            time.sleep(0.2 * (tries + 1))
        else:
            raise StoreError("%s kept changing while it was saved: stop writing it before the command ends" % rel)
        entries.append({"path": rel, "digest": digest, "size": before.st_size, "mediaType": media_type(rel)})
    if before_index is not None:
        before_index(entries)
    doc = {"record": record, "files": entries, "refused": refused}
    retrying(lambda: store.put_run(run_id, doc), "saving the run's index", attempts, delay)
    return doc


# --- the wrapper -----------------------------------------------------------------------------------

def is_rank_zero(env):
    """Multi-node runs save once, from rank 0 (PyTorch RANK / Trainer PET_NODE_RANK / TF_CONFIG's
    chief, or worker 0 when there is no chief)."""
    for key in ("PET_NODE_RANK", "RANK"):
        if env.get(key, "0").strip() not in ("", "0"):
            return False
    tf = env.get("TF_CONFIG")
    if tf:
        try:
            conf = json.loads(tf)
            task, cluster = conf.get("task") or {}, conf.get("cluster") or {}
            first = "chief" if "chief" in cluster else ("master" if "master" in cluster else "worker")
            return task.get("type") == first and int(task.get("index", 0)) == 0
        except (ValueError, TypeError):
            return True
    return True


def run_id_of(env):
    """The run id: given by fairing, or (a CronJob's runs, which no client starts) made from the
    Job's name, so every pod of one scheduled Job is the same run and each Job its own."""
    if env.get("FAIRING_RUN_ID"):
        return env["FAIRING_RUN_ID"]
    job = env.get("FAIRING_JOB_NAME") or socket.gethostname()
    return hashlib.sha256(job.encode()).hexdigest()[:12]


def _termination_message(text):
    try:
        with open("/dev/termination-log", "w") as f:
            f.write(text[:4000])
    except OSError:
        pass


def main(argv=None, env=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.stderr.write("fairing: outputs.py needs a command after --\n")
        return 2
    if argv[0] in ("python", "python3") or argv[0].startswith("python3."):
        argv[0] = sys.executable  # the interpreter running this shim (a local run's venv)
    out_dir = env.get("FAIRING_OUTPUT_DIR") or DEFAULT_DIR
    os.makedirs(out_dir, exist_ok=True)
    spec = env.get("FAIRING_OUTPUTS_STORE")
    mark = env.get(EXIT_MARK_ENV)
    attach = env.get(ATTACH_WAIT_ENV)
    if mark or attach is not None:
        # The client's nonce for the exit line (see say_exit) and its attach wait: not the command's.
        env = dict(env)
        for key in (EXIT_MARK_ENV, ATTACH_WAIT_ENV):
            env.pop(key, None)
            os.environ.pop(key, None)
    if attach is not None:
        wait_for_go(attach)
        # The container's stdin is the client's attach session, not the command's input.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    if not spec or not is_rank_zero(env):
        if not mark:
            os.execvp(argv[0], argv)  # nothing to keep here: the command runs as if unwrapped
        return say_exit(mark, run_plain(argv))
    code = keep(argv, env, out_dir, json.loads(spec))
    return say_exit(mark, code) if mark else code


def wait_for_go(seconds, fd=0):
    """A Job its client follows by attaching (FAIRING_ATTACH_WAIT=<seconds>; stdin: true): wait
    up to that long for the line "go" on stdin, the client's word that its attach session is
    open, so the session sees the command's output from its first line. The kubelet serves the
    log only after its next relist (up to 1 s) has seen the container running; an attach it
    serves at once. EOF (stdinOnce: the session ended), anything else, or the time running out:
    go on anyway (nobody attached: the run is late by the wait, which is why it is short)."""
    import select
    try:
        deadline = time.monotonic() + max(0.0, min(float(seconds), 60.0))
    except ValueError:
        return False
    got = b""
    while b"\n" not in got and len(got) < 64:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            ready = select.select([fd], [], [], left)[0]
            block = os.read(fd, 64) if ready else b""
        except (OSError, ValueError):
            return False
        if ready and not block:
            return False  # EOF
        got += block
    return got.split(b"\n", 1)[0].strip() == b"go"


def run_plain(argv):
    """The command as a child (not exec'd: the exit line comes after it), signals passed on as
    `keep` does. Its exit code; 128+N when signal N ended it, as a shell (and the kubelet) say."""
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda s, f: child.send_signal(s))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = child.wait()
    return 128 - code if code < 0 else code


def say_exit(mark, code):
    """The shim's very last act on a Job: one line, FAIRING_EXIT:<nonce>:<code>, flushed. The
    client reading the log ends its wait on it (code 0, a Job the pods' verdict applies to)
    without waiting ~0.5 s for the kubelet's next relist to report the exit. Nothing may be
    written or done after it: the command has ended and its outputs are saved (or failed, and the
    code says so). What could still differ from what the API will say: the container killed
    between this line and the process's exit (an OOM kill of this small shim, the Job's
    activeDeadlineSeconds, a node lost); the command itself succeeded and its outputs are kept,
    which is what the run's record says."""
    code = 128 - code if code < 0 else code
    try:
        sys.stderr.flush()
        sys.stdout.write("%s%s:%d\n" % (EXIT_PREFIX, mark, code))
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # no stdout: the client falls back to the API's verdict
    return code


def keep(argv, env, out_dir, spec):
    """Run the command and save $FAIRING_OUTPUT_DIR to the store `spec` names. Its exit code
    (EXIT_NOT_SAVED / EXIT_NOT_REGISTERED when the command succeeded and that failed)."""
    run_id = run_id_of(env)
    started, t0 = _now(), time.time()
    registering = bool(env.get(REGISTER_ENV))
    # A retrain's gate reads the command's metrics: its output is passed through, and read.
    child = subprocess.Popen(argv, stdout=subprocess.PIPE if registering else None,
                             stderr=subprocess.PIPE if registering else None)
    # The pod's SIGTERM (deletion, preemption) goes to the command; its outputs are still saved.
    # Ctrl-C reaches the command from the terminal itself (same process group): not sent twice.
    signal.signal(signal.SIGTERM, lambda s, f: child.send_signal(s))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    metrics, pumps = tee_metrics(child) if registering else ({}, [])
    code = child.wait()
    for t in pumps:  # the rest of its output; a grandchild still holding the pipes is not waited for
        t.join(10)
    record = {"id": run_id, "status": "Succeeded" if code == 0 else "Failed", "exit_code": code,
              "started": started, "finished": _now(), "seconds": round(time.time() - t0, 3),
              "host": socket.gethostname(), "image": env.get("FAIRING_IMAGE"), "command": argv[1:],
              "parent": env.get("FAIRING_RUN_PARENT"), "job": env.get("FAIRING_JOB_NAME"),
              "recorded_by": "pod"}
    try:
        store = backend_from_env(env, spec)
        outcome = {}
        finish = None
        if registering:
            if metrics:
                record["metrics"] = metrics
            finish = lambda entries: outcome.update(register(store, env, record, entries, code, out_dir))  # noqa: E731
        doc = save(out_dir, store, run_id, record, before_index=finish)
        n = len(doc["files"])
        size = sum(f["size"] for f in doc["files"])
        sys.stderr.write("fairing: outputs saved: %d file%s, %d bytes -> %s (run %s)\n"
                         % (n, "" if n == 1 else "s", size, store.describe(), run_id)
                         if n else "fairing: no files in the outputs dir; the run's record is saved (run %s)\n" % run_id)
    except Exception as e:  # noqa: BLE001 - any failure to save is the run's failure, said once
        msg = "outputs not saved: %s" % e
        sys.stderr.write("fairing: %s\n" % msg)
        _termination_message(msg)
        return code if code else EXIT_NOT_SAVED
    if outcome.get("error"):
        _termination_message(outcome["error"])
        return code if code else EXIT_NOT_REGISTERED
    return code


def tee_metrics(child):
    """Pass the child's stdout and stderr through as they come (bytes, unbuffered) while reading
    `name=value` metrics from their lines. Returns ({name: last value}, the two pump threads): the
    dict is complete once both have ended."""
    import threading
    try:
        from metriclines import parse_line  # shipped beside this file
    except ImportError:
        from .metriclines import parse_line
    metrics = {}
    lock = threading.Lock()

    def pump(src, dst):
        pending = b""
        fd = src.fileno()
        while True:
            block = os.read(fd, 65536)
            if not block:
                break
            dst.write(block)
            dst.flush()
            pending += block
            *lines, pending = pending.split(b"\n")
            for line in lines:
                found, _ = parse_line(line.decode("utf-8", "replace"))
                with lock:
                    metrics.update(found)
            pending = pending[-65536:]  # a progress bar with no newline: keep the tail only

    threads = [threading.Thread(target=pump, args=(child.stdout, sys.stdout.buffer), daemon=True),
               threading.Thread(target=pump, args=(child.stderr, sys.stderr.buffer), daemon=True)]
    for t in threads:
        t.start()
    return metrics, threads


def register(store, env, record, entries, code, out_dir=None):
    """A retrain's model: version N+1 of $FAIRING_REGISTER from the saved files, promoted when
    $FAIRING_PROMOTE_IF holds. Returns what the run's record keeps under "model" (why it was or
    was not promoted; an error said once)."""
    try:
        import modeldocs  # shipped beside this file
    except ImportError:
        from . import modeldocs
    name, gate = env.get(REGISTER_ENV), env.get(GATE_ENV) or None
    if code != 0:
        out = {"name": name, "registered": None, "reason": "not registered: the run failed (exit code %d)" % code}
    else:
        run = {"id": record["id"], "status": record["status"], "image": record.get("image"),
               "store": store.describe(), "metrics": record.get("metrics") or {}, "finished": record["finished"],
               "parent": record.get("parent"), "job": record.get("job")}
        run = dict((k, v) for k, v in run.items() if v not in (None, {}))
        try:
            out = modeldocs.register_and_gate(store, name, gate, entries, run, root=out_dir)
        except modeldocs.GateError as e:
            out = {"name": name, "registered": None, "error": "model not registered: %s (hint: %s)" % (e.message, e.hint)}
        except (StoreError, OSError, ValueError) as e:
            out = {"name": name, "registered": None, "error": "model not registered: %s" % e}
    if out.get("already"):
        done = "%s already registered from run %s" % (out["registered"], record["id"])
    else:
        done = "registered %s" % out["registered"] if out.get("registered") else ""
    said = out.get("error") or "; ".join(x for x in (done, out.get("reason") or "") if x)
    sys.stderr.write("fairing: %s\n" % said)
    record["model"] = out
    return out


if __name__ == "__main__":
    sys.exit(main())

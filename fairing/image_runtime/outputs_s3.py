"""The outputs store on S3 or any S3-compatible server (MinIO, SeaweedFS, Ceph RGW), for the pod side.

Content-addressed, so a put is idempotent and a half-written run is never visible:

    {prefix}/blobs/sha256/{hex}     one object per output file, named by its sha256
    {prefix}/runs/{run_id}.json     the run's document, written last by the caller (the commit marker)
    {prefix}/docs/{name}.json       small named documents (the model registry: fairing.models); an
                                    exclusive put is a conditional PUT (If-None-Match: *), which
                                    S3 (since 2024), SeaweedFS, MinIO and Ceph RGW honour

Stdlib only: this runs inside user images, where fairing is not installed (and on Python 3.8).
Each method makes ONE attempt; the caller retries an `S3Error` whose `.retryable` is true.
Requests are signed with AWS Signature V4 by hand, path-style (endpoint/bucket/key), which every
S3-compatible server accepts and which needs no DNS name per bucket.
"""
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import ssl
import urllib.parse
import xml.etree.ElementTree as ET

GIB = 1 << 30
CHUNK = 1 << 20          # what is held in memory at once while streaming, either way
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Error(Exception):
    """One line saying what is wrong and how to fix it; never a secret or a signature."""

    def __init__(self, message, retryable=False):
        super().__init__(message)
        self.retryable = retryable


class Exists(S3Error):
    """put_doc(..., exclusive=True): the name is taken (the conditional PUT was refused)."""


def _hmac(key, text):
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class S3Backend:
    Exists = Exists  # what an exclusive put that lost raises (modeldocs retries on it)
    # S3 refuses a single PUT over 5 GiB; parts may be 5 MiB..5 GiB and number at most 10000.
    multipart_threshold = 5 * GIB
    part_size = 64 << 20

    def __init__(self, endpoint, bucket, prefix="", access_key=None, secret_key=None, region="us-east-1",
                 ca_file=None, session_token=None, timeout=60):
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("S3 endpoint %r is not an http(s) URL: give e.g. https://s3.amazonaws.com" % endpoint)
        self.endpoint = "%s://%s" % (url.scheme, url.netloc)
        self._tls = url.scheme == "https"
        self._host = url.netloc          # the Host header, port included when the URL has one
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.access_key = access_key
        self._secret = secret_key
        self.region = region
        self.session_token = session_token
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=ca_file) if self._tls else None

    def __repr__(self):
        return "S3Backend(%s at %s)" % (self.describe(), self.endpoint)

    def describe(self):
        return "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://" + self.bucket

    # --- the store --------------------------------------------------------------------------------
    def has_blob(self, digest):
        # A missing bucket looks like a missing blob here (HEAD answers carry no error code); the
        # put that follows says which it is.
        status, _, _ = self._call("HEAD", self._blob_key(digest), what="checking blob " + digest, ok=(200, 404))
        return status == 200

    def put_blob(self, digest, size, path):
        key = self._blob_key(digest)
        if os.path.getsize(path) != size:
            raise S3Error("%s is %d bytes, not the %d its digest was taken over: it changed while being saved"
                          % (path, os.path.getsize(path), size))
        if size > self.multipart_threshold:
            return self._put_multipart(key, digest, size, path)
        with open(path, "rb") as f:
            # The digest's hex IS the body's sha256: the server checks it, and no second read is needed.
            self._call("PUT", key, body=f, size=size, payload_hash=digest[7:], what="writing blob " + digest)

    def get_blob(self, digest, dest_path):
        key = self._blob_key(digest)
        part = dest_path + ".part"
        sha, missing = hashlib.sha256(), [0]
        with open(part, "wb") as out:
            def sink(resp):
                for chunk in iter(lambda: resp.read(CHUNK), b""):
                    sha.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as e:   # a local failure, not the network's: no retry will help
                        raise S3Error("cannot write %s (%s): free disk space or fix its permissions"
                                      % (part, e.strerror or e)) from None
                # http.client ends a body cut short quietly; .length is what Content-Length still promised.
                missing[0] = resp.length or 0
            try:
                self._call("GET", key, what="reading blob " + digest, sink=sink)
            except BaseException:
                out.close()
                os.unlink(part)
                raise
        if missing[0]:
            os.unlink(part)
            raise S3Error("the connection to %s dropped while reading blob %s (%d bytes short): retry"
                          % (self.endpoint, digest, missing[0]), retryable=True)
        if sha.hexdigest() != digest[7:]:
            os.unlink(part)
            raise S3Error("blob %s in %s has sha256:%s: the object was changed or damaged in the store; "
                          "save the run again" % (digest, self.describe(), sha.hexdigest()))
        os.replace(part, dest_path)

    def put_run(self, run_id, doc):
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        self._call("PUT", self._run_key(run_id), body=body, size=len(body), what="writing run " + run_id,
                   payload_hash=hashlib.sha256(body).hexdigest(), content_type="application/json")

    def get_run(self, run_id):
        what = "reading run " + run_id
        status, _, body = self._call("GET", self._run_key(run_id), what=what, ok=(200, 404))
        if status == 404 and _code(body) == "NoSuchBucket":
            raise self._error(404, body, what)
        return json.loads(body.decode("utf-8")) if status == 200 else None

    def list_runs(self, page_size=1000):
        runs_prefix = self._key("runs", "")
        ids, token = [], None
        while True:
            query = {"list-type": "2", "prefix": runs_prefix, "max-keys": str(page_size)}
            if token:
                query["continuation-token"] = token
            _, _, body = self._call("GET", "", query=query, what="listing runs")
            root = ET.fromstring(body)
            # Elements carry S3's XML namespace (or none, on some servers): match on the local name.
            for el in root.iter():
                if el.tag.rsplit("}", 1)[-1] == "Key" and el.text and el.text.endswith(".json"):
                    ids.append(el.text[len(runs_prefix):-len(".json")])
            token = _child(root, "NextContinuationToken")
            if _child(root, "IsTruncated") != "true" or not token:
                return ids

    # --- named documents ----------------------------------------------------------------------
    def put_doc(self, name, doc, exclusive=False):
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
        what = "writing document " + name
        # If-None-Match: * makes the PUT create-only: of two writers one gets 200, the other 412
        # (or 409 while the first one's write is still in flight). Atomic on the server.
        status, _, data = self._call("PUT", self._doc_key(name), body=body, size=len(body), what=what,
                                     payload_hash=hashlib.sha256(body).hexdigest(), content_type="application/json",
                                     ok=(200, 204, 409, 412), headers={"If-None-Match": "*"} if exclusive else None)
        if status in (409, 412):
            raise Exists("%s already holds %s" % (self.describe(), name))
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_doc(self, name):
        what = "reading document " + name
        status, _, body = self._call("GET", self._doc_key(name), what=what, ok=(200, 404))
        if status == 404 and _code(body) == "NoSuchBucket":
            raise self._error(404, body, what)
        return json.loads(body.decode("utf-8")) if status == 200 else None

    def list_docs(self, prefix=""):
        # The prefix goes to the server: only the matching documents are listed.
        return [prefix + k[:-len(".json")] for k in self._list_keys(self._key("docs", prefix)) if k.endswith(".json")]

    def _list_keys(self, key_prefix, page_size=1000):
        keys, token = [], None
        while True:
            query = {"list-type": "2", "prefix": key_prefix, "max-keys": str(page_size)}
            if token:
                query["continuation-token"] = token
            _, _, body = self._call("GET", "", query=query, what="listing " + key_prefix)
            root = ET.fromstring(body)
            for el in root.iter():
                if el.tag.rsplit("}", 1)[-1] == "Key" and el.text:
                    keys.append(el.text[len(key_prefix):])
            token = _child(root, "NextContinuationToken")
            if _child(root, "IsTruncated") != "true" or not token:
                return sorted(keys)

    def _doc_key(self, name):
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", name or ""):
            raise ValueError("document name %r is not [A-Za-z0-9_][A-Za-z0-9._-]{0,127}" % (name,))
        return self._key("docs", name + ".json")

    def create_bucket(self):
        """Make the bucket (fine if these credentials own it already); for setup, not for runs."""
        body = b""
        if self.region != "us-east-1":   # anywhere else S3 wants the region named in the body
            body = ("<CreateBucketConfiguration><LocationConstraint>%s</LocationConstraint>"
                    "</CreateBucketConfiguration>" % _xml_escape(self.region)).encode("utf-8")
        what = "creating bucket " + self.bucket
        status, _, data = self._call("PUT", "", body=body, size=len(body), what=what, ok=(200, 409),
                                     payload_hash=hashlib.sha256(body).hexdigest())
        if status == 409 and _code(data) != "BucketAlreadyOwnedByYou":
            raise self._error(status, data, what)

    # --- keys -----------------------------------------------------------------------------------
    def _key(self, *parts):
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _blob_key(self, digest):
        m = _DIGEST.match(digest or "")
        if not m:
            raise ValueError("digest %r is not 'sha256:' followed by 64 lowercase hex digits" % (digest,))
        return self._key("blobs", "sha256", m.group(1))

    def _run_key(self, run_id):
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise ValueError("run id %r cannot be an object name: no '/', not empty" % (run_id,))
        return self._key("runs", run_id + ".json")

    # --- multipart (files over 5 GiB) -------------------------------------------------------------
    def _put_multipart(self, key, digest, size, path):
        what = "writing blob " + digest
        part_size = max(self.part_size, -(-size // 10000))
        _, _, body = self._call("POST", key, query={"uploads": ""}, what=what)
        upload_id = _child(ET.fromstring(body), "UploadId")
        try:
            etags = []
            with open(path, "rb") as f:
                for number, offset in enumerate(range(0, size, part_size), 1):
                    n = min(part_size, size - offset)
                    # Signing a part needs its sha256 before sending: one read to hash, one to send.
                    sha = hashlib.sha256()
                    f.seek(offset)
                    for chunk in iter(lambda: f.read(min(CHUNK, offset + n - f.tell())), b""):
                        sha.update(chunk)
                    f.seek(offset)
                    _, headers, _ = self._call("PUT", key, query={"partNumber": str(number), "uploadId": upload_id},
                                               body=_Slice(f, n), size=n, payload_hash=sha.hexdigest(), what=what)
                    etags.append(headers.get("etag", ""))
            xml = "".join("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (i, _xml_escape(e))
                          for i, e in enumerate(etags, 1))
            done = ("<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % xml).encode("utf-8")
            _, _, body = self._call("POST", key, query={"uploadId": upload_id}, body=done, size=len(done),
                                    payload_hash=hashlib.sha256(done).hexdigest(), what=what)
            if _code(body):   # S3 may fail a completion inside a 200 response: an Error document
                raise self._error(500, body, what)
        except BaseException:
            try:   # best effort: parts left behind cost storage until a lifecycle rule removes them
                self._call("DELETE", key, query={"uploadId": upload_id}, what=what, ok=(200, 204, 404))
            except (S3Error, OSError):
                pass
            raise

    # --- one signed request -----------------------------------------------------------------------
    def _call(self, method, key, query=None, body=None, size=0, payload_hash=_EMPTY_SHA256, what="",
              ok=(200, 204), sink=None, content_type=None, headers=None):
        """Send one request; returns (status, headers, body) for an `ok` status, else raises S3Error.
        A 200 GET with `sink` hands the response to it instead of reading the body into memory."""
        path = "/" + urllib.parse.quote(self.bucket + ("/" + key if key else ""), safe="/~")
        qs = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                      for k, v in sorted((query or {}).items()))
        extra = headers
        headers = self._sign(method, path, qs, payload_hash)
        headers.update(extra or {})   # unsigned (If-None-Match): SigV4 signs only the headers it names
        if body is not None:
            headers["Content-Length"] = str(size)
            headers["Content-Type"] = content_type or "application/octet-stream"
        cls = http.client.HTTPSConnection if self._tls else http.client.HTTPConnection
        kwargs = {"context": self._ssl} if self._tls else {}
        conn = cls(self._host, timeout=self.timeout, blocksize=CHUNK, **kwargs)
        try:
            try:
                conn.request(method, path + ("?" + qs if qs else ""), body=body, headers=headers)
                resp = conn.getresponse()
                if resp.status == 200 and sink is not None:
                    sink(resp)
                    return resp.status, {}, b""
                data = resp.read()
            except ssl.SSLCertVerificationError as e:
                raise S3Error("TLS verification of %s failed (%s): pass the server's CA as ca_file"
                              % (self.endpoint, e.verify_message)) from None
            except (OSError, http.client.HTTPException) as e:
                # Refused, reset, timed out or cut short: worth another attempt.
                raise S3Error("no answer from %s while %s (%s: %s): retry, or check the endpoint"
                              % (self.endpoint, what, type(e).__name__, _one_line(str(e))), retryable=True) from None
        finally:
            conn.close()
        if resp.status not in ok:
            raise self._error(resp.status, data, what)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def _sign(self, method, path, qs, payload_hash):
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        if self.session_token:
            headers["x-amz-security-token"] = self.session_token
        if not self.access_key:
            return headers   # anonymous: a public bucket
        names = sorted(headers)
        canonical = "\n".join([method, path, qs, "".join("%s:%s\n" % (n, headers[n].strip()) for n in names),
                               ";".join(names), payload_hash])
        scope = "%s/%s/s3/aws4_request" % (day, self.region)
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
        key = ("AWS4" + (self._secret or "")).encode("utf-8")
        for part in (day, self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
            self.access_key, scope, ";".join(names), signature)
        return headers

    def _error(self, status, body, what):
        """The S3 error response turned into one line with its fix."""
        code, message = _code(body), _code(body, "Message")
        where = self.describe()
        tag = "%d %s" % (status, code) if code else str(status)
        if code == "NoSuchBucket":
            text, retry = "bucket %s does not exist at %s: create it" % (self.bucket, self.endpoint), False
        elif code == "NoSuchKey" or status == 404:
            text, retry = "%s: not found in %s (%s)" % (what, where, tag), False
        elif code == "InvalidAccessKeyId":
            text, retry = "S3 rejected the credentials for %s (%s): check the access key" % (where, tag), False
        elif code == "SignatureDoesNotMatch":
            text, retry = "S3 rejected the credentials for %s (%s): check the secret key" % (where, tag), False
        elif code in ("XAmzContentSHA256Mismatch", "BadDigest"):
            text, retry = "S3 refused %s (%s): the file's bytes are not its digest; it changed after " \
                          "the digest was taken" % (what, tag), False
        elif code in ("RequestTimeTooSkewed", "RequestExpired"):
            text, retry = "S3 refused %s (%s): this machine's clock is off; fix the time" % (what, tag), False
        elif status == 403:
            text, retry = ("access key %s may not do this on %s while %s (%s): grant it access to the bucket"
                           % (self.access_key, where, what, tag)), False
        elif status == 429 or status >= 500 or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
            text, retry = "S3 at %s is busy or failing while %s (%s): retry later" % (self.endpoint, what, tag), True
        else:
            text, retry = "S3 refused %s on %s (%s%s)" % (what, where, tag, ": " + message if message else ""), False
        return S3Error(self._scrub(_one_line(text)), retryable=retry)

    def _scrub(self, text):
        # Defence in depth: a server's message is echoed in some branches; no secret goes out in it.
        for secret in (self._secret, self.session_token):
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"Signature=[0-9a-f]+", "Signature=***", text)


class _Slice:
    """`n` bytes of an open file from its current position, read in pieces (one multipart part)."""

    def __init__(self, f, n):
        self.f, self.left = f, n

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data


def _child(root, name):
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == name:
            return el.text
    return None


def _code(body, name="Code"):
    """An element of an S3 error document; "" when there is none (HEAD responses have no body,
    proxies answer in HTML)."""
    try:
        return _child(ET.fromstring(body), name) or ""
    except ET.ParseError:
        return ""


def _one_line(text):
    return " ".join(text.split())


def _xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")

# A model version's files as one image layer: a deterministic uncompressed tar with the files under
# models/ (KServe's modelcar dir, and FAIRING_MODEL_DIR of a serving image that mounts it). Written
# once when a version is registered into a registry store, beside the files' raw blobs; a serving
# image or a modelcar of that version then gets it by cross-repository mount, never by upload, and
# the same version's layer is the same bytes in every image (uncompressed: its digest is its diff_id).
#
# Runs inside the image too (a retrain registers in its pod): the stdlib only, Python 3.8 syntax.
# Streamed in two passes over the files on disk (hash, then upload): nothing big is held in memory.
import hashlib

# ModelPack's (CNCF model-spec) weight layer, an uncompressed tar: the version document names the
# layer with it; an image manifest lists the same blob as an OCI (or Docker) uncompressed layer.
LAYER_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.tar"
MODELS_DIR = "models"  # inside the tar: /models in an image
MTIME = 0  # one fixed time, owner and mode per kind: the same files give the same bytes anywhere
FILE_MODE, DIR_MODE = 0o644, 0o755
BLOCK = 512
READ = 1 << 20


def _check(rel):
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or ".." in parts or "" in parts:
        raise ValueError("a model file has an unsafe path %r" % rel)
    return parts


def entries(files, root):
    """[(name in the tar, local path or None for a dir, size)], sorted, every parent dir explicit.
    `files`: [{path, size, ...}] relative to `root` (a dir holding them)."""
    import os

    out, dirs = {}, {MODELS_DIR}
    for f in files:
        parts = _check(f["path"])
        for i in range(1, len(parts)):
            dirs.add("/".join([MODELS_DIR] + parts[:i]))
        out["/".join([MODELS_DIR] + parts)] = (os.path.join(root, *parts), int(f["size"]))
    for d in dirs:
        out[d] = (None, 0)
    return [(name, out[name][0], out[name][1]) for name in sorted(out)]


def _field(value, width):
    return ("%0*o" % (width - 1, value)).encode("ascii") + b"\0"


def _ustar(name, size, typeflag, mode):
    """One 512-byte ustar header, written by hand: tarfile's differs between Python versions
    (3.8 fills devmajor/devminor, 3.10+ leaves them empty), and the bytes must not."""
    head = (name.ljust(100, b"\0") + _field(mode, 8) + _field(0, 8) + _field(0, 8) + _field(size, 12)
            + _field(MTIME, 12) + b" " * 8 + typeflag + b"\0" * 100 + b"ustar\x0000" + b"\0" * 32 + b"\0" * 32
            + _field(0, 8) + _field(0, 8) + b"\0" * 155).ljust(BLOCK, b"\0")
    return head[:148] + ("%06o" % sum(head)).encode("ascii") + b"\0 " + head[156:]


def _pax(records):
    """A PAX extended header ('x') carrying what ustar cannot: a long or non-ASCII path, a size of
    8 GiB or more."""
    body = b""
    for key, value in records:
        rec = b" " + key + b"=" + value + b"\n"
        n = len(rec) + 1
        while len(str(n).encode()) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    pad = b"\0" * ((BLOCK - len(body) % BLOCK) % BLOCK)
    return _ustar(b"././@PaxHeader", len(body), b"x", FILE_MODE) + body + pad


def _header(name, size, is_dir):
    raw = name.encode("utf-8", "surrogateescape")
    records = []
    if len(raw) > 100 or any(b > 127 for b in raw):
        records.append((b"path", raw))
        raw = raw[:100].decode("ascii", "ignore").encode("ascii")  # what a ustar-only reader sees
    if size >= 8 ** 11:
        records.append((b"size", str(size).encode()))
    header = _ustar(raw, 0 if (is_dir or size >= 8 ** 11) else size, b"5" if is_dir else b"0",
                    DIR_MODE if is_dir else FILE_MODE)
    return (_pax(records) if records else b"") + header


def chunks(files, root):
    """The layer's bytes, in pieces (a generator: what an upload sends, what a digest reads)."""
    for name, path, size in entries(files, root):
        yield _header(name, size, path is None)
        if path is None:
            continue
        left = size
        with open(path, "rb") as f:
            while left:
                block = f.read(min(READ, left))
                if not block:
                    raise ValueError("model file %s is shorter than its recorded size" % name)
                left -= len(block)
                yield block
        if size % BLOCK:
            yield b"\0" * (BLOCK - size % BLOCK)
    yield b"\0" * (2 * BLOCK)  # the end of the archive


def describe(files, root):
    """{digest, size, mediaType} of the layer (the first pass: reads every file once)."""
    h, n = hashlib.sha256(), 0
    for block in chunks(files, root):
        h.update(block)
        n += len(block)
    return {"digest": "sha256:" + h.hexdigest(), "size": n, "mediaType": LAYER_MEDIA_TYPE}


def push(backend, files, root):
    """The layer of `files` (in `root`) into a registry store's repository unless it is there
    already; returns its descriptor for the version document."""
    desc = describe(files, root)
    if not backend.has_blob(desc["digest"]):
        backend.put_blob_stream(desc["digest"], desc["size"], lambda: chunks(files, root))
    return desc


def wanted(backend):
    """A layer is written only into a registry: it is there for images to mount."""
    return callable(getattr(backend, "put_blob_stream", None))

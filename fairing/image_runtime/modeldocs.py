# The model registry's documents and the promotion gate, as the pod and fairing's client both use
# them: a scheduled retrain registers and promotes inside its pod (no client may be waiting), a
# model server following an alias reads the alias from its pod, and fairing.models.registry (the
# client) writes the same documents through these functions. Runs inside the image: the stdlib
# only, Python 3.8 syntax. `backend` is any outputs-store backend (outputs.py, outputs_s3.py):
# list_docs / get_doc / put_doc(exclusive=True) / get_blob.
#
#   model.NAME.vN        version N (written once, exclusively)
#   model.NAME.ALIAS.K   the K-th move of ALIAS (written once, exclusively); the highest K is where
#                        ALIAS points
#   model.NAME.ALIAS     a copy of the version ALIAS points to, for tools that read one tag
import datetime
import getpass
import hashlib
import json
import os
import re
import socket
import uuid

VERSION_RE = re.compile(r"^v([0-9]+)$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VERSION_TYPE = "application/vnd.fairing.model.version.v1"
ALIAS_TYPE = "application/vnd.fairing.model.alias.v1"
DEFAULT_ALIAS = "champion"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def who():
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (a container): the host is enough
        user = "?"
    return "%s@%s" % (user, socket.gethostname())


def digest_of(doc):
    """A version document's digest (what an alias move names): of its canonical JSON (sorted keys,
    no spaces, as the stores write it), without the fields readers add."""
    body = json.dumps(dict((k, v) for k, v in doc.items() if k not in ("ref", "digest", "already")),
                      sort_keys=True, separators=(",", ":")).encode("utf-8")
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Raced(Exception):
    """An alias moved between reading it and moving it: judged against a champion that is gone."""


def lost_race(backend):
    """The exceptions that mean another writer won: the backend's Exists, and Raced."""
    return (getattr(backend, "Exists", Raced), Raced)


# --- reading --------------------------------------------------------------------------------------

def versions(backend, name):
    out = []
    prefix = "model.%s." % name
    for n in backend.list_docs(prefix):
        m = VERSION_RE.match(n[len(prefix):])
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def alias_seqs(backend, name):
    """{alias: K of its latest move}."""
    latest = {}
    prefix = "model.%s." % name
    for n in backend.list_docs(prefix):
        parts = n[len(prefix):].split(".")
        if len(parts) == 2 and ALIAS_RE.match(parts[0]) and parts[1].isdigit():
            latest[parts[0]] = max(latest.get(parts[0], 0), int(parts[1]))
    return latest


def alias_move(backend, name, alias):
    """(K, the latest move document) of NAME@ALIAS, or (0, None) when it was never set."""
    k = alias_seqs(backend, name).get(alias, 0)
    return (k, backend.get_doc("model.%s.%s.%d" % (name, alias, k))) if k else (0, None)


def version(backend, name, n):
    return backend.get_doc("model.%s.v%d" % (name, n))


def files_digest(files):
    """What a version holds, as one digest: its files' paths and contents (order does not matter)."""
    body = json.dumps(sorted([f["path"], f["digest"]] for f in files), separators=(",", ":")).encode("utf-8")
    return "sha256:" + hashlib.sha256(body).hexdigest()


def registered_from(backend, name, run_id, files):
    """The version of `name` already made from run `run_id` with these `files`, or None: registering
    is idempotent per (run, files), so a Job's retry after its first pod registered but failed to
    write its index does not make a second version of the same run. Newest first (a retry finds
    its version at once); a run registered nowhere costs one read per version."""
    want = files_digest(files)
    for n in reversed(versions(backend, name)):
        doc = version(backend, name, n)
        if doc and (doc.get("run") or {}).get("id") == run_id and files_digest(doc.get("files") or []) == want:
            return doc
    return None


def resolve_alias(backend, name, alias):
    """(move, version document) NAME@ALIAS points at, or (None, None). A version whose digest is not
    the one the move names was changed by hand: ValueError."""
    _, move = alias_move(backend, name, alias)
    if move is None:
        return None, None
    doc = version(backend, name, move["version"])
    if doc is None or digest_of(doc) != move["digest"]:
        raise ValueError("%s@%s names version %s by digest %s, but that version now reads differently"
                         % (name, alias, move["version"], move["digest"]))
    return move, doc


# --- writing --------------------------------------------------------------------------------------

def new_version(name, files, run, path=None, layer=None):
    """A version document (without its number: put_version gives it one). `layer`: the files as
    one image layer ({digest, size, mediaType}, modellayer.py), on a registry store."""
    doc = {"artifactType": VERSION_TYPE, "kind": "model-version", "model": name,
           "files": [dict((k, f[k]) for k in ("path", "digest", "size", "mediaType") if k in f) for f in files],
           "path": path, "run": run, "created": now(), "by": who(), "nonce": uuid.uuid4().hex}
    if layer:
        doc["layer"] = layer
    return doc


def write_layer(backend, files, root):
    """The files (in the local dir `root`) as one image layer in a registry store (modellayer.py),
    or None for another store."""
    try:
        import modellayer  # shipped beside this file
    except ImportError:
        from . import modellayer
    return modellayer.push(backend, files, root) if modellayer.wanted(backend) else None


def put_version(backend, name, doc):
    """Write `doc` as version N+1 (N: the highest now) with an exclusive put; returns the document
    with its number. Exists (the backend's) when someone else took N+1 at the same moment."""
    have = versions(backend, name)
    doc = dict(doc, version=(have[-1] if have else 0) + 1)
    backend.put_doc("model.%s.v%d" % (name, doc["version"]), doc, exclusive=True)
    return doc


def move_alias(backend, name, alias, doc, expect_seq=None):
    """Point NAME@ALIAS at the version `doc`; returns the move document with "changed" (False when
    ALIAS already points there). `expect_seq`: the K the caller decided on (a gate compared against
    the champion of move K); another move since then is a lost race. Exists when another writer
    took K+1 at the same moment; Raced when it was moved since `expect_seq`."""
    digest = digest_of(doc)
    k, previous = alias_move(backend, name, alias)
    if expect_seq is not None and k != expect_seq:
        raise Raced("%s@%s was moved (move %d) since it was read (move %d)" % (name, alias, k, expect_seq))
    if previous is not None and previous.get("digest") == digest:
        return dict(previous, changed=False)
    move = {"artifactType": ALIAS_TYPE, "kind": "model-alias", "model": name, "alias": alias,
            "version": doc["version"], "digest": digest, "previous": previous.get("version") if previous else None,
            "seq": k + 1, "moved": now(), "by": who(), "nonce": uuid.uuid4().hex}
    backend.put_doc("model.%s.%s.%d" % (name, alias, k + 1), move, exclusive=True)
    # The pointer tag, for tools that read one name (oras, a modelcar): the version itself.
    # Advisory: readers of this registry resolve through the moves above.
    backend.put_doc("model.%s.%s" % (name, alias), doc)
    return dict(move, changed=True)


def fetch_files(backend, doc, dest):
    """The version's files into `dest` (made), each checked by digest (get_blob does). Refuses a
    path that would leave `dest` (a hand-written document)."""
    for f in doc.get("files") or []:
        rel = f["path"]
        parts = rel.replace("\\", "/").split("/")
        if rel.startswith("/") or ".." in parts:
            raise ValueError("version %s names an unsafe path %r" % (doc.get("version"), rel))
        out = os.path.join(dest, *parts)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        backend.get_blob(f["digest"], out)
    return dest


# --- the promotion gate ---------------------------------------------------------------------------
# METRIC OP champion | METRIC OP NUMBER, joined by `and`. OP: >= > <= < ==. The word on the right
# that is not a number is the alias compared against, and the alias that moves (one per gate);
# a gate of numbers only moves `champion`.

OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
       "<": lambda a, b: a < b, "==": lambda a, b: a == b}
NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}
GATE_HINT = 'write METRIC OP champion or METRIC OP NUMBER (OP: >=, >, <=, <, ==), joined by "and", e.g. "accuracy >= champion and loss < 0.5"'
_TOKEN = re.compile(r"\s*([<>=!]+|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])|[A-Za-z_][\w.\-/]*|\S+)")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_METRIC = re.compile(r"^[A-Za-z_][\w.\-/]*$")


class GateError(ValueError):
    """A gate that does not parse, or that names a metric the run does not have: one line + hint."""

    def __init__(self, message, hint=GATE_HINT):
        ValueError.__init__(self, message)
        self.message, self.hint = message, hint


def parse_gate(text):
    """[(metric, op, ("alias", NAME) | ("number", VALUE))] for a gate; GateError when it does not parse."""
    if not isinstance(text, str) or not text.strip():
        raise GateError("the promotion gate is empty")
    tokens = _TOKEN.findall(text.strip())
    clauses, i = [], 0
    while True:
        part = tokens[i:i + 3]
        if len(part) < 3:
            raise GateError("the promotion gate %r ends too early (after %r)" % (text, " ".join(tokens[i:]) or tokens[-1]))
        metric, op, rhs = part
        if not _METRIC.match(metric) or metric.lower() == "and":
            raise GateError("the promotion gate %r: %r is not a metric name" % (text, metric))
        if op not in OPS:
            raise GateError("the promotion gate %r: %r is not a comparison" % (text, op))
        if _NUMBER.match(rhs):
            value = ("number", float(rhs))
        elif ALIAS_RE.match(rhs) and not VERSION_RE.match(rhs) and rhs != "and":
            value = ("alias", rhs)
        else:
            raise GateError("the promotion gate %r: %r is neither a number nor an alias like champion" % (text, rhs))
        clauses.append((metric, op, value))
        i += 3
        if i == len(tokens):
            break
        if tokens[i].lower() != "and":
            raise GateError("the promotion gate %r: expected `and` before %r" % (text, tokens[i]))
        i += 1
    aliases = sorted(set(v[1] for _, _, v in clauses if v[0] == "alias"))
    if len(aliases) > 1:
        raise GateError("the promotion gate %r compares against %s: one alias per gate" % (text, " and ".join(aliases)),
                        hint="compare against the alias that moves, e.g. accuracy >= champion")
    return clauses


def gate_alias(clauses):
    for _, _, (kind, v) in clauses:
        if kind == "alias":
            return v
    return DEFAULT_ALIAS


def check_metrics(clauses, metrics):
    """GateError naming the first metric of the gate the run did not report."""
    for metric, _, _ in clauses:
        if metric not in metrics:
            have = ", ".join(sorted(metrics)[:8]) or "none"
            raise GateError("the promotion gate needs metric %r, which the run did not report (it reported: %s)"
                            % (metric, have),
                            hint="print %s=VALUE from the run (fairing.report(%s=...)), or change --promote-if"
                                 % (metric, metric))


def _num(v):
    return ("%.6g" % v) if isinstance(v, float) else str(v)


def evaluate(clauses, metrics, champion=None):
    """(promote?, reason) for a run's `metrics` against the champion version document (None: no
    champion yet, the first version is promoted). Call check_metrics first."""
    said = []
    for metric, op, (kind, value) in clauses:
        mine = float(metrics[metric])
        if kind == "number":
            if not OPS[op](mine, value):
                return False, "not promoted: %s %s %s %s" % (metric, _num(mine), NEGATED[op], _num(value))
            said.append("%s %s %s %s" % (metric, _num(mine), op, _num(value)))
            continue
        if champion is None:
            continue
        ref = "%s:%s" % (champion.get("model"), champion.get("version"))
        theirs = ((champion.get("run") or {}).get("metrics") or {}).get(metric)
        if theirs is None:
            return False, ("not promoted: %s %s has no metric %s to compare with; promote by hand "
                           "(fair models promote)" % (value, ref, metric))
        if not OPS[op](mine, float(theirs)):
            return False, "not promoted: %s %s %s %s %s (%s)" % (metric, _num(mine), NEGATED[op], value, _num(float(theirs)), ref)
        said.append("%s %s %s %s %s (%s)" % (metric, _num(mine), op, value, _num(float(theirs)), ref))
    if champion is None and any(v[0] == "alias" for _, _, v in clauses):
        said.insert(0, "no %s yet: the first version is promoted" % gate_alias(clauses))
    return True, "promoted: " + ", ".join(said)


# --- a retrain's pod: register, then promote when the gate holds -----------------------------------

def _retrying_race(backend, fn, attempts=3):
    """fn() again when another writer won an exclusive put: re-read, re-decide (a version number
    is only the next free one; a gate is judged against the champion that is there now)."""
    for i in range(attempts):
        try:
            return fn()
        except lost_race(backend):
            if i == attempts - 1:
                raise


def register_and_gate(backend, name, gate_text, files, run, root=None):
    """Version N+1 of `name` from a finished run's saved `files`, promoted to the gate's alias when
    the gate holds (no gate: registered only). `run`: what the version knows of its run (its
    "metrics" are what the gate reads). Returns the outcome for the run's record. GateError before
    anything is written when the gate names a metric the run did not report. `root`: the local dir
    holding `files` (the outputs dir): on a registry store the version gets its image layer."""
    clauses = parse_gate(gate_text) if gate_text else None
    metrics = run.get("metrics") or {}
    if clauses:
        check_metrics(clauses, metrics)
    if not files:
        raise GateError("the run kept no files to make a model of",
                        hint="write the model to $FAIRING_OUTPUT_DIR (fairing.outputs_dir()) in the run")
    layer = []  # written once, and only when the run is not a version yet

    def put():
        had = registered_from(backend, name, run.get("id"), files)
        if had:
            return had, True
        if not layer:
            layer.append(write_layer(backend, files, root) if root else None)
        return put_version(backend, name, new_version(name, files, run, layer=layer[0])), False

    doc, already = _retrying_race(backend, put)
    out = {"name": name, "version": doc["version"], "registered": "%s:%d" % (name, doc["version"])}
    if already:
        out["already"] = True  # this run's files were registered before (a retried pod): not again
    if not clauses:
        return out
    alias = gate_alias(clauses)
    out.update(alias=alias, gate=gate_text)

    def decide():
        k, move = alias_move(backend, name, alias)
        if move is not None and move.get("digest") == digest_of(doc):
            return True, "already %s" % alias  # promoted by the attempt that registered it
        champion = version(backend, name, move["version"]) if move else None
        ok, reason = evaluate(clauses, metrics, champion)
        if ok:
            move_alias(backend, name, alias, doc, expect_seq=k)
        return ok, reason

    out["promoted"], out["reason"] = _retrying_race(backend, decide)
    return out

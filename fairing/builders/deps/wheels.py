"""The wheel cache and the wheel installer.

Wheels are downloaded (in parallel, checked against the resolver's sha256) into `wheels/`, where
every later build, in any repository, finds them again: the file name carries the project,
version, Python and platform tags, and the sha256 pins the bytes. The installed form of a wheel is
cached as its layer (layers.py, keyed by the wheels' sha256s), so a wheel is installed once.

Installing a wheel is unpacking it (the wheel spec, PEP 427) plus what pip adds: `.data/`
directories moved into place, console scripts written from entry_points.txt, INSTALLER and
RECORD. `installed()` does it straight into layer entries: each file is read from the zip while
the tar is written, never copied to disk first. Doing it here rather than with pip makes the files
depend only on the wheel, never on the installer's version or the host's interpreter path, so the
layers are the same on any machine."""
from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import posixpath
import threading
import time
import zipfile
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ...errors import BuildError
from ...oci.cache import Cache, touch
from ...oci.layer import Member, Source
from . import index, zipread
from .index import Access
from .pip import UNTRUSTED_HINT
from .resolve import Wheel

INSTALLER = "fairing-2"  # bump when the unpacked files change for the same wheel
SHEBANG = b"#!/usr/bin/env python3"
SCRIPT = """#!/usr/bin/env python3
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {import_name}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({func}())
"""


DOWNLOAD_TRIES = 4
RETRY_STATUS = (429, 500, 502, 503, 504)


def wheel_path(cache: Cache, wheel: Wheel) -> Path:
    return cache.root / "wheels" / wheel.filename


def download(wheels: Iterable[Wheel], cache: Cache, *, jobs: int = 4, progress: Callable[[str], None] | None = None,
             access: Access | None = None) -> dict[str, Path]:
    """{sha256: local wheel file} for `wheels`, downloading only those not in the cache, trusting
    what pip is configured to trust (`access`, read now when not given)."""
    wheels = list(wheels)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(wheels)))) as pool:
        pending = start_download(wheels, cache, pool, progress=progress, access=access)
        return {sha: f.result() for sha, f in pending.items()}


def start_download(wheels: Iterable[Wheel], cache: Cache, pool: Executor, *, progress: Callable[[str], None] | None = None,
                   access: Access | None = None) -> dict[str, Future]:
    """{sha256: future of the local wheel file}: each wheel checked against its sha256 (if in the
    cache) or downloaded on `pool`, so a caller can start on a wheel as soon as it is there."""
    wheels = list({w.sha256: w for w in wheels}.values())
    todo = [w for w in wheels if not wheel_path(cache, w).exists()]
    if progress and todo:
        total = sum(w.size or 0 for w in todo)
        progress(f"downloading {len(todo)} wheel(s)" + (f" ({total / 1e6:.1f} MB)" if total else ""))
    lock = threading.Lock()
    client: list = []  # (requests session, access), made once and only when something is fetched

    def session():
        with lock:
            if not client:
                import requests

                client.append((requests.Session(), access or index.access(cache.root)))
            return client[0]

    def get(w: Wheel) -> Path:
        p = wheel_path(cache, w)
        if p.exists() and cache.verified(p, f"sha256:{w.sha256}", p.stat().st_size):
            touch(p)
            return p
        return _fetch(w, cache, *session())

    return {w.sha256: pool.submit(get, w) for w in wheels}


def _fetch(w: Wheel, cache: Cache, session, access: Access) -> Path:
    import requests

    def write(f) -> None:
        # A dropped connection or a TLS hiccup of a proxy mid-download is retried (a fresh cold
        # build downloads dozens of wheels); an untrusted certificate or a 4xx is not.
        for attempt in range(DOWNLOAD_TRIES):
            last = attempt == DOWNLOAD_TRIES - 1
            f.seek(0)
            f.truncate()
            try:
                with session.get(w.url, stream=True, timeout=(10, 300), verify=access.verify(w.url)) as r:
                    if r.status_code in RETRY_STATUS and not last:
                        time.sleep(0.5 * 2**attempt)
                        continue
                    if r.status_code != 200:
                        raise BuildError(f"downloading {w.filename} failed: HTTP {r.status_code}", hint="check the package index and network, then retry")
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                return
            except requests.RequestException as e:
                from ...errors import tls_untrusted  # by type, not by the message's words

                if tls_untrusted(e):
                    raise BuildError(f"downloading {w.filename} failed: the package index's TLS certificate is not trusted",
                                     hint=UNTRUSTED_HINT) from None
                if last:
                    raise BuildError(f"downloading {w.filename} failed ({type(e).__name__}, {DOWNLOAD_TRIES} tries)",
                                     hint="check the package index and network, then retry") from None
                time.sleep(0.5 * 2**attempt)

    return cache.put_file(wheel_path(cache, w), f"sha256:{w.sha256}", write)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode() + f",{len(data)}"


def _generated(data: bytes, executable: bool = False) -> Member:
    return Member(lambda: io.BytesIO(data), len(data), executable)


@contextmanager
def installed(whl: Path, prefix: str) -> Iterator[dict[str, Source]]:
    """The files `pip install --target` would make from `whl` (without byte-compiling), as layer
    entries under `prefix`; the zip stays open until the block ends (write the layer inside it)."""
    with open(whl, "rb") as raw, zipfile.ZipFile(whl) as z:
        yield _entries(z, whl.name, prefix, raw.fileno())


def _entries(z: zipfile.ZipFile, wheel_name: str, prefix: str, fd: int) -> dict[str, Source]:
    def bad(why: str) -> BuildError:
        return BuildError(f"{wheel_name} {why}", hint="this wheel is broken; pin another version")

    infos = [i for i in z.infolist() if not i.is_dir()]
    dist_info = next((i.filename.split("/")[0] for i in infos if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/WHEEL")), None)
    if not dist_info:
        raise bad("is not a wheel (no .dist-info/WHEEL)")
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    project = dist_info.split("-")[0]
    try:  # the wheel's own hashes, reused for every file installed unchanged
        rows = {r[0]: f"{r[1]},{r[2]}" for r in csv.reader(io.StringIO(z.read(f"{dist_info}/RECORD").decode("utf-8"))) if len(r) >= 3 and r[1]}
    except KeyError:
        rows = {}
    out: dict[str, Source] = {}
    record: dict[str, str] = {}

    def put(rel: str, src: Source, row: str) -> None:
        rel = posixpath.normpath(rel)
        if rel.startswith(("/", "../")) or rel in (".", "..") or "\\" in rel:
            raise bad(f"has an unsafe path {rel!r}")
        out[f"{prefix}/{rel}"] = src
        record[rel] = row

    for info in infos:
        name = info.filename
        executable = bool((info.external_attr >> 16) & 0o111)
        if name in (f"{dist_info}/RECORD", f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s", f"{dist_info}/INSTALLER"):
            continue  # written below
        rel = name
        if name.startswith(data_dir + "/"):
            scheme, _, rest = name[len(data_dir) + 1:].partition("/")
            if scheme == "scripts":
                first, sep, body = z.read(info).partition(b"\n")
                if first.startswith(b"#!python"):  # the wheel spec's placeholder shebang
                    first = SHEBANG + first[len(b"#!pythonw" if first.startswith(b"#!pythonw") else b"#!python"):]
                data = first + sep + body
                put(f"bin/{rest}", _generated(data, True), _record_hash(data))
                continue
            if scheme in ("purelib", "platlib", "data"):
                rel = rest
            elif scheme == "headers":
                rel = f"include/{project}/{rest}"
            else:
                raise bad(f"has an unknown data scheme {scheme!r}")
        row = rows.get(name) or _record_hash(z.read(info))
        put(rel, Member(zipread.opener(fd, info, wheel_name, z), info.file_size, executable), row)
    try:
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    except KeyError:
        entry_points = ""
    if entry_points:
        cp = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        cp.optionxform = str  # script names are case-sensitive
        cp.read_string(entry_points)
        for section in ("console_scripts", "gui_scripts"):
            if not cp.has_section(section):
                continue
            for script, ref in sorted(cp.items(section)):
                module, _, attr = ref.partition(":")
                attr = attr.split("[")[0].strip() or "main"
                data = SCRIPT.format(module=module.strip(), import_name=attr.split(".")[0], func=attr).encode()
                put(f"bin/{script.strip()}", _generated(data, True), _record_hash(data))
    put(f"{dist_info}/INSTALLER", _generated(b"fairing\n"), _record_hash(b"fairing\n"))
    lines = [f"{p},{h}" for p, h in sorted(record.items())] + [f"{dist_info}/RECORD,,"]
    out[f"{prefix}/{dist_info}/RECORD"] = ("\n".join(lines) + "\n").encode()
    return out

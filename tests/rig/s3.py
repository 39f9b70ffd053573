"""SeaweedFS as the rig's S3-compatible server, for the S3 outputs store backend
(fairing/image_runtime/outputs_s3.py):

    ensure_built()      # `weed`, built once from the Go module proxy (`python -m tests.rig.s3 build`)
    s3 = ensure_s3()    # idempotent: the running server's handle (.endpoint, .pod_endpoint, keys)

One `weed server -s3` process (master, volume server, filer and S3 gateway in one), its data under
the rig dir, listening on 0.0.0.0:S3_PORT so pods on the real node reach it at NODE_IP:S3_PORT.
Two identities, generated once per machine: an admin one, and one that may only read, write and
list SCOPED_BUCKET (for the scoped-credentials test). Small on purpose: 64 MB volumes, nothing
preallocated, garbage vacuumed every minute, no read cache.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .gobuild import go_build
from .state import Service, cache_dir, rig_dir, rig_lock, service_env, write_if_changed

SEAWEEDFS = ("github.com/seaweedfs/seaweedfs", "v0.0.0-20261109003541-7506e5f91cd6")
# The S3 port is the one clients use; the others are SeaweedFS's internal servers, pinned so they
# never land on a port another rig service wants (each also opens a gRPC port at +10000).
S3_PORT, MASTER_PORT, VOLUME_PORT, FILER_PORT = 18333, 18334, 18335, 18336
GRPC = 10000
REGION = "us-east-1"
SCOPED_BUCKET = "fairing-scoped"


def binary() -> Path:
    return cache_dir() / "weed" / SEAWEEDFS[1] / "weed"


def ensure_built() -> Path:
    """SeaweedFS's go.mod replaces a dependency the proxy serves only under its new name, so
    `go install ...@version` is refused: the binary is built inside the module's own source tree."""
    module, version = SEAWEEDFS
    return go_build("weed", module, version, f"{module}/weed", install="source")


@dataclass
class S3Server:
    endpoint: str                      # http://127.0.0.1:PORT, for this machine
    pod_endpoint: str                  # http://NODE_IP:PORT, for pods on the real node
    access_key: str
    secret_key: str = field(repr=False)
    region: str = REGION
    scoped_bucket: str = SCOPED_BUCKET
    scoped_access_key: str = ""
    scoped_secret_key: str = field(default="", repr=False)

    def backend(self, bucket: str, prefix: str = "", *, scoped: bool = False, **kwargs):
        from fairing.image_runtime.outputs_s3 import S3Backend

        key, secret = ((self.scoped_access_key, self.scoped_secret_key) if scoped
                       else (self.access_key, self.secret_key))
        return S3Backend(self.endpoint, bucket, prefix, access_key=key, secret_key=secret, region=self.region,
                         **kwargs)

    def create_bucket(self, name: str) -> str:
        """Make a bucket with the admin identity (idempotent); returns its name."""
        self.backend(name).create_bucket()
        return name


def _dir() -> Path:
    d = rig_dir() / "s3"
    d.mkdir(parents=True, exist_ok=True)
    return d


def credentials() -> dict:
    """Random keys, made once per machine (0600), like the registries' passwords."""
    path = _dir() / "credentials.json"
    with rig_lock():
        if path.exists():
            return json.loads(path.read_text())
        creds = {name: {"access_key": "FAIRING" + secrets.token_hex(6).upper(), "secret_key": secrets.token_urlsafe(30)}
                 for name in ("admin", "scoped")}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        return creds


def identities(creds: dict) -> dict:
    """SeaweedFS's S3 identity file: actions suffixed `:bucket` apply to that bucket only."""
    def ident(name, actions):
        c = creds[name]
        return {"name": name, "credentials": [{"accessKey": c["access_key"], "secretKey": c["secret_key"]}],
                "actions": actions}

    return {"identities": [
        ident("admin", ["Admin", "Read", "Write", "List", "Tagging"]),
        ident("scoped", [f"{a}:{SCOPED_BUCKET}" for a in ("Read", "Write", "List")]),
    ]}


def _service() -> Service:
    d = _dir()
    return Service("s3", [
        str(binary()), "server", f"-dir={d / 'data'}",
        # The internal servers stay on loopback; only the S3 gateway faces the node's address.
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.ip.bind=0.0.0.0",
        f"-master.port={MASTER_PORT}", f"-master.port.grpc={MASTER_PORT + GRPC}",
        f"-volume.port={VOLUME_PORT}", f"-volume.port.grpc={VOLUME_PORT + GRPC}",
        f"-filer.port={FILER_PORT}", f"-filer.port.grpc={FILER_PORT + GRPC}",
        "-s3", f"-s3.port={S3_PORT}", f"-s3.port.grpc={S3_PORT + GRPC}", f"-s3.config={d / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs the tests never use: two ports fewer
        "-s3.autoCreateBucket=false",  # as on AWS: a write to a missing bucket fails (the tests check how)
        # Small: 64 MB volumes, sparse files, as many as the disk holds (each bucket is a collection
        # that grows 7 at a time). The tests overwrite the same 300 MB blob on every run, so garbage
        # is reclaimed every minute, and volumes left empty are deleted.
        "-master.volumeSizeLimitMB=64", "-master.volumePreallocate=false", "-volume.max=0",
        "-master.vacuumIntervalSeconds=60", "-master.garbageThreshold=0.1",
        "-master.vacuumDeleteEmptyAfterSeconds=120", "-volume.index=leveldb",
        # Memory: no chunk cache, bounded reader and upload buffers, and a Go heap limit below
        # (without them the process kept ~650 MB after the tests' 300 MB PUT and GET).
        "-s3.cacheCapacityMB=0", "-s3.readerCacheSizeMB=32", "-s3.concurrentUploadLimitMB=64",
        "-filer.concurrentUploadLimitMB=64",
        "-master.telemetry=false",
        # A lone master: a restart with its saved raft state otherwise waits 10 s to elect itself,
        # and the volume server lingers 10 s after SIGTERM for peers that do not exist.
        "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
    ], env={**service_env(), "GOMEMLIMIT": "256MiB"})


def _healthy() -> bool:
    """The gateway answers an unsigned request with S3's own XML refusal once it is serving."""
    from . import netutil

    r = netutil.request(f"http://127.0.0.1:{S3_PORT}/", timeout=3)
    return r.status in (200, 403) and b"<?xml" in r.body[:100]


def ensure_s3() -> S3Server:
    from . import netutil

    exe = ensure_built()  # outside the rig lock: a cold build takes minutes (it has its own lock)
    assert exe.exists()
    creds = credentials()
    with rig_lock():
        svc = _service()
        changed = write_if_changed(_dir() / "s3.json", json.dumps(identities(creds), indent=1), mode=0o600)
        changed |= write_if_changed(_dir() / "argv.json", json.dumps([svc.argv, svc.env.get("GOMEMLIMIT")]))
        if changed:
            svc.stop()  # identities and flags are read at start
        (_dir() / "data").mkdir(exist_ok=True)
        svc.ensure(_healthy, port=S3_PORT, timeout=90)
    admin, scoped = creds["admin"], creds["scoped"]
    server = S3Server(endpoint=f"http://127.0.0.1:{S3_PORT}", pod_endpoint=f"http://{netutil.node_ip()}:{S3_PORT}",
                      access_key=admin["access_key"], secret_key=admin["secret_key"],
                      scoped_access_key=scoped["access_key"], scoped_secret_key=scoped["secret_key"])
    server.create_bucket(SCOPED_BUCKET)
    return server


def stop() -> bool:
    with rig_lock():
        return _service().stop(timeout=30)  # it flushes its filer log for ~15 s first


if __name__ == "__main__":
    if sys.argv[1:] == ["build"]:
        print(ensure_built())
    else:
        raise SystemExit("usage: python -m tests.rig.s3 build")

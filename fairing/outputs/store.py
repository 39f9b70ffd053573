"""Which outputs store a run uses, parsed once from the `outputs` setting (or --outputs):

    oci://HOST/REPO        an OCI artifact per run, tagged run-<id> (oci+http:// for a plain-HTTP registry)
    s3://BUCKET/PREFIX     any S3-compatible server ($AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL, AWS_* keys)
    pvc://CLAIM/SUBPATH    a PersistentVolumeClaim mounted into the pod
    /a/dir or file://DIR   a directory (local runs)
    none                   keep nothing

Default: a cluster run keeps its outputs beside its image (the image's registry and repository); a
local run in the local store under the cache dir. The credentials the pod needs are resolved here
(from the local registry login or the AWS settings) and travel only in the run's Secret."""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

STORE_MOUNT = "/var/run/fairing/outputs-store"  # a pvc:// store inside the pod
AUTH_DIR = "/var/run/fairing/outputs-auth"      # the run's Secret: auth.json (+ ca.pem)
HINT = "use oci://HOST/REPO, s3://BUCKET/PREFIX, pvc://CLAIM/SUBPATH, a local directory, or none"


@dataclass(frozen=True)
class StoreSpec:
    kind: str              # registry, s3, dir
    text: str              # as the user would write it, no credentials: for records and messages
    spec: Mapping[str, Any] = field(default_factory=dict)  # FAIRING_OUTPUTS for the shim
    claim: str | None = None       # pvc://
    sub_path: str | None = None

    @property
    def local_only(self) -> bool:
        return self.kind == "dir" and self.claim is None


def parse(text: str) -> StoreSpec | None:
    """The store `text` names; None for "none". Raises ConfigError with the accepted forms."""
    text = (text or "").strip()
    if text.lower() in ("none", "off", "false"):
        return None
    u = urllib.parse.urlsplit(text)
    scheme = u.scheme.lower()
    path = u.path.strip("/")
    if scheme in ("oci", "oci+http"):
        if not u.netloc or not path:
            raise ConfigError(f"outputs store {text!r} needs a registry and a repository", hint="e.g. oci://registry.example.com/team/outputs")
        if u.username or u.password:
            raise ConfigError("credentials do not belong in the outputs URL", hint="log in to the registry (docker login HOST); fairing passes the login to the run")
        http = scheme == "oci+http"
        url = f"{'http' if http else 'https'}://{u.netloc}"
        return StoreSpec("registry", f"{scheme}://{u.netloc}/{path}", {"kind": "registry", "url": url, "repo": path})
    if scheme == "s3":
        if not u.netloc:
            raise ConfigError(f"outputs store {text!r} needs a bucket", hint="e.g. s3://my-bucket/fairing")
        from ..settings import s3_endpoint

        endpoint = s3_endpoint()
        spec = {"kind": "s3", "endpoint": endpoint or f"https://s3.{os.environ.get('AWS_REGION') or 'us-east-1'}.amazonaws.com",
                "bucket": u.netloc, "prefix": path, "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        return StoreSpec("s3", f"s3://{u.netloc}/{path}".rstrip("/"), spec)
    if scheme == "pvc":
        if not u.netloc:
            raise ConfigError(f"outputs store {text!r} needs a claim name", hint="e.g. pvc://shared-outputs/team")
        return StoreSpec("dir", f"pvc://{u.netloc}/{path}".rstrip("/"), {"kind": "dir", "path": STORE_MOUNT},
                         claim=u.netloc, sub_path=path or None)
    if scheme == "file" or (not scheme and text):
        p = Path(u.path if scheme == "file" else text).expanduser().absolute()
        return StoreSpec("dir", str(p), {"kind": "dir", "path": str(p)})
    raise ConfigError(f"unknown outputs store {text!r}", hint=HINT)


def local_default() -> StoreSpec:
    from ..settings import cache_dir

    p = cache_dir() / "outputs"
    return StoreSpec("dir", str(p), {"kind": "dir", "path": str(p)})


def for_run(setting: str | None, image_ref: str | None, *, on_cluster: bool) -> tuple[StoreSpec | None, str | None]:
    """(store, note) for a run: the setting when given, else beside the image (cluster) or the
    local store. The note says why nothing is kept, when nothing is."""
    if setting:
        spec = parse(setting)
        if spec is not None and on_cluster and spec.local_only:
            raise ConfigError(f"outputs store {spec.text} is a directory on this machine, which the cluster's pods cannot write",
                              hint="use oci://HOST/REPO, s3://BUCKET/PREFIX or pvc://CLAIM/SUBPATH for cluster runs")
        return spec, None
    if not on_cluster:
        return local_default(), None
    if not image_ref or image_ref.startswith(("oci:", "context:")):
        return None, None
    from ..oci.reference import is_loopback, parse as parse_ref

    ref = parse_ref(image_ref)
    if is_loopback(ref.registry):
        return None, (f"outputs not kept: the image registry {ref.registry} is this machine's loopback, which pods "
                      "cannot reach; set outputs: oci://HOST/REPO (or s3://..., pvc://...)")
    return StoreSpec("registry", f"oci://{ref.registry}/{ref.repository}",
                     {"kind": "registry", "url": f"https://{ref.registry}", "repo": ref.repository}), None


def credentials(store: StoreSpec) -> dict:
    """What the pod needs to write `store` ({} when nothing): from the local registry login, or
    the AWS settings. Never logged, recorded or rendered: it goes only into the run's Secret."""
    if store.kind == "registry":
        from ..oci.auth import find_credentials

        host = urllib.parse.urlsplit(store.spec["url"]).netloc
        creds = find_credentials(host, store.spec["repo"]).credentials
        if creds is None:
            return {}
        if creds.identity_token:
            return {"username": "<token>", "password": creds.identity_token}
        return {"username": creds.username, "password": creds.password}
    if store.kind == "s3":
        from ..settings import aws_credentials

        found = aws_credentials()
        if not found:
            raise ConfigError(f"no S3 credentials for outputs store {store.text}",
                              hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials)")
        return found
    return {}


def open_backend(store: StoreSpec, creds: Mapping[str, Any] | None = None, *, ca_file: str | None = None):
    """The store's backend on this machine (fetching, local runs' saving): the same classes the
    pod uses. A pvc:// store lives in the cluster: reached through a pod (fetch.py)."""
    from ..image_runtime import outputs as shim
    from ..settings import cache_dir
    from ..trust import bundle

    if store.claim is not None:
        raise ConfigError(f"outputs store {store.text} is a volume in the cluster", hint="fetch it with `fair runs outputs ID`, which reads it through a pod")
    creds = dict(creds if creds is not None else credentials(store))
    if store.kind in ("registry", "s3") and "ca_file" not in creds:
        creds["ca_file"] = bundle([("ca_file", ca_file)], cache_dir())
    return shim.backend(dict(store.spec), creds)

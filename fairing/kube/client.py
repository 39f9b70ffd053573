"""Kubernetes client setup and a small REST layer over plain dicts.

Manifests in fairing are plain dicts, so instead of the typed API classes we talk to the REST paths
directly and get dicts back: for a kubeconfig with a token or client certificate through
fairing.kube.plain (urllib3, no `import kubernetes`), for every other one (exec plugins,
auth-providers, in-cluster) through the official client's ApiClient, whose auth, TLS and
kubeconfig handling those need. Every failure is translated once, here, into a FairingError with a
fix: API server down, Forbidden (with the RBAC rule to add), namespace missing, CRD not installed.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, DeployError
from . import compat
from . import plain as _plain
# The error types live in errors.py; importable from here too, where callers have always found them.
from .errors import (  # noqa: F401
    Conflict, CRDNotInstalled, Forbidden, Gone, HTTPStatusError, NotFound, TimedOut, Unauthorized, Unreachable,
)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Connect fast, fail fast: a dead API server must give one clear error, not a retry storm.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    # Shown when the group/version is missing from the server (a CRD that is not installed).
    install_hint: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def base(self, namespace: str | None) -> str:
        root = f"/api/{self.version}" if not self.group else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ConfigError(f"{self.kind} is namespaced but no namespace was given")
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        p = self.base(namespace)
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    @property
    def display(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


_TRAINING_HINT = "install the Kubeflow training operator (kubectl apply -k \"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.8.1\")"
_KSERVE_HINT = ("install KServe, RawDeployment mode needs no Knative or Istio "
                "(https://kserve.github.io/website/latest/admin/kubernetes_deployment/), or pick --deployer serving")
_TRAINER_HINT = ("install Kubeflow Trainer v2 (kubectl apply --server-side -k \"https://github.com/kubeflow/trainer.git/"
                 "manifests/overlays/manager?ref=v2.3.0\", then its runtimes: .../manifests/overlays/runtimes?ref=v2.3.0)")
_KUEUE_HINT = "install Kueue (kubectl apply --server-side -f https://github.com/kubernetes-sigs/kueue/releases/download/v0.17.0/manifests.yaml)"
_GROUP_HINTS = {"kubeflow.org": _TRAINING_HINT, "serving.kserve.io": _KSERVE_HINT,
                "trainer.kubeflow.org": _TRAINER_HINT, "kueue.x-k8s.io": _KUEUE_HINT}

# The kinds fairing itself uses, by group/version. Plurals follow the API's rule (see
# `default_plural`); cluster-scoped kinds are listed in CLUSTER_SCOPED. Kinds only a test rig needs
# (kwok's Logs, ...) are not the product's business: callers add them with `register`.
_KINDS = {
    "v1": ("Namespace", "Node", "Pod", "Secret", "ConfigMap", "Service", "ServiceAccount", "Event",
           "PersistentVolumeClaim"),
    "batch/v1": ("Job", "CronJob"),
    "apps/v1": ("Deployment", "ReplicaSet"),
    "rbac.authorization.k8s.io/v1": ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"),
    "apiextensions.k8s.io/v1": ("CustomResourceDefinition",),
    "admissionregistration.k8s.io/v1": ("ValidatingWebhookConfiguration",),
    "kubeflow.org/v1": ("TFJob", "PyTorchJob"),
    "serving.kserve.io/v1beta1": ("InferenceService",),
    "serving.kserve.io/v1alpha1": ("ServingRuntime", "ClusterServingRuntime"),
    "trainer.kubeflow.org/v1alpha1": ("TrainJob", "TrainingRuntime", "ClusterTrainingRuntime"),
    "jobset.x-k8s.io/v1alpha2": ("JobSet",),
    "kueue.x-k8s.io/v1beta2": ("LocalQueue", "Workload"),
}
CLUSTER_SCOPED = {"Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "ValidatingWebhookConfiguration", "ClusterTrainingRuntime", "ClusterServingRuntime"}


def default_plural(kind: str) -> str:
    """The resource name the API server derives from a kind (lowercase, +s / +es / y->ies)."""
    k = kind.lower()
    if k.endswith("s"):
        return k + "es"
    if k.endswith("y") and k[-2:-1] not in "aeiou":
        return k[:-1] + "ies"
    return k + "s"


RESOURCES: dict[tuple[str, str], Resource] = {
    (api_version, kind): Resource(api_version, kind, default_plural(kind), kind not in CLUSTER_SCOPED,
                                  install_hint=_GROUP_HINTS.get(api_version.rpartition("/")[0]))
    for api_version, kinds in _KINDS.items() for kind in kinds
}
_extra: dict[tuple[str, str], Resource] = {}
_extra_lock = threading.Lock()


def register(resource: Resource) -> Resource:
    """Make a kind known to every client of this process (e.g. a test rig's own CRDs, whose
    plural the default rule gets wrong). Idempotent."""
    with _extra_lock:
        _extra[(resource.api_version, resource.kind)] = resource
    return resource


def resource_for(api_version: str, kind: str) -> Resource:
    """The REST coordinates of a kind. Unknown kinds get the usual lowercase plural."""
    r = RESOURCES.get((api_version, kind)) or _extra.get((api_version, kind))
    if r is None:
        known = next((k for k in RESOURCES.values() if k.kind == kind), None)
        plural = known.plural if known else default_plural(kind)
        group = api_version.rpartition("/")[0]
        hint = _GROUP_HINTS.get(group) or f"install the CustomResourceDefinition for {kind} ({api_version})"
        r = Resource(api_version, kind, plural, known.namespaced if known else True, install_hint=hint)
    return r


# --- validation ------------------------------------------------------------------------------------
def validate_name(name: str, what: str = "name", *, max_len: int = 63, dns1035: bool = False) -> str:
    """Check a Kubernetes object name before any API call, with a message saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} is empty", hint="use lowercase letters, digits and '-', e.g. 'train-mnist'")
    pattern = _DNS1035_LABEL if dns1035 else _DNS1123_LABEL
    problem = None
    if len(name) > max_len:
        problem = f"is {len(name)} characters long (at most {max_len})"
    elif name != name.lower():
        problem = "contains uppercase letters"
    elif dns1035 and not name[0].isalpha():
        problem = "must start with a letter"
    elif not pattern.match(name):
        problem = "must consist of lowercase letters, digits and '-', starting and ending with a letter or digit"
    if problem:
        fixed = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:max_len].strip("-")
        if dns1035:
            fixed = re.sub(r"^[^a-z]+", "", fixed)
        suggestion = f"e.g. {fixed!r}" if fixed else "e.g. 'train-mnist'"
        raise ConfigError(f"invalid {what} {name!r}: {problem}", hint=f"use a DNS-1123 name, {suggestion}")
    return name


# --- configuration ---------------------------------------------------------------------------------
def _kubeconfig_path(kubeconfig: str | os.PathLike | None) -> str | None:
    if kubeconfig:
        return os.fspath(kubeconfig)
    env = os.environ.get("KUBECONFIG")
    if env:
        return env
    default = Path.home() / ".kube" / "config"
    return str(default) if default.exists() else None


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").exists()


def _existing_kubeconfig(kubeconfig) -> str | None:
    """The kubeconfig path(s) to read, each checked to exist; None: none (in-cluster, or nothing)."""
    path = _kubeconfig_path(kubeconfig)
    for p in (path or "").split(os.pathsep):
        if p and not Path(p).expanduser().exists():
            raise ConfigError(f"kubeconfig {p} does not exist",
                              hint="fix KUBECONFIG or the kubeconfig argument")
    return path


def load_configuration(kubeconfig=None, context: str | None = None):
    """(kubernetes.client.Configuration, namespace from the context or SA file, source description)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = _existing_kubeconfig(kubeconfig)
    cfg = client.Configuration()
    if path is None:
        if not _in_cluster():
            raise ConfigError(
                "no Kubernetes configuration found (no kubeconfig and not running in a cluster)",
                hint="set KUBECONFIG, pass kubeconfig=..., or create ~/.kube/config")
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise ConfigError(f"in-cluster configuration is incomplete: {e}",
                              hint=f"check the pod's service account mount ({SA_DIR})") from None
        ns_file = SA_DIR / "namespace"
        ns = ns_file.read_text().strip() if ns_file.exists() else None
        return cfg, ns, "in-cluster service account"
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                persist_config=False)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except ConfigException as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if context and "context" in msg.lower():
            names = ", ".join(sorted(c["name"] for c in (contexts_or_empty(path)))) or "none"
            raise ConfigError(f"kubeconfig context {context!r} not found in {path}",
                              hint=f"available contexts: {names}") from None
        raise ConfigError(f"cannot load kubeconfig {path}: {msg}",
                          hint="check the file with `kubectl config view`") from None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return cfg, ns, f"kubeconfig {path}" + (f" (context {chosen['name']})" if chosen else "")


def contexts_or_empty(path: str) -> list[dict]:
    from kubernetes import config

    try:
        return config.list_kube_config_contexts(config_file=path)[0]
    except Exception:  # only used to list names in an error message
        return []


# --- errors ----------------------------------------------------------------------------------------
def _status_of(exc) -> dict:
    try:
        return json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}


class Kube:
    """One configured connection. `namespace` is resolved from the argument, then the kubeconfig
    context, then the in-cluster service account file, then "default"."""

    def __init__(self, kubeconfig=None, context: str | None = None, namespace: str | None = None):
        self._kubeconfig, self._context = kubeconfig, context
        self._configuration = self._api = None
        self.transport = None
        path = _existing_kubeconfig(kubeconfig)
        plain = _plain.load(path, context) if path else None
        if plain is not None:
            try:
                self.transport = _plain.Transport(plain)
            except Exception:  # noqa: BLE001 - e.g. a CA that does not load: the official loader says why
                plain = None
        if plain is not None:
            # The plain kubeconfig (fairing.kube.plain): no `import kubernetes` on the way.
            ctx_ns, self.server = plain.namespace, plain.server
            self.source = f"kubeconfig {path} (context {plain.context})"
        else:
            cfg, ctx_ns, self.source = load_configuration(kubeconfig, context)
            self._configure(cfg)
            self.server = cfg.host
        self.namespace = validate_name(namespace or ctx_ns or "default", "namespace")
        self._group_ok: dict[str, bool] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _configure(cfg) -> None:
        cfg.retries = 0  # urllib3 would otherwise retry a refused connection 3 times per call

    @property
    def configuration(self):
        """The official client's Configuration for this kubeconfig (made on first use when the
        plain path serves the requests)."""
        if self._configuration is None:
            cfg = load_configuration(self._kubeconfig, self._context)[0]
            self._configure(cfg)
            self._configuration = cfg
        return self._configuration

    @property
    def api(self):
        """The official client's ApiClient (for its typed APIs: attach, proxy), made on first use."""
        if self._api is None:
            from kubernetes import client

            self._api = client.ApiClient(self.configuration)
        return self._api

    # -- transport ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None, query: Mapping | None = None,
                content_type: str | None = None, stream: bool = False, timeout: float | None = None,
                what: tuple | None = None):
        """Call the API. Returns the decoded JSON (or the raw response when stream=True).
        `what` = (verb, Resource, namespace, name) for error messages."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        read = timeout if timeout is not None else READ_TIMEOUT
        query = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            send = self.transport.send if self.transport is not None else functools.partial(compat.send, self.api)
            resp = send(method, path, query=query, headers=headers, body=body, timeout=(CONNECT_TIMEOUT, read))
        except Exception as e:  # noqa: BLE001 - translated below, re-raised if unknown
            raise self.translate(e, what or (method.lower(), None, None, None)) from None
        if stream:
            return resp  # the urllib3 response: .stream(), .close()
        data = resp.read()
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(data) if data else {}
        return data.decode(errors="replace")

    def translate(self, exc: Exception, what: tuple) -> Exception:
        """Turn a client/transport exception into a FairingError with a fix."""
        import urllib3

        from ..errors import tls_untrusted

        # Only the official client raises its ApiException; when it was never imported, nothing is one.
        ApiException = getattr(sys.modules.get("kubernetes.client.exceptions"), "ApiException", HTTPStatusError)

        verb, res, ns, name = what
        original = exc
        if isinstance(exc, ApiException) and not exc.status:  # the client wraps SSL errors this way
            exc = urllib3.exceptions.SSLError(exc.reason)
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            text = str(exc)
            # By type, anywhere in the chain (MaxRetryError wraps it; kubernetes<31 raises its
            # ApiException while handling it). Only a certificate that did not verify: a server
            # that drops the handshake is unreachable, not misconfigured.
            if tls_untrusted(original):
                return DeployError(f"TLS verification of the API server {self.server} failed",
                                   hint="the kubeconfig's certificate-authority does not match the server; "
                                        "refresh the kubeconfig for this cluster")
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                return TimedOut(f"the API server {self.server} did not answer in time",
                                   hint="check the cluster's health (kubectl get --raw /readyz)")
            why = "connection refused" if "refused" in text.lower() else \
                  "timed out" if "timed out" in text.lower() else text.split(":")[-1].strip() or "unreachable"
            return Unreachable(f"cannot reach the Kubernetes API server at {self.server} ({why})",
                               hint=f"check that the cluster is running and that {self.source} points "
                                    "at it (kubectl cluster-info)")
        if not isinstance(exc, (ApiException, HTTPStatusError)):
            return exc
        st = _status_of(exc)
        msg = st.get("message") or (exc.body.decode(errors="replace") if isinstance(exc.body, bytes)
                                    else str(exc.body or exc.reason)).strip()
        details = st.get("details") or {}
        rname = res.display if res else "resource"
        kind = res.kind if res else "object"
        where = f" in namespace {ns!r}" if ns else ""
        if exc.status == 401:
            return Unauthorized(f"the API server {self.server} rejected the credentials (401 Unauthorized)",
                               hint=f"refresh the credentials in {self.source}")
        if exc.status == 403 and res is not None and res.group and not self.group_version_served(res):
            # RBAC is checked before routing, so a kind that does not exist is "forbidden" to
            # anyone without a wildcard Role; discovery (open to all) tells the real story.
            return self._crd_missing(res)
        if exc.status == 403:
            user = re.search(r'User "([^"]+)"', msg or "")
            who = user.group(1) if user else "you"
            group = res.group if res else ""
            plural = res.plural if res else "RESOURCE"
            scope = f"-n {ns} " if ns else ""
            rule = (f"kubectl create role fairing-{verb} {scope}--verb={verb} --resource={rname}"
                    f" && kubectl create rolebinding fairing-{verb} {scope}--role=fairing-{verb} "
                    f"--{'serviceaccount=' + who.split(':', 2)[2] if who.startswith('system:serviceaccount:') else 'user=' + who}")
            return Forbidden(
                f"forbidden: {who} cannot {verb} {rname}{where}",
                hint=f"ask a cluster admin for a Role granting '{verb}' on '{plural}' "
                     f"(apiGroup {group!r}){where}, e.g. {rule}")
        if exc.status == 404:
            if details.get("kind") == "namespaces" and ns and details.get("name") == ns:
                return DeployError(f"namespace {ns!r} does not exist",
                                   hint=f"create it (kubectl create namespace {ns}) or pass another namespace")
            if res is not None and res.group and not self.group_version_served(res):
                return self._crd_missing(res)
            return NotFound(f"{kind} {name!r} not found{where}" if name else f"{rname} not found{where}",
                            hint="check the name and namespace (kubectl get " + (res.plural if res else "all")
                                 + (f" -n {ns})" if ns else ")"))
        if exc.status == 409:
            return Conflict(f"{kind} {name!r} already exists{where}" if st.get("reason") == "AlreadyExists"
                            else f"conflict on {kind} {name!r}: {msg}",
                            hint="choose another name, or delete the existing one first")
        if exc.status == 410:
            return Gone(f"API server answered {exc.status} {exc.reason} to {verb} {rname}{where}: {msg}",
                        hint="the version asked for was compacted away; list again")
        if exc.status == 422:
            return DeployError(f"the API server rejected {kind} {name!r}: {msg}",
                               hint="fix the field named above")
        return DeployError(f"API server answered {exc.status} {exc.reason} to {verb} {rname}{where}: {msg}")

    def _crd_missing(self, res: Resource) -> "CRDNotInstalled":
        return CRDNotInstalled(f"{res.kind} CRD ({res.api_version}) is not installed on {self.server}",
                               hint=res.install_hint or f"install the CustomResourceDefinition for {res.kind}")

    def group_version_served(self, res: Resource) -> bool:
        """Whether the server serves res.api_version at all (False means: CRD not installed)."""
        key = res.api_version
        with self._lock:
            if key in self._group_ok:
                return self._group_ok[key]
        try:
            data = self.request("GET", f"/apis/{res.api_version}")
            served = any(r.get("kind") == res.kind for r in data.get("resources", []))
        except NotFound:
            served = False
        except Exception:  # noqa: BLE001 - can't tell (forbidden, down): don't claim it's missing
            return True
        with self._lock:
            self._group_ok[key] = served
        return served

    # -- verbs --------------------------------------------------------------------------------------
    def _ns(self, res: Resource, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if res.namespaced else None

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist (a missing CRD is still an error)."""
        res = resource_for(api_version, kind)
        ns = self._ns(res, namespace)
        try:
            return self.request("GET", res.path(ns, name), what=("get", res, ns, name))
        except NotFound:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> dict:
        res = resource_for(api_version, kind)
        ns = self._ns(res, namespace)
        return self.request("GET", res.base(ns), query={"labelSelector": label_selector,
                                                         "fieldSelector": field_selector},
                            what=("list", res, ns, None))

    def create(self, manifest: dict, namespace: str | None = None, *, dry_run: bool = False) -> dict:
        res = resource_for(manifest["apiVersion"], manifest["kind"])
        ns = self._ns(res, namespace or manifest.get("metadata", {}).get("namespace"))
        name = manifest.get("metadata", {}).get("name")
        return self.request("POST", res.base(ns), body=manifest,
                            query={"dryRun": "All" if dry_run else None, "fieldManager": "fairing"},
                            what=("create", res, ns, name))

    def apply(self, manifest: dict, namespace: str | None = None, *, field_manager: str = "fairing",
              force: bool = True) -> dict:
        """Server-side apply: create or update to match `manifest`."""
        res = resource_for(manifest["apiVersion"], manifest["kind"])
        ns = self._ns(res, namespace or manifest.get("metadata", {}).get("namespace"))
        name = manifest["metadata"]["name"]
        return self.request("PATCH", res.path(ns, name), body=manifest,
                            content_type="application/apply-patch+yaml",
                            query={"fieldManager": field_manager, "force": "true" if force else None},
                            what=("patch", res, ns, name))

    def patch(self, api_version: str, kind: str, name: str, patch: dict, namespace: str | None = None) -> dict:
        res = resource_for(api_version, kind)
        ns = self._ns(res, namespace)
        return self.request("PATCH", res.path(ns, name), body=patch,
                            content_type="application/merge-patch+json", what=("patch", res, ns, name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation: str = "Foreground") -> bool:
        """Delete; False if it was already gone."""
        res = resource_for(api_version, kind)
        ns = self._ns(res, namespace)
        try:
            self.request("DELETE", res.path(ns, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
                         what=("delete", res, ns, name))
            return True
        except NotFound:
            return False

    def pod_log(self, pod: str, namespace: str | None = None, *, container: str | None = None,
                follow: bool = False, tail_lines: int | None = None, timestamps: bool = False,
                since_time: str | None = None):
        """Raw streaming response of a container's log (caller iterates and closes)."""
        res = resource_for("v1", "Pod")
        ns = self._ns(res, namespace)
        return self.request("GET", res.path(ns, pod, "log"), stream=True,
                            query={"container": container, "follow": "true" if follow else None,
                                   "tailLines": tail_lines, "timestamps": "true" if timestamps else None,
                                   "sinceTime": since_time},
                            timeout=None if follow else READ_TIMEOUT,
                            what=("get", Resource("v1", "Pod", "pods/log"), ns, pod))

    def watch(self, api_version: str, kind: str, namespace: str | None = None, **kw) -> "Watch":
        res = resource_for(api_version, kind)
        return Watch(self, res, self._ns(res, namespace), **kw)


def abort_response(resp) -> None:
    """Interrupt a streaming response that another thread is blocked reading. Closing it from here
    would wait for that reader (it holds the SSL socket); shutting the socket down wakes it."""
    if resp is None:
        return
    import socket

    # urllib3's response holds its connection; an attach websocket (fairing.kube.attach) is one.
    conn = getattr(resp, "_connection", None) or getattr(resp, "connection", None) or resp
    sock = getattr(conn, "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Watch:
    """A resumable watch: iterate for (event_type, object) pairs.

    When the connection breaks (API server restart, proxy timeout) it reconnects from the last
    resourceVersion it saw, with capped backoff, so no event is lost; on 410 Gone (that version was
    compacted away) it re-lists and yields ("SYNC", obj) for each current object. `stop()` may be
    called from another thread; it closes the open response so the iterator ends promptly."""

    def __init__(self, kube: Kube, res: Resource, namespace: str | None, *, name: str | None = None,
                 label_selector: str | None = None, resource_version: str | None = None,
                 reconnect_grace: float = 60.0, server_timeout: int = 240):
        self.kube, self.res, self.namespace = kube, res, namespace
        self.name = name
        self.field_selector = f"metadata.name={name}" if name else None
        self.label_selector = label_selector
        self.resource_version = resource_version
        self.reconnect_grace = reconnect_grace
        self.server_timeout = server_timeout
        self.reconnects = 0
        self._stopped = threading.Event()
        self._resp = None

    def stop(self) -> None:
        self._stopped.set()
        abort_response(self._resp)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _relist(self) -> list[dict]:
        data = self.kube.request("GET", self.res.base(self.namespace),
                                 query={"labelSelector": self.label_selector, "fieldSelector": self.field_selector},
                                 what=("list", self.res, self.namespace, None))
        self.resource_version = data.get("metadata", {}).get("resourceVersion")
        return data.get("items", [])

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        if self.resource_version is None:
            for item in self._relist():
                yield "SYNC", item
        broken_since = None
        delay = 0.25
        while not self.stopped:
            try:
                self._resp = self.kube.request(
                    "GET", self.res.base(self.namespace), stream=True,
                    timeout=self.server_timeout + 15,
                    query={"watch": "true", "allowWatchBookmarks": "true",
                           "resourceVersion": self.resource_version,
                           "timeoutSeconds": self.server_timeout,
                           "labelSelector": self.label_selector, "fieldSelector": self.field_selector},
                    what=("watch", self.res, self.namespace, None))
                broken_since, delay = None, 0.25
                for etype, obj in self._events(self._resp):
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            raise Gone(f"watch on {self.res.display} failed: {obj.get('message')}")
                        raise DeployError(f"watch on {self.res.display} failed: {obj.get('message')}")
                    rv = obj.get("metadata", {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if etype != "BOOKMARK":
                        yield etype, obj
            except Gone:  # our resourceVersion is too old (an ERROR event or a 410 answer): start over
                if self.stopped:
                    return
                items = self._relist()
                for item in items:
                    yield "SYNC", item
                if self.name and not items:
                    # The one object we watch is gone and its DELETED event with it.
                    yield "DELETED", {"metadata": {"name": self.name}}
            except (Unreachable, TimedOut, Unauthorized, Forbidden) as e:
                if self.stopped:
                    return
                # A restarting API server answers Forbidden/Unauthorized until its RBAC and token
                # caches have synced, so right after a break those are retried too (within the grace).
                if isinstance(e, (Unauthorized, Forbidden)) and broken_since is None:
                    raise
                now = time.monotonic()
                broken_since = broken_since or now
                if now - broken_since > self.reconnect_grace:
                    raise
                self.reconnects += 1
                self._stopped.wait(delay)
                delay = min(delay * 2, 5.0)
            except DeployError:
                if self.stopped:
                    return
                raise
            except Exception:  # noqa: BLE001 - the stream broke mid-read: reconnect from our rv
                if self.stopped:
                    return
                broken_since = broken_since or time.monotonic()
                self.reconnects += 1
                self._stopped.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                resp, self._resp = self._resp, None
                if resp is not None:
                    try:
                        resp.close()  # a watch connection is not worth reusing
                    except Exception:  # noqa: BLE001
                        pass

    @staticmethod
    def _events(resp) -> Iterator[tuple[str, dict]]:
        buf = b""
        for chunk in resp.stream(amt=None, decode_content=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    ev = json.loads(line)
                    yield ev.get("type"), ev.get("object") or {}
        if buf.strip():
            ev = json.loads(buf)
            yield ev.get("type"), ev.get("object") or {}

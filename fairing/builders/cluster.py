"""The `cluster` builder: build inside the cluster with a kaniko executor pod, for users with no
local engine and a registry only the cluster can reach.

Flow: the same Dockerfile and reproducible context as the `docker` builder (wheels downloaded on
the host) -> a Pod running the kaniko executor with `--context=tar://stdin` and stdin/stdinOnce ->
a Secret with the registry login (owned by the pod, so the API server deletes it with the pod)
mounted at /kaniko/.docker/config.json -> the .tar.gz context streamed to the pod through the
attach API -> logs followed -> the pushed digest read from the container's termination message
(`--image-name-with-digest-file=/dev/termination-log`). A failed pod is a BuildError; pod and
secret are deleted whatever happens.

The original GoogleContainerTools/kaniko is archived (June 2025); the default executor image is
the maintained community fork osscontainertools/kaniko. Any kaniko-compatible image works
(`executor_image=`)."""
from __future__ import annotations

import base64
import logging
import re
import secrets as _secrets
import time
from typing import Any, Callable, Sequence

from ..context import BuildContext
from ..errors import BuildError, ConfigError, one_line
from ..publish.registry import Pushed
from .base import Builder, context_hash
from .docker import (
    check_requirements,
    context_file,
    dockerfile,
    download_wheels,
    planned_pip_wheel,
)

log = logging.getLogger(__name__)

DEFAULT_EXECUTOR = "ghcr.io/osscontainertools/kaniko:v1.28.5"
CONTAINER = "kaniko"
DOCKER_CONFIG_DIR = "/kaniko/.docker"
TERMINATION_LOG = "/dev/termination-log"
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})")


def kaniko_args(destination: str, *, cache_repo: str | None, insecure: Sequence[str] = (),
                cache: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """The executor's arguments. Everything the build needs is in here: the tests run the real
    executor with exactly this list."""
    args = [
        "--context=tar://stdin",
        "--dockerfile=Dockerfile",
        f"--destination={destination}",
        f"--image-name-with-digest-file={TERMINATION_LOG}",
        "--reproducible",
    ]
    if cache:
        args.append("--cache=true")
        if cache_repo:
            args.append(f"--cache-repo={cache_repo}")
    for host in sorted(set(insecure)):
        args.append(f"--insecure-registry={host}")  # plain HTTP for pulls, pushes and the cache
    return args + list(extra)


def docker_config_json(registry: str, repository: str | None = None) -> bytes | None:
    """A Docker config.json holding only the login for `registry` (from the local Docker/containers
    config, see fairing.oci.auth); None when there is none (anonymous push)."""
    from ..oci.auth import config_json, find_credentials

    creds = find_credentials(registry, repository).credentials
    return config_json(registry, creds) if creds else None


def pod_manifest(name: str, namespace: str, *, image: str, args: list[str], secret: str | None,
                 deadline: int, labels: dict[str, str] | None = None,
                 resources: dict | None = None) -> dict:
    """The kaniko build pod. stdin + stdinOnce: the context arrives on stdin and the container sees
    EOF when our attach session ends. The digest comes back as the termination message."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "args": args,
        "stdin": True,
        "stdinOnce": True,
        "tty": False,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,  # an abandoned build still ends
        "automountServiceAccountToken": False,  # kaniko needs no API access
        "containers": [container],
    }
    if secret:
        container["volumeMounts"] = [{"name": "registry-auth", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True}]
        spec["volumes"] = [{"name": "registry-auth", "secret": {
            "secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "fairing", "app.kubernetes.io/component": "build",
                       **(labels or {})},
        },
        "spec": spec,
    }


def secret_manifest(name: str, namespace: str, config_json: bytes, owner: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {"app.kubernetes.io/managed-by": "fairing", "app.kubernetes.io/component": "build"}}
    if owner:  # garbage-collected with the pod even if this process dies mid-build
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"]}]
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "metadata": meta,
            "data": {".dockerconfigjson": base64.b64encode(config_json).decode()}}


def digest_from_pod(pod: dict) -> str | None:
    """The pushed digest from the kaniko container's termination message, if it wrote one."""
    m = _DIGEST.search(_terminated(pod).get("message") or "")
    return m.group(1) if m else None


def _terminated(pod: dict) -> dict:
    from ..kube.reasons import container_state

    return container_state(pod, CONTAINER).get("terminated") or {}


def wait_for_pod(kube, name: str, *, until: Callable[[dict], bool], timeout: float, poll: float = 0.5) -> dict:
    """Poll the pod until `until(pod)` or it can never get there; fatal states raise BuildError."""
    from ..kube.reasons import diagnose_pod

    deadline = time.monotonic() + timeout
    while True:
        pod = kube.get("v1", "Pod", name)
        if pod is None:
            raise BuildError(f"build pod {name} disappeared before the build finished",
                             hint="something deleted it; check the namespace's events (kubectl get events)")
        if until(pod):
            return pod
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return pod
        diag = diagnose_pod(pod, CONTAINER)
        if diag and diag.fatal:
            raise BuildError(f"build pod failed: {diag.message}", hint=diag.hint)
        if time.monotonic() > deadline:
            why = f" ({diag.message})" if diag else ""
            raise BuildError(f"build pod {name} did not get there within {timeout:.0f} s (phase {phase}){why}",
                             hint=diag.hint if diag else "check the cluster has room for the pod (kubectl describe pod)")
        time.sleep(poll)


# kaniko's own log lines ("INFO[0003] Running: ...", "error building image: ..."), not a step's output
_KANIKO_LINE = re.compile(r"^(?:(?:INFO|WARN|ERRO|DEBU|TRAC|FATA)\[\d+\]|error building image:)")


def result_of(pod: dict, logs: Sequence[str] = ()) -> str:
    """The digest of a finished build pod, or BuildError saying why the build failed."""
    name = pod["metadata"]["name"]
    phase = (pod.get("status") or {}).get("phase")
    term = _terminated(pod)
    digest = digest_from_pod(pod)
    if phase == "Succeeded" and digest:
        return digest
    lines = [ln.strip() for ln in logs if ln.strip()]
    last = lines[-1] if lines else None
    hint = f"the executor's output ended with: {last[:200]}" if last else f"see the build logs: kubectl logs {name}"
    # kaniko's last word on a failed RUN step is generic ("exit status 1"); what the step itself
    # printed last is the reason a user needs.
    cause = next((ln for ln in reversed(lines) if not _KANIKO_LINE.match(ln)), None)
    if cause and cause != last:
        hint += f"; the step printed: {cause[:200]}"
    if phase == "Succeeded":
        raise BuildError(f"build pod {name} succeeded but reported no image digest",
                         hint="the executor image must support --image-name-with-digest-file (kaniko does)")
    code = term.get("exitCode")
    why = term.get("reason") or (pod.get("status") or {}).get("reason") or "failed"
    msg = (term.get("message") or "").strip()
    detail = f": {' '.join(msg.split())[:200]}" if msg and not digest else ""
    raise BuildError(f"kaniko build pod {name} failed ({why}, exit code {code}){detail}", hint=hint)


class ClusterBuilder(Builder):
    """Build with a kaniko executor pod in the cluster and push from there.

    base_image: the image to build FROM, as the cluster sees it.
    kubeconfig / context / namespace: where to run (defaults: $KUBECONFIG, current context, its
        namespace).
    executor_image: a kaniko executor image (default: the maintained osscontainertools fork).
    cache_repo: kaniko's layer cache (default `<target repo>/cache`); cache=False disables it.
    insecure: registries the cluster reaches over plain HTTP (loopback registries always are).
    python / arch / run: as for the docker builder (wheel selection, extra RUN steps).
    timeout: seconds the whole build may take (also the pod's activeDeadlineSeconds).
    labels: extra labels for the build pod.
    mutators: pod options (fairing.deployers.pod) for the build pod, e.g. a node selector and a
        toleration for a build node pool, or a service account."""

    name = "cluster"

    def __init__(self, base_image: str, *, kubeconfig=None, context: str | None = None, namespace: str | None = None,
                 executor_image: str = DEFAULT_EXECUTOR, cache_repo: str | None = None, cache: bool = True,
                 insecure: Sequence[str] = (), python: str | None = None, arch: str = "amd64",
                 run: Sequence[str] = (), timeout: int = 1800, resources: dict | None = None,
                 extra_args: Sequence[str] = (), labels: dict[str, str] | None = None,
                 output: Callable[[str], None] | None = None, kube=None, mutators: Sequence[Callable] = ()):
        from ..deployers import pod as pod_options

        self.mutators = pod_options.check(mutators)  # checked now, before any work
        if not base_image:
            raise ConfigError("the cluster builder needs a base image", hint="pass base_image='python:3.11-slim'")
        from ..oci import reference

        reference.parse(base_image)
        reference.parse(executor_image)
        self.base_image = base_image
        self.kubeconfig, self.kube_context, self.namespace = kubeconfig, context, namespace
        self.executor_image = executor_image
        self.cache_repo, self.cache = cache_repo, cache
        self.insecure = (insecure,) if isinstance(insecure, str) else tuple(insecure)
        self.python, self.arch, self.run = python, arch, tuple(run)
        self.timeout = int(timeout)
        self.resources = resources
        self.extra_args = tuple(extra_args)
        self.labels = dict(labels or {})
        self.output = output or (lambda line: log.info("%s", line))
        self._kube = kube

    # -- pieces ----------------------------------------------------------------------------------
    def _client(self):
        if self._kube is None:
            from ..kube.client import Kube

            self._kube = Kube(self.kubeconfig, self.kube_context, self.namespace)
        return self._kube

    def _python(self, ctx: BuildContext) -> str:
        import sys

        return self.python or ctx.python or f"{sys.version_info.major}.{sys.version_info.minor}"

    def args_for(self, ref) -> list[str]:
        from ..oci import reference
        from ..oci.reference import is_loopback

        base = reference.parse(self.base_image)
        insecure = set(self.insecure) | {r for r in (ref.registry, base.registry) if is_loopback(r)}
        cache_repo = self.cache_repo or f"{ref.name}/cache"
        return kaniko_args(str(ref), cache_repo=cache_repo, insecure=sorted(insecure), cache=self.cache,
                           extra=self.extra_args)

    def manifests(self, ctx: BuildContext, target: str, *, namespace: str, suffix: str | None = None,
                  with_secret: bool = True) -> tuple[dict, dict | None]:
        """(pod, secret or None) for building `ctx` into `target`; the secret's owner is filled in
        once the pod exists."""
        ref = self.target(target, ctx).ref
        suffix = suffix or _secrets.token_hex(3)
        name = f"fairing-build-{context_hash(ctx, 10)}-{suffix}"
        config = docker_config_json(ref.registry, ref.repository) if with_secret else None
        secret = secret_manifest(f"{name}-auth", namespace, config) if config else None
        pod = pod_manifest(name, namespace, image=self.executor_image, args=self.args_for(ref),
                           secret=secret["metadata"]["name"] if secret else None, deadline=self.timeout,
                           labels={**self.labels, "fairing.dev/context-hash": context_hash(ctx)},
                           resources=self.resources)
        if self.mutators:
            from ..deployers import pod as pod_options

            spec = pod_options.apply({"metadata": pod["metadata"], "spec": pod["spec"]}, self.mutators)
            pod = {**pod, "metadata": spec["metadata"], "spec": spec["spec"]}
        return pod, secret

    # -- interface -------------------------------------------------------------------------------
    def plan(self, ctx: BuildContext, target) -> dict[str, Any]:
        t = self.target(target, ctx)
        if ctx.requirements:
            check_requirements(ctx.requirements, self._python(ctx))
        text = dockerfile(ctx, self.base_image, pip_wheel=planned_pip_wheel() if ctx.requirements else None, run=self.run)
        pod, secret = self.manifests(ctx, t, namespace=self.namespace or "<namespace>", suffix="xxxxxx")
        if secret:  # never print credentials, even in a dry run
            secret = {**secret, "data": {k: "<redacted>" for k in secret["data"]}}
        return {"builder": self.name, "base": self.base_image, "target": str(t), "executor": self.executor_image,
                "context_hash": context_hash(ctx), "dockerfile": text,
                "manifests": [m for m in (secret, pod) if m]}

    def image(self, ctx: BuildContext, target) -> Pushed:
        """Run the kaniko pod: it builds `ctx` and pushes it to the target itself, so the image
        value is the digest it reports."""
        t = self.target(target, ctx)
        self.plan(ctx, t)  # every input check before anything is created
        deps, pip_wheel = (None, None)
        if ctx.requirements:
            deps, pip_wheel = download_wheels(ctx.requirements, self._python(ctx), self.arch)
        text = dockerfile(ctx, self.base_image, pip_wheel=pip_wheel, run=self.run)
        kube = self._client()
        pod, secret = self.manifests(ctx, t, namespace=kube.namespace)
        name = pod["metadata"]["name"]
        logs: list[str] = []
        created_pod = created_secret = False
        try:
            with context_file(ctx, text, deps) as fileobj:
                live = kube.create(pod)
                created_pod = True
                if secret:
                    kube.create(secret_manifest(secret["metadata"]["name"], kube.namespace,
                                                base64.b64decode(secret["data"][".dockerconfigjson"]), owner=live))
                    created_secret = True
                self.output(f"build pod {kube.namespace}/{name} created; waiting for the executor to start")
                running = wait_for_pod(kube, name, timeout=min(self.timeout, 600), until=_container_running)
                if (running.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    raise BuildError(*_early_exit(running))
                size = send_context(kube, name, fileobj)
                self.output(f"sent the build context ({size} bytes) to {name}")
            follow_logs(kube, name, lambda line: (logs.append(line), self.output(line)))
            done = wait_for_pod(kube, name, timeout=self.timeout, until=lambda p: False)
            return Pushed(result_of(done, logs))
        finally:
            if created_secret:
                _delete(kube, "Secret", secret["metadata"]["name"])
            if created_pod:
                _delete(kube, "Pod", name)


def _container_running(pod: dict) -> bool:
    from ..kube.reasons import container_state

    return bool(container_state(pod, CONTAINER).get("running"))


def _early_exit(pod: dict) -> tuple[str, str]:
    term = _terminated(pod)
    return (f"build pod {pod['metadata']['name']} exited before it received the context "
            f"(exit code {term.get('exitCode')}, {term.get('reason') or 'no reason'})",
            f"see kubectl logs {pod['metadata']['name']}; check the executor image {pod['spec']['containers'][0]['image']}")


def _delete(kube, kind: str, name: str) -> None:
    try:
        kube.delete("v1", kind, name, propagation="Background")
    except Exception as e:  # cleanup must not hide the build's own error
        log.warning("could not delete %s %s: %s", kind.lower(), name, one_line(e))


def send_context(kube, name: str, fileobj, chunk: int = 1 << 16) -> int:
    """Stream the context to the pod's stdin through the attach API; closing the session closes
    stdin (stdinOnce), which kaniko reads as the end of the tar."""
    from kubernetes import client as k8s
    from kubernetes.stream import stream

    core = k8s.CoreV1Api(kube.api)
    try:
        ws = stream(core.connect_get_namespaced_pod_attach, name, kube.namespace, container=CONTAINER,
                    stdin=True, stdout=False, stderr=False, tty=False, _preload_content=False)
    except Exception as e:
        raise BuildError(f"could not attach to build pod {name} to send the build context: {one_line(e)}",
                         hint="the cluster must allow `create pods/attach` for your account and reach the node") from None
    sent = 0
    try:
        while data := fileobj.read(chunk):
            try:
                ws.write_stdin(data)
                sent += len(data)
                ws.update(timeout=0)
            except Exception as e:  # the websocket library's own closed-socket errors
                log.debug("attach session to %s broke: %s", name, one_line(e))
                ws.close()
            if not ws.is_open():
                raise BuildError(f"build pod {name} closed its input after {sent} bytes of the context",
                                 hint=f"see kubectl logs {name}")
    finally:
        ws.close()
    return sent


def follow_logs(kube, name: str, emit: Callable[[str], None]) -> None:
    """Stream the executor's log until it exits (best effort: a broken log stream is not a failed
    build; the pod status decides)."""
    try:
        resp = kube.pod_log(name, container=CONTAINER, follow=True)
    except Exception as e:
        log.debug("no build log for %s: %s", name, one_line(e))
        return
    try:
        buf = b""
        for chunk in resp.stream(4096):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                emit(line.decode(errors="replace"))
        if buf:
            emit(buf.decode(errors="replace"))
    except Exception as e:
        log.debug("build log stream for %s ended: %s", name, one_line(e))
    finally:
        resp.close()

"""The `cluster` builder for real: the kaniko executor (built from the Go module proxy, its image
pushed to the rig registry) runs as a pod on the real node, receives the build context over attach,
builds, pushes, and reports the digest in its termination message; that digest is the manifest's
digest in the registry, and the image it names then runs as a Job on the same node."""
from __future__ import annotations

import subprocess
import uuid

import pytest
import requests

from fairing.builders.cluster import ClusterBuilder
from fairing.context import BuiltImage
from fairing.deployers.template import pod_template
from fairing.deployers import pod
from fairing.deployers.k8s.job import JobDeployer
from fairing.errors import BuildError
from fairing.kube.client import Kube
from tests.test_cluster_builder import KANIKO_VERSION, docker_config, kaniko_image, make_ctx  # noqa: F401 (fixture)

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def host_network(p: dict) -> dict:
    """The rig's registries listen on the machine's loopback only: the executor shares the node's
    network to push there (a cluster's own registry would need nothing of the kind)."""
    p.setdefault("spec", {})["hostNetwork"] = True
    return p


@pytest.fixture(scope="module")
def executor(engine, registry):
    """The executor image, pushed to the registry the node pulls from."""
    local = kaniko_image(engine)
    ref = f"{registry.host}/node-tests/kaniko:{KANIKO_VERSION}"
    r = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"containers-storage:{local}",
                        f"docker://{ref}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return ref


@pytest.fixture(scope="module")
def build_role(real_node):
    """What the README says the cluster builder's account needs (create/get/delete on pods and
    secrets, create on pods/attach), granted to the namespace's least-privilege ServiceAccount the
    way a cluster admin would: a Role and a RoleBinding."""
    from tests.rig.kube import SA_NAME

    kube = Kube(real_node.kubeconfig, namespace=real_node.namespace)
    meta = {"name": "fairing-build", "namespace": real_node.namespace}
    rbac = "rbac.authorization.k8s.io/v1"
    kube.apply({"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": [
        {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]}, field_manager="fairing-test")
    kube.apply({"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fairing-build"},
                "subjects": [{"kind": "ServiceAccount", "name": SA_NAME, "namespace": real_node.namespace}]},
               field_manager="fairing-test")
    yield
    for kind in ("RoleBinding", "Role"):
        kube.delete(rbac, kind, "fairing-build", real_node.namespace)


def build_pods(on_node) -> list[str]:
    """Build pods and their registry Secrets still there (not being deleted)."""
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    out = []
    for kind in ("Pod", "Secret"):
        items = kube.list("v1", kind, on_node.namespace, label_selector="app.kubernetes.io/component=build")["items"]
        out += [f"{kind.lower()}/{o['metadata']['name']}" for o in items if not o["metadata"].get("deletionTimestamp")]
    return out


def gone(on_node, timeout: float = 60) -> list[str]:
    import time

    deadline = time.monotonic() + timeout
    while (left := build_pods(on_node)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_kaniko_builds_on_the_real_node_and_the_image_runs_as_a_job(on_node, executor, registry, build_role,
                                                                    docker_config):
    if on_node.node.external:
        pytest.skip("the executor pushes to the rig's loopback registry through the node's network")
    # A local login for the target registry: the build pod gets it as a Secret (the plain registry
    # ignores it), which must be gone with the pod afterwards.
    docker_config(registry.host, "builder", "pw-" + uuid.uuid4().hex)
    repo = f"node-tests/kaniko-built-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []
    builder = ClusterBuilder(on_node.base, kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace,
                             executor_image=executor, insecure=[registry.host], output=lines.append,
                             mutators=[*on_node.mutators(), host_network])
    ctx = make_ctx("node")
    img = builder.build(ctx, f"{registry.host}/{repo}:v1")
    # kaniko's own output came back through the pod's log
    assert any("Pushing image to" in ln or "Pushed" in ln for ln in lines), lines[-20:]
    head = requests.head(f"{registry.url}/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT}, timeout=30)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == img.digest
    assert any("sent the build context" in ln for ln in lines), lines[:5]
    assert gone(on_node) == []  # the build pod and its Secret are gone

    name = f"kaniko-run-{uuid.uuid4().hex[:6]}"
    built = BuiltImage(ref=img.ref, digest=img.digest, pod_template=pod_template(img.ref, ctx), context=ctx)
    h = JobDeployer(kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace, name=name,
                    mutators=on_node.mutators()).deploy(built)
    try:
        assert h.wait(timeout=300) == "Succeeded"
        assert h.log_text().strip() == "built by kaniko 1.16.0 node"
    finally:
        h.delete()


def test_a_failing_kaniko_build_on_the_real_node_is_a_build_error_with_its_output(on_node, executor, registry, build_role):
    if on_node.node.external:
        pytest.skip("the executor pushes to the rig's loopback registry through the node's network")
    builder = ClusterBuilder(on_node.base, kubeconfig=str(on_node.kubeconfig), namespace=on_node.namespace,
                             executor_image=executor, insecure=[registry.host], output=lambda _: None, cache=False,
                             run=["python3 -c 'raise SystemExit(\"no GPU here\")'"],
                             mutators=[*on_node.mutators(), host_network])
    with pytest.raises(BuildError) as e:
        builder.build(make_ctx("fails", requirements=()), f"{registry.host}/node-tests/kaniko-fails:v1")
    assert "failed" in e.value.message and "no GPU here" in (e.value.hint or ""), (e.value.message, e.value.hint)
    assert gone(on_node) == []


def test_build_pod_options_are_checked_before_anything_is_made():
    from fairing.errors import ConfigError

    with pytest.raises(ConfigError, match="is not callable"):
        ClusterBuilder("python:3.11", mutators=["hostNetwork"])
    b = ClusterBuilder("python:3.11", mutators=[pod.node_selector({"pool": "build"})])
    p, _ = b.manifests(make_ctx(), "registry.example.com/team/x:v1", namespace="team")
    assert p["spec"]["nodeSelector"] == {"pool": "build"} and p["kind"] == "Pod"

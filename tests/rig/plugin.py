"""pytest plugin (loaded with `-p tests.rig.plugin`): the rig's services as session fixtures.

Each fixture starts only what it needs, under the rig's cross-process lock, and leaves services
running for the next session. A service that cannot start is an error, never a skip.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def registry():
    """Plain-HTTP registry: .host "127.0.0.1:5000", .url "http://127.0.0.1:5000"."""
    from .registry import ensure_plain

    return ensure_plain()


@pytest.fixture(scope="session")
def secure_registry():
    """TLS (rig CA) + htpasswd registry: .host .url .username .password .ca_file."""
    from .registry import ensure_secure

    return ensure_secure()


@pytest.fixture(scope="session")
def token_registry():
    """Bearer-token registry (plain HTTP, loopback): .host .url .username .password .realm
    .service, plus .reader_username/.reader_password (pull-only identity)."""
    from .registry import ensure_token

    return ensure_token()


@pytest.fixture(scope="session")
def engine():
    """Podman's Docker API: .docker_host "unix:///run/fairing/podman.sock", .client()."""
    from .engine import ensure_engine

    return ensure_engine()


@pytest.fixture(scope="session")
def s3_server():
    """SeaweedFS's S3 gateway (tests/rig/s3.py): .endpoint "http://127.0.0.1:18333", .pod_endpoint
    (the node's address, for pods), .access_key .secret_key .region, .create_bucket(name),
    .backend(bucket, prefix, scoped=False) -> S3Backend; .scoped_bucket and .scoped_access_key /
    .scoped_secret_key: an identity that may only use that bucket. Waits for a `weed` build that
    scripts/test started in the background (same build lock)."""
    from .s3 import ensure_s3

    return ensure_s3()


@pytest.fixture(scope="session")
def base_image(registry, secure_registry, token_registry, engine):
    """Debian bookworm + Python 3.11: .docker (v2s2) .oci .index (OCI index) .docker_list
    .python "3.11" .python_version .secure .token .digests."""
    from .base import ensure_base_image

    return ensure_base_image(registry, secure_registry, token_registry)


@pytest.fixture
def registry_factory(tmp_path):
    """start(port=None, tls=False, auth=False) -> a private registry, stopped after the test."""
    from .registry import start_registry

    started = []

    def start(**kwargs):
        handle = start_registry(tmp_path, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


# ---- kube hook --------------------------------------------------------------------------------
# The control plane lives in tests/rig/kube.py (owned by the kubernetes helper). Imported lazily
# so sessions that never ask for `kube` do not pay for it (or fail while it is being written).
@pytest.fixture(scope="session")
def kube():
    """Control plane: .kubeconfig (admin), .sa_kubeconfig (namespaced SA), .namespace."""
    import tests.rig.kube

    return tests.rig.kube.control_plane()


@pytest.fixture(scope="session")
def trainer(kube):
    """Kubeflow Trainer v2 + JobSet + Kueue on the control plane (tests/rig/trainer.py):
    .runtime "torch-distributed", .local_queue (1-CPU quota), .namespace."""
    from .trainer import trainer_rig

    return trainer_rig(kube)


@pytest.fixture(scope="session")
def katib(kube):
    """Katib v0.19.0 (tests/rig/katib.py): controller, db-manager + PostgreSQL, the goptuna
    suggestion and the metrics collector, with trials and suggestions on the real node:
    .namespace, .kubeconfig (its least-privilege ServiceAccount), .algorithms."""
    from .katib import katib_rig

    return katib_rig(kube)


@pytest.fixture(scope="session")
def kserve(kube):
    """KServe v0.15.2 (tests/rig/kserve.py): its controller manager (RawDeployment, modelcars on)
    and webhooks, predictors on the real node: .namespace, .kubeconfig (its least-privilege
    ServiceAccount, + ServingRuntimes), .controller_log(). Waits for a build scripts/test started
    in the background (same build lock), or builds it."""
    from .kserve import kserve_rig

    return kserve_rig(kube)


@pytest.fixture(scope="session")
def real_node(kube):
    """The rig's real node (kubelet + containerd): .name, .mutators() puts a pod on it. On a user's
    own cluster (FAIRING_TEST_KUBECONFIG) its nodes are real already and .mutators() is empty."""
    from .node import real_node as ensure

    return ensure()


@pytest.fixture(scope="session")
def prometheus(real_node):
    """The rig's Prometheus (tests/rig/prometheus.py): discovers pods through the API server and
    scrapes those annotated prometheus.io/scrape=true: .url, .query(promql), .targets()."""
    if real_node.external:
        pytest.skip("the rig's Prometheus scrapes pod addresses on this machine's bridge; "
                    "a user's cluster (FAIRING_TEST_KUBECONFIG) needs its own Prometheus")
    from .prometheus import ensure_prometheus

    return ensure_prometheus(real_node.kubeconfig)


@pytest.fixture
def on_node(real_node, registry, base_image):
    """Where real-node tests put their images and pods: .node (real_node), .registry (repo prefix the
    node pulls from), .base (base image ref), .namespace, .kubeconfig (the namespace's least-privilege
    ServiceAccount), .mutators() and .cli_env() (for `fair` subprocesses). Against a user's cluster
    (FAIRING_TEST_KUBECONFIG) set FAIRING_TEST_REGISTRY and FAIRING_TEST_BASE_IMAGE to a registry
    and a Python 3.11 image that cluster can pull, pushed from this machine with your local login."""
    import os
    from types import SimpleNamespace

    from .node import real_node as recheck

    # Per test: the node's health and the `kubernetes` endpoint are re-checked (cheap when fine);
    # something outside the rig deleted that EndpointSlice once mid-session.
    real_node = recheck()
    ext = real_node.external
    reg = os.environ.get("FAIRING_TEST_REGISTRY") if ext else None
    base = os.environ.get("FAIRING_TEST_BASE_IMAGE") if ext else None
    if ext and not (reg and base):
        pytest.fail("FAIRING_TEST_KUBECONFIG needs FAIRING_TEST_REGISTRY and FAIRING_TEST_BASE_IMAGE "
                    "(a registry the cluster pulls from, and a Python 3.11 image in it)")

    def cli_env(**extra):
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("FAIRING_", "DOCKER_")) and k != "KUBECONFIG"}
        for k in ("FAIRING_CACHE", "FAIRING_RIG_RUN_DIR"):
            if k in os.environ:
                keep[k] = os.environ[k]
        return {**keep, "KUBECONFIG": str(real_node.sa_kubeconfig), **real_node.settings_env(), **extra}

    # Where pods keep their outputs: the plain registry by the node's address, which pods and this
    # machine both reach (the loopback name the node pulls images by is not reachable from a pod).
    outputs = os.environ.get("FAIRING_TEST_OUTPUTS") if ext else f"oci+http://{real_node.ip}:5000/node-tests/outputs"
    return SimpleNamespace(node=real_node, registry=reg or f"{registry.host}/node-tests", outputs=outputs,
                           base=base or base_image.docker, namespace=real_node.namespace,
                           kubeconfig=real_node.sa_kubeconfig, admin_kubeconfig=real_node.kubeconfig,
                           mutators=real_node.mutators, cli_env=cli_env)
# ---- end kube hook ----------------------------------------------------------------------------

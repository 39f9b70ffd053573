"""Suite-wide pytest configuration.

Service fixtures (registry, secure_registry, token_registry, engine, base_image, kube) come from
the rig plugin, tests/rig/plugin.py, loaded with `-p tests.rig.plugin` (pyproject addopts).
"""

from __future__ import annotations

import pytest


def pytest_report_header(config):
    from tests.rig.state import rig_dir

    return [f"fairing rig: state and service logs in {rig_dir()} "
            "(`python -m tests.rig env` prints the endpoints, `... down` stops them)"]


# The fast tier (`./scripts/test --fast`): every test that uses none of the rig's services. A test
# is a service test when it asks for one of these fixtures, directly or through another fixture,
# so the marker follows the code and cannot be forgotten.
SERVICE_FIXTURES = {"registry", "secure_registry", "token_registry", "registry_factory", "engine",
                    "base_image", "kube", "s3_server"}


def pytest_configure(config):
    config.addinivalue_line("markers", "service: needs a rig service (registry, engine or API server); "
                                       "set from the fixtures the test uses")
    config.addinivalue_line("markers", "slow: needs no service but takes seconds (installs packages, "
                                       "runs notebooks); left out of the fast tier")


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.service)
    # Tests on the Trainer/JobSet/Kueue controllers run last: scripts/test builds those controllers
    # in the background while the rest of the suite runs (about 15 minutes of Go builds on a fresh
    # machine), and their fixture waits on the same build lock if the build is still going.
    # Katib's controllers build the same way (tests/rig/katib.py) and their tests run last too, as
    # do the S3 tests: SeaweedFS's `weed` is the first build of that background job (~5 minutes).
    # Prometheus is built in the same background job (first, tests/rig/prometheus.py), KServe's
    # (tests/rig/kserve.py) last.
    late = {"trainer", "katib", "s3_server", "prometheus", "kserve"}
    # KServe's build is the last of that job: its tests go last of all.
    items.sort(key=lambda item: (bool(late & set(getattr(item, "fixturenames", ()))),
                                 "kserve" in getattr(item, "fixturenames", ())))
    for item in items:
        if late & set(getattr(item, "fixturenames", ())):
            # The first of them may wait for that background build (a fixture counts in the test's time).
            item.add_marker(pytest.mark.timeout(2700))


# --- fixtures shared by the cluster tests ---------------------------------------------------------
@pytest.fixture
def admin(kube):
    """A client on the tests' kubeconfig and namespace, to look at what a deployer made."""
    from fairing.kube.client import Kube

    return Kube(kube.kubeconfig, namespace=kube.namespace)


@pytest.fixture
def cleanup():
    """cleanup(handle): the handle's workload is deleted after the test, whatever happened."""
    from fairing.errors import DeployError

    handles = []
    yield handles.append
    for h in handles:
        try:
            h.delete(timeout=60)
        except DeployError:
            pass


@pytest.fixture
def limited_namespace(kube, tmp_path):
    """(namespace, the kubeconfig of its least-privilege ServiceAccount): a fresh namespace with the
    rig's fairing Role (tests/rig/kube.py ROLE_RULES) and nothing else, so no other test's grant in
    the shared namespace changes what it may do; deleted after."""
    import uuid

    from tests.rig.kube import SA_NAME, setup_namespace, write_kubeconfig

    if kube.pki is None:
        pytest.skip("needs the rig's own control plane (its CA for a new ServiceAccount kubeconfig)")
    admin = kube.kube()
    ns = f"fairing-limited-{uuid.uuid4().hex[:6]}"
    token = setup_namespace(admin, ns)
    cfg = write_kubeconfig(tmp_path / "sa.kubeconfig", kube.server, kube.pki.ca_crt, user=f"{SA_NAME}-sa",
                           token=token, namespace=ns)
    yield ns, cfg
    admin.delete("v1", "Namespace", ns, propagation="Background")

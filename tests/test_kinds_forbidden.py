"""`fair status/delete/list` under a least-privilege ServiceAccount whose Role does not cover every
kind fairing knows, once those kinds are served: the rig's Role (tests/rig/kube.py ROLE_RULES) in a
namespace of this test's own, with Kubeflow Trainer's CRDs installed (the `trainer` fixture) and no
rule for TrainJobs. They used to stop at the first kind they could not read (Forbidden on
trainjobs); now the kinds the user may not read are skipped, said with --debug (and by `fair list`,
whose list is incomplete), and a name found nowhere says that some kinds could not be searched."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAIR = [sys.executable, "-m", "fairing.cli"]


@pytest.fixture
def limited(trainer, limited_namespace):
    """(namespace, the kubeconfig of its least-privilege ServiceAccount): the rig's fairing Role in a
    namespace of the test's own, nothing for TrainJobs (whose CRDs the trainer fixture installs)."""
    return limited_namespace


def fair(*args, kubeconfig):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FAIRING_", "KUBECONFIG"))},
           "PYTHONPATH": str(ROOT), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([*FAIR, *args], env=env, capture_output=True, text=True, timeout=120)


def endpoint(name: str, ns: str) -> dict:
    """A serving Deployment as fairing labels it (no replicas: nothing needs to run for status)."""
    from fairing.deployers import labels as L

    sel = {L.SERVING: name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {**L.MANAGED, L.APP_NAME: name, L.KIND: "serve"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": sel},
                     "template": {"metadata": {"labels": sel},
                                  "spec": {"containers": [{"name": "model", "image": "example.invalid/none:1"}]}}}}


def test_status_and_delete_skip_the_kinds_the_role_does_not_cover(limited, kube):
    from fairing.kube.client import Forbidden, Kube

    ns, cfg = limited
    # The premise: TrainJobs are served, and this ServiceAccount may not read them.
    with pytest.raises(Forbidden):
        Kube(str(cfg), namespace=ns).get("trainer.kubeflow.org/v1alpha1", "TrainJob", "x")
    admin = kube.kube()
    name = f"ep-{uuid.uuid4().hex[:5]}"
    admin.create(endpoint(name, ns), ns)

    st = fair("status", name, kubeconfig=cfg)
    assert st.returncode == 0 and st.stdout.startswith(f"{name}\t"), st.stdout + st.stderr
    assert "forbidden" not in st.stderr.lower(), st.stderr  # quiet unless asked
    dbg = fair("status", name, "--debug", kubeconfig=cfg)
    assert dbg.returncode == 0, dbg.stderr
    assert f"fair: TrainJobs could not be searched (forbidden) in namespace {ns}: skipped" in dbg.stderr, dbg.stderr

    ls = fair("list", kubeconfig=cfg)
    assert ls.returncode == 0 and name in ls.stdout, ls.stdout + ls.stderr
    assert "TrainJobs could not be searched (forbidden)" in ls.stderr, ls.stderr  # an incomplete list says so

    missing = fair("status", "no-such-endpoint", kubeconfig=cfg)
    err = [ln for ln in missing.stderr.splitlines() if ln.startswith("error:")]
    assert missing.returncode != 0 and len(err) == 1, missing.stderr
    assert err[0] == (f"error: no workload named 'no-such-endpoint' in namespace {ns} among the kinds you may read; "
                      "TrainJobs could not be searched (forbidden)"), missing.stderr

    d = fair("delete", name, kubeconfig=cfg)
    assert d.returncode == 0 and d.stdout.strip() == f"deleted {name}", d.stdout + d.stderr
    assert admin.get("apps/v1", "Deployment", name, ns) is None

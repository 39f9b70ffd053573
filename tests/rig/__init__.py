"""fairing's test rig: real services for tests and benchmarks, provisioned on demand and cached.

    python -m tests.rig up      # start/verify everything (registries, podman API, base image;
                                # --kube, --node, --s3, --prometheus add the control plane, real
                                # node, S3 server, Prometheus scraping the node's annotated pods)
    python -m tests.rig env     # print shell exports for the running rig (eval "$(...)")
    python -m tests.rig down    # stop the rig's services (state under ~/.cache/fairing/rig stays)

pytest loads tests/rig/plugin.py (see pyproject addopts), which exposes the same services as
session fixtures. Importing this package starts nothing.
"""

from __future__ import annotations

from typing import Any


def up(*, base: bool = True, kube: bool = False, node: bool = False, s3: bool = False,
       prometheus: bool = False) -> dict[str, Any]:
    """Ensure every rig service is running and healthy; returns the handles by name."""
    from .base import ensure_base_image
    from .engine import ensure_engine
    from .registry import ensure_plain, ensure_secure, ensure_token
    from .state import rig_lock

    with rig_lock():
        out: dict[str, Any] = {"registry": ensure_plain(), "secure_registry": ensure_secure(),
                               "token_registry": ensure_token(), "engine": ensure_engine()}
        if base:
            out["base_image"] = ensure_base_image(out["registry"], out["secure_registry"],
                                                  out["token_registry"])
    if kube or node or prometheus:
        from . import kube as kube_rig  # owned by the kubernetes helper

        out["kube"] = kube_rig.control_plane()
    if node or prometheus:
        from .node import real_node

        out["node"] = real_node()
    if prometheus:
        from .prometheus import ensure_prometheus

        out["prometheus"] = ensure_prometheus(out["node"].kubeconfig)
    if s3:
        from .s3 import ensure_s3

        out["s3"] = ensure_s3()
    return out


def down() -> list[str]:
    """Stop the shared services the rig started (by pidfile). Cached data is kept."""
    from .engine import stop_engine
    from .registry import stop_shared

    from .prometheus import stop as stop_prometheus
    from .s3 import stop as stop_s3

    stopped = stop_shared()
    if stop_engine():
        stopped.append("podman")
    if stop_s3():
        stopped.append("s3 (seaweedfs)")
    if stop_prometheus():
        stopped.append("prometheus")
    try:
        from . import kube as kube_rig  # owned by the kubernetes helper
    except ImportError:
        return stopped
    from . import katib as katib_rig
    from . import kserve as kserve_rig
    from .node import stop_node

    # Katib first: its webhooks are unregistered and its controller removed through the API
    # server, before the node its controller runs on goes.
    stopped += katib_rig.stop_all()
    stopped += kserve_rig.stop_all()  # its webhooks too: with no manager they would refuse InferenceServices
    stopped += [f"node {name}" for name in stop_node()]  # before the API server its kubelet talks to
    if hasattr(kube_rig, "stop_all"):
        from . import trainer as trainer_rig  # Trainer/JobSet/Kueue controllers use the API server

        trainer_rig.stop_all()
        kube_rig.stop_all()
        stopped.append("kube control plane")
    return stopped

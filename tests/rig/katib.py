"""Katib's CustomResourceDefinitions (Experiment, Suggestion, Trial) on the rig's API server, read
from Katib's own module source (github.com/kubeflow/katib, via the Go module proxy), so rendered
Experiments are validated by Katib's real schema. The Katib controllers (katib-controller,
db-manager, a suggestion service, the metrics collector) are NOT part of the rig yet."""
from __future__ import annotations

from .kube import module_source, wait_established

KATIB = ("github.com/kubeflow/katib", "v0.19.0")
CRD_FILES = ("experiment.yaml", "suggestion.yaml", "trial.yaml")


def crd_manifests() -> list[dict]:
    import yaml

    src = module_source(*KATIB) / "manifests" / "v1beta1" / "components" / "crd"
    docs = []
    for name in CRD_FILES:
        docs += [d for d in yaml.safe_load_all((src / name).read_text()) if d and d.get("kind") == "CustomResourceDefinition"]
    return docs


def ensure_crds(kube) -> list[str]:
    """Apply Katib's CRDs (idempotent) and wait until they are served; returns their names."""
    docs = crd_manifests()
    for d in docs:
        kube.apply(d, field_manager="fairing-rig")
    names = [d["metadata"]["name"] for d in docs]
    wait_established(kube, names)
    return names

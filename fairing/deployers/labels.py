"""The labels and annotations fairing puts on what it creates, defined once: the deployers write
them, `fair list/status` select by them, the local engine's containers carry them too."""
from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "fairing"
MANAGED = {MANAGED_BY: MANAGER}
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
APP_NAME = "app.kubernetes.io/name"
RUN_ID = "fairing.dev/run-id"
DEPLOYER = "fairing.dev/deployer"
NAME = "fairing.dev/name"          # local containers: the workload name
KIND = "fairing.dev/kind"          # the context kind; "serve" marks a model server
MODEL = "fairing.dev/model"        # local model servers: the model name
SERVING = "fairing.dev/serving"    # serving selector label: immutable, so only the name goes in it
IMAGE_ANNOTATION = "fairing.dev/image"
SOURCE_HASH = "fairing.dev/source-hash"  # run records: first 12 hex digits (label values are <= 63 chars)
SOURCE_DIGEST_ANNOTATION = "fairing.dev/source-digest"  # run records: the full sha256:...
FIELD_MANAGER = "fairing"          # server-side apply
# The prometheus.io/* pod annotations: not a Kubernetes API, a convention the usual Prometheus scrape
# config relabels on (README "Monitoring" shows it). Model-server pods carry them, so a Prometheus
# with that config finds every replica by itself.
SCRAPE, SCRAPE_PORT, SCRAPE_PATH = "prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"
METRICS_PATH = "/metrics"


def scrape_annotations(port: int) -> dict[str, str]:
    return {SCRAPE: "true", SCRAPE_PORT: str(port), SCRAPE_PATH: METRICS_PATH}


def is_managed(labels: dict | None) -> bool:
    return (labels or {}).get(MANAGED_BY) == MANAGER


def outputs_secret(run_id: str) -> str:
    """The Secret holding a run's outputs-store credentials (fairing.outputs.wire makes it; the
    handle that sees the run end deletes it; it is owned by the workload either way)."""
    return f"fairing-outputs-{run_id}"

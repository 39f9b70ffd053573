"""Run outputs: whatever a workload writes to $FAIRING_OUTPUT_DIR is kept in the outputs store
(an OCI artifact in the run's registry, an S3 bucket, a PVC, or a local dir) and fetched by run id.

    fairing.outputs_dir()              inside a run: where to write (works outside fairing too)
    fairing.runs.outputs("3fa2c1")     the run's files, fetched to a local dir (a Path)

The in-pod side is fairing.image_runtime.outputs (stdlib only); this package picks the store for a
run (store.py), wires it into the pod (wire.py), and fetches (fetch.py)."""
from __future__ import annotations

from pathlib import Path


def outputs_dir() -> Path:
    """Where this run's outputs go: $FAIRING_OUTPUT_DIR inside a fairing workload, else ./outputs
    (so the same script runs on a laptop with no fairing around). Created if missing."""
    from ..settings import output_dir

    d = Path(output_dir() or "outputs")
    d.mkdir(parents=True, exist_ok=True)
    return d

"""Suite-wide pytest configuration.

Service fixtures (registry, secure_registry, token_registry, engine, base_image, kube) come from
the rig plugin, tests/rig/plugin.py, loaded with `-p tests.rig.plugin` (pyproject addopts).
"""

from __future__ import annotations


def pytest_report_header(config):
    from tests.rig.state import rig_dir

    return [f"fairing rig: state and service logs in {rig_dir()} "
            "(`python -m tests.rig env` prints the endpoints, `... down` stops them)"]

"""A new deployer is one module and one table row: this file is the module (TinyDeployer), the
test adds the row, and everything the pipeline knows about it comes from the class: its alias,
that Kueue can hold it (and where its suspend flag lives), the settings it reads, that its
options are cluster-only. No other module names it."""
from __future__ import annotations

import pytest

from fairing import checks, pipeline, stages
from fairing import settings as settings_mod
from fairing.deployers.k8s.base import KubeDeployer
from fairing.deployers.queue import QUEUE_LABEL
from fairing.errors import ConfigError
from fairing.request import Request, Stage


class TinyDeployer(KubeDeployer):
    api_version = "example.com/v1"
    kind = "Tiny"
    deployer_name = "tiny"
    aliases = ("mini",)
    queue_suspend = ("spec", "control")
    kind_options = ("size",)

    @staticmethod
    def state(obj):
        return "Pending"

    def build(self, name, namespace, meta, template) -> dict:
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta,
                "spec": {"size": self.options.get("size", 1), "template": template}}


@pytest.fixture
def tiny(monkeypatch):
    rows = {**stages.DEPLOYERS, "tiny": stages.Entry(f"{__name__}:TinyDeployer", "cluster")}
    monkeypatch.setattr(stages, "DEPLOYERS", rows)
    monkeypatch.setitem(stages.KINDS, "deployer", rows)


def settings(**values):
    return settings_mod.explicit({"registry": "127.0.0.1:5000/team", "base_image": "python:3.11-slim",
                                  "kubeconfig": None, **values})


def test_the_table_row_and_the_class_are_all_the_pipeline_needs(tiny, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    s = settings(deployer="mini", namespace="team-a", queue="team-queue")  # the alias, from the class
    p = pipeline.plan(Request(str(script), s, deployer=Stage(None, {"size": 3})))
    assert p.deployer.name == "tiny" and p.on_cluster
    # The settings it reads reached it: namespace (a cluster deployer) and queue (it is queueable).
    assert p.deployer.options["namespace"] == "team-a" and p.deployer.options["queue"] == "team-queue"
    [manifest] = pipeline.dry_run(p)["manifests"]
    assert manifest["kind"] == "Tiny" and manifest["spec"]["size"] == 3
    assert manifest["metadata"]["labels"][QUEUE_LABEL] == "team-queue"
    assert manifest["spec"]["control"] == {"suspend": True}  # where its class says Kueue releases it


def test_its_facts_reach_the_checks_and_the_other_deployers_hints(tiny, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    assert stages.aliases()["mini"] == "tiny"
    assert set(TinyDeployer.cluster_only()) <= set(checks.cluster_only())
    with pytest.raises(ConfigError) as e:  # a queue given to a deployer Kueue cannot hold
        pipeline.plan(Request(str(script), settings(deployer="pod", queue="q")))
    assert "tiny" in e.value.hint.split("--deployer", 1)[1]
    # Built from settings by its own classmethod, the same way the plan does it.
    d = TinyDeployer.from_settings(settings(namespace="team-b", cpu="1"), {"size": 2})
    assert d.namespace == "team-b" and d.options == {"size": 2} and len(d.mutators) == 1

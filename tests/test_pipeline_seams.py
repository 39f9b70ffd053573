"""The seams of the one pipeline, each exercised with no service: a facade fills a Request and
`execute` waits as a Wait says; a detached run's handle settles its record when waited on later;
every handle is one Handle with one timeout type; publishing is picked by the pipeline, not by
the builder."""
from __future__ import annotations

import pytest

from fairing import pipeline
from fairing import settings as settings_mod
from fairing.context import BuildContext, BuiltImage
from fairing.deployers.template import pod_template
from fairing.deployers.base import Handle
from fairing.deployers.local import LocalDeployer
from fairing.errors import DeployError, WaitTimeout
from fairing.request import CLEANUP_ON_SUCCESS, Request, Stage, Variant, Wait
from fairing.runhandle import RunHandle


@pytest.fixture
def runs_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRING_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FAIRING_PROGRESS", "0")
    return tmp_path


def script(tmp_path, body: str) -> str:
    path = tmp_path / "job.py"
    path.write_text(body)
    return str(path)


def local_plan(entry, **kw):
    s = settings_mod.explicit({"deployer": "local", "local_mode": "process"})
    return pipeline.plan(Request(entry, s, deployer=Stage("local", {"mode": "process"}), **kw))


def test_a_detached_run_is_settled_when_its_handle_is_waited_on(runs_home, tmp_path):
    import fairing.runs

    p = local_plan(script(tmp_path, "print('loss=0.25')\n"))
    res = pipeline.execute(p)
    assert isinstance(res.handle, RunHandle) and isinstance(res.handle, Handle)
    assert res.handle.name == res.handle.inner.name and res.handle.namespace is None
    assert fairing.runs.get(res.run.id)["status"] == "Deployed"
    assert res.handle.wait(timeout=60) == "Succeeded"
    doc = fairing.runs.get(res.run.id)
    assert doc["status"] == "Succeeded" and doc["metrics"]["loss"] == 0.25


def test_execute_waits_as_the_wait_policy_says(runs_home, tmp_path):
    seen: list[str] = []

    def add(a, b):
        print("step=1")
        return a + b

    s = settings_mod.explicit({"deployer": "local", "local_mode": "process"})
    p = pipeline.plan(Request(add, s, preprocessor=Stage("function"), deployer=Stage("local", {"mode": "process"}),
                              prepare={"args": (2, 3), "kwargs": {}}))
    res = pipeline.execute(p, wait=Wait(on_log=seen.append, result="required", cleanup=CLEANUP_ON_SUCCESS))
    assert (res.status, res.value) == ("Succeeded", 5)
    assert "step=1" in seen


def test_a_variant_adds_a_name_and_mutators_to_the_plans_deployer(tmp_path):
    p = local_plan(script(tmp_path, "print(1)\n"), name="base")
    tagged = []

    def mark(template):
        tagged.append(True)
        return template

    d = pipeline.make_deployer(p, Variant(name="trial-3", mutators=(mark,)))
    assert d.name == "trial-3" and d.mutators[-1] is mark
    assert pipeline.make_deployer(p).name == "base"


def test_every_handle_is_one_handle_and_times_out_with_one_type(tmp_path):
    ctx = BuildContext(files={"main.py": b"import time\ntime.sleep(30)\n"}, entrypoint=("python", "main.py"))
    image = BuiltImage(ref="context:x", digest="", pod_template=pod_template("context:x", ctx), context=ctx)
    h = LocalDeployer(mode="process").deploy(image)
    try:
        assert isinstance(h, Handle)
        with pytest.raises(WaitTimeout) as e:  # a DeployError, as callers catch it
            h.wait(timeout=0.2)
        assert isinstance(e.value, DeployError)
    finally:
        h.delete()


def test_the_pipeline_picks_the_publisher_the_builder_only_makes_the_image(tmp_path, monkeypatch):
    from fairing.publish import pick
    from fairing.publish.registry import Pushed
    from fairing.publish.target import parse

    calls = []

    class Recording:
        name = "rec"

        def target(self, target, ctx=None):
            return target.tagged("t1")

        def image(self, ctx, target):
            calls.append("image")
            return Pushed("sha256:" + "a" * 64)  # what a build that pushed itself returns

        def publish_needs(self):
            return pick.Needs()

        def published(self, built, seconds):
            calls.append("published")
            return built

    ctx = BuildContext(files={}, entrypoint=("true",))
    built = pipeline.build_and_publish(Recording(), ctx, parse("127.0.0.1:5000/team/x"))
    assert calls == ["image", "published"]
    assert built.ref == "127.0.0.1:5000/team/x@sha256:" + "a" * 64 and built.tag == "t1" and built.context is ctx


def test_the_plan_parses_the_target_once(tmp_path):
    s = settings_mod.explicit({"registry": "127.0.0.1:5000/team", "base_image": "python:3.11-slim"})
    p = pipeline.plan(Request(script(tmp_path, "print(1)\n"), s, deployer=Stage("job"), name="x"))
    assert p.target.kind == "registry" and p.target.text == "127.0.0.1:5000/team/fairing-job"

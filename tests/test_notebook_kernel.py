"""The notebook as users live in it: a real ipykernel (driven with jupyter_client) on the rig's real
node. What the cell shows is read from the kernel's iopub stream, as a browser would get it:

- `fairing.config.fn(slow)()` shows the pod's `epoch i` lines while the Job runs, each within 3 s
  of the pod printing it;
- interrupting the kernel (the stop button) deletes the Job and its pod within 30 s and says so in
  one line;
- a RunResult displays as HTML (status, run id, image digest, the commands to follow it)."""
from __future__ import annotations

import os
import queue
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fairing.kube.client import Kube

CHECKOUT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def kernel(on_node, tmp_path):
    """A python3 kernel importing this checkout, configured for the real node by environment
    (registry, base image, namespace, placement), as a user's fairing.yaml would."""
    from jupyter_client.manager import KernelManager

    env = on_node.cli_env(PYTHONPATH=CHECKOUT, FAIRING_REGISTRY=on_node.registry, FAIRING_BASE_IMAGE=on_node.base,
                          FAIRING_NAMESPACE=on_node.namespace, FAIRING_DEPLOYER="job",
                          FAIRING_RUNS=str(tmp_path / "runs.db"))
    env.pop("FAIRING_PROGRESS", None)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, *, timeout: float = 300, on_msg=None) -> list[tuple[float, dict]]:
    """Run `code`; every iopub message of it with the time it arrived, until the kernel is idle."""
    msg_id = kc.execute(code)
    out: list[tuple[float, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append((time.time(), msg))
        if on_msg is not None:
            on_msg(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out
    raise AssertionError(f"cell did not finish within {timeout}s; got {[m['msg_type'] for _, m in out]}")


def streams(msgs, name: str | None = None) -> str:
    return "".join(m["content"]["text"] for _, m in msgs
                   if m["msg_type"] == "stream" and (name is None or m["content"]["name"] == name))


def slow_source(fname: str, seconds: int) -> str:
    return textwrap.dedent(f"""
        import fairing

        def {fname}():
            import time
            for i in range({seconds}):
                print(f"epoch {{i}} at {{time.time():.3f}}", flush=True)
                time.sleep(1)
            return "trained"
    """)


def jobs_named(on_node, prefix: str) -> list[str]:
    kube = Kube(on_node.admin_kubeconfig, namespace=on_node.namespace)
    jobs = [j["metadata"]["name"] for j in kube.list("batch/v1", "Job", on_node.namespace)["items"]]
    pods = [p["metadata"]["name"] for p in kube.list("v1", "Pod", on_node.namespace)["items"]]
    return [f"job/{n}" for n in jobs if n.startswith(prefix)] + [f"pod/{n}" for n in pods if n.startswith(prefix)]


def test_fn_streams_the_pods_output_into_the_cell_while_the_job_runs(kernel, on_node):
    km, kc = kernel
    fname = f"slow_{uuid.uuid4().hex[:6]}"
    execute(kc, slow_source(fname, 8))
    msgs = execute(kc, f"value = fairing.config.fn({fname})()\nprint('value', value)", timeout=400)
    errors = [m["content"] for _, m in msgs if m["msg_type"] == "error"]
    assert not errors, errors
    done_at = msgs[-1][0]
    # When each `epoch i at T` line reached the client, against T, the pod's clock (the same machine).
    seen: dict[int, float] = {}
    for at, m in msgs:
        if m["msg_type"] == "stream":
            for line in m["content"]["text"].splitlines():
                if line.startswith("epoch ") and " at " in line:
                    i, printed = line.split()[1], float(line.split(" at ")[1])
                    seen.setdefault(int(i), at - printed)
    out = streams(msgs)
    assert sorted(seen) == list(range(8)), out
    delays = [seen[i] for i in range(8)]
    print("delay from the pod's print to the cell, per line (s):", [round(d, 2) for d in delays])
    assert max(delays) < 3.0, delays
    # The first line came while the Job still had seconds to run, not with the result at the end.
    first_at = min(at for at, m in msgs if m["msg_type"] == "stream" and "epoch 0" in m["content"]["text"])
    assert done_at - first_at > 6, (done_at - first_at, out)
    assert "value trained" in out
    assert "FAIRING_RESULT" not in out  # the return value's marker line is fairing's, not the user's
    assert jobs_named(on_node, f"fairing-{fname.replace('_', '-')}") == []  # cleaned up after success


def test_interrupting_the_kernel_deletes_the_job_and_says_so(kernel, on_node):
    km, kc = kernel
    fname = f"slow_{uuid.uuid4().hex[:6]}"
    execute(kc, slow_source(fname, 120))
    state = {"interrupted_at": None}

    def interrupt_once_running(msg):
        if state["interrupted_at"] is None and msg["msg_type"] == "stream" and "epoch 1 " in msg["content"]["text"]:
            km.interrupt_kernel()  # what the notebook's stop button does
            state["interrupted_at"] = time.monotonic()

    msgs = execute(kc, f"fairing.config.fn({fname})()", timeout=400, on_msg=interrupt_once_running)
    assert state["interrupted_at"] is not None, streams(msgs)
    errors = [m["content"] for _, m in msgs if m["msg_type"] == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"], errors
    said = [line for line in streams(msgs, "stderr").splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("fairing: interrupted: deleted Job "), streams(msgs)
    assert "interrupted: deleted Job" in errors[0]["evalue"]
    prefix = f"fairing-{fname.replace('_', '-')}"
    deadline = state["interrupted_at"] + 30
    while (left := jobs_named(on_node, prefix)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], left
    print(f"nothing left {time.monotonic() - state['interrupted_at']:.1f}s after the interrupt")
    # The run record says so; the kernel is still usable.
    msgs = execute(kc, "r = fairing.runs.list(last=1)[0]; print(r['status'], r.get('reason'))")
    assert "Failed interrupted" in streams(msgs), streams(msgs)


def test_a_run_result_displays_as_html_with_what_to_follow(kernel, on_node):
    km, kc = kernel
    fname = f"quick_{uuid.uuid4().hex[:6]}"
    execute(kc, textwrap.dedent(f"""
        import fairing

        def {fname}():
            print("lr", 0.1)
            return 0.2
    """))
    msgs = execute(kc, f"res = fairing.config.run({fname}, wait=True)\nres", timeout=400)
    errors = [m["content"] for _, m in msgs if m["msg_type"] == "error"]
    assert not errors, errors
    assert "lr 0.1" in streams(msgs, "stdout")  # what the function printed reached the cell
    result = [m["content"]["data"] for _, m in msgs if m["msg_type"] == "execute_result"]
    assert result, [m["msg_type"] for _, m in msgs]
    data = result[0]
    html, text = data["text/html"], data["text/plain"]
    name = f"fairing-{fname.replace('_', '-')}"
    assert "Succeeded" in html and f"Job {name}" in html and f"{on_node.namespace}/{name}" in html
    assert "@sha256:" in html and "run id" in html
    assert f"fair logs {name}" in html and "fairing.attach(&#x27;" in html  # escaped
    assert "<script" not in html
    assert text.startswith(f"Job {name}") and "status" in text and "Succeeded" in text
    execute(kc, "res.handle.delete()")


def test_kept_on_interrupt_then_attach_streams_the_rest_and_ends_succeeded(kernel, on_node):
    """keep=True leaves the Job running; fairing.attach(NAME).wait() in the same kernel streams its
    later lines into the cell while it runs and returns Succeeded; interrupting that wait leaves
    the workload alone (it was not started by that call)."""
    km, kc = kernel
    fname = f"slow_{uuid.uuid4().hex[:6]}"
    execute(kc, slow_source(fname, 12))
    state = {"sent": False}

    def interrupt_once_running(msg):
        if not state["sent"] and msg["msg_type"] == "stream" and "epoch 1 " in msg["content"]["text"]:
            km.interrupt_kernel()
            state["sent"] = True

    msgs = execute(kc, f"fairing.config.fn({fname}, keep=True)()", timeout=400, on_msg=interrupt_once_running)
    said = [line for line in streams(msgs, "stderr").splitlines() if "interrupted" in line]
    assert len(said) == 1 and "keeps running" in said[0], streams(msgs)
    name = said[0].split("fairing.attach('")[1].split("'")[0]
    assert jobs_named(on_node, name), "kept, yet the Job is gone"
    msgs = execute(kc, f"h = fairing.attach({name!r})\nprint('status', h.wait(timeout=300))", timeout=400)
    errors = [m["content"] for _, m in msgs if m["msg_type"] == "error"]
    assert not errors, errors
    out = streams(msgs)
    later = [int(line.split()[1]) for line in out.splitlines() if line.startswith("epoch ")]
    assert later and max(later) == 11, out  # the rest of the run streamed into this cell
    assert "status Succeeded" in out
    execute(kc, "h.delete()")
    deadline = time.monotonic() + 30
    while jobs_named(on_node, name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs_named(on_node, name) == []

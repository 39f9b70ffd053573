"""What a person sees of a run, with no cluster: how a log is shown (fairing.logview), what an
interrupt does to a local run (Python and `fair train`, in real subprocesses sent a real SIGINT),
and the HTML reprs, executed in a real kernel (nbclient) and rendered to a page by nbconvert."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fairing.logview import LogView, last_state

CHECKOUT = str(Path(__file__).resolve().parents[1])


def view(mode, **kw):
    out: list[str] = []
    return LogView("train-ab12c", mode=mode, write=out.append, note=lambda s: out.append(f"NOTE {s}\n"), **kw), out


def test_a_tqdm_bar_shows_as_its_last_state_not_every_redraw():
    bar = "".join(f"\r{p:3d}%|{'#' * (p // 10):<10}| {p}/100" for p in range(0, 101, 5))
    assert last_state(bar) == ("100%|##########| 100/100", False)
    assert last_state("[node-1] \r 10%\r 20%\r") == ("[node-1]  20%", True)  # prefix kept, still drawing
    v, out = view("plain")
    for line in ["epoch 0", bar, "epoch 1"]:
        v(line)
    assert "".join(out) == "epoch 0\n100%|##########| 100/100\nepoch 1\n"


def test_a_terminal_rewrites_the_bar_in_place_and_ends_it_with_its_final_state():
    v, out = view("terminal", interval=0)
    v(" 10%|#\r")
    v(" 50%|#####\r")
    v("100%|##########")
    v("done")
    text = "".join(out)
    assert text == "\r 10%|#\x1b[K\r 50%|#####\x1b[K\r100%|##########\x1b[K\ndone\n"


def test_a_pipe_gets_every_line_and_no_cap():
    v, out = view("plain", max_bytes=100)
    for i in range(1000):
        v(f"line {i}")
    assert len(out) == 1000 and out[-1] == "line 999\n"


def run_py(code: str, tmp_path: Path, *, interrupt_on: str, timeout: float = 120) -> tuple[int, str, float]:
    """Run `code` in a subprocess, send SIGINT once `interrupt_on` appears in its output; (exit
    code, output, seconds from the interrupt to the exit)."""
    env = {**os.environ, "PYTHONPATH": CHECKOUT, "FAIRING_RUNS": str(tmp_path / "runs.db"),
           "FAIRING_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out, sent = [], None
    deadline = time.monotonic() + timeout
    for line in p.stdout:
        out.append(line)
        if sent is None and interrupt_on in line:
            p.send_signal(signal.SIGINT)
            sent = time.monotonic()
        if time.monotonic() > deadline:
            p.kill()
            break
    rc = p.wait(timeout=60)
    return rc, "".join(out), (time.monotonic() - sent) if sent else -1


SLOW = """
def slow(n):
    import os, time
    print("pid", os.getpid(), flush=True)
    for i in range(n):
        print(f"epoch {i}", flush=True)
        time.sleep(1)
    return n
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_interrupting_fn_stops_the_local_run_and_says_so_in_one_line(tmp_path):
    code = textwrap.dedent("""
        import fairing
    """) + SLOW + textwrap.dedent("""
        try:
            fairing.config.fn(slow, quiet=False, deployer="local", local_mode="process")(120)
        except KeyboardInterrupt as e:
            print("raised KeyboardInterrupt:", e)
            r = fairing.runs.list(last=1)[0]
            print("record", r["status"], r["reason"])
    """)
    rc, out, took = run_py(code, tmp_path, interrupt_on="epoch 1")
    assert rc == 0, out
    said = [ln for ln in out.splitlines() if ln.startswith("fairing: interrupted")]
    assert len(said) == 1 and said[0].startswith("fairing: interrupted: deleted workload fairing-"), out
    assert "raised KeyboardInterrupt: interrupted: deleted workload" in out
    assert "record Failed interrupted; workload fairing-" in out
    pid = int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("pid ")))
    assert gone(pid), f"the function's process {pid} is still running"
    assert "epoch 5" not in out and took < 10, (took, out)


def test_keep_true_leaves_it_running_and_says_how_to_reattach(tmp_path):
    code = "import fairing\n" + SLOW + textwrap.dedent("""
        try:
            fairing.config.fn(slow, quiet=False, keep=True, deployer="local", local_mode="process")(120)
        except KeyboardInterrupt:
            r = fairing.runs.list(last=1)[0]
            print("record", r["status"], r["reason"])
    """)
    rc, out, _ = run_py(code, tmp_path, interrupt_on="epoch 1")
    said = [ln for ln in out.splitlines() if ln.startswith("fairing: interrupted")]
    assert len(said) == 1 and "keeps running" in said[0], out
    assert "fair logs fairing-" in said[0] and " -f" in said[0] and "fairing.attach('fairing-" in said[0]
    assert "record Deployed interrupted; kept running" in out


def test_fair_train_interrupted_deletes_too_and_exits_130(tmp_path):
    (tmp_path / "slow.py").write_text("import time\nfor i in range(120):\n    print('epoch', i, flush=True)\n"
                                      "    time.sleep(1)\n")
    code = "import sys; from fairing.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": CHECKOUT, "FAIRING_RUNS": str(tmp_path / "runs.db"), "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-c", code, "train", "slow.py", "--deployer", "local", "--local-mode", "process"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in p.stdout:
        out.append(line)
        if "epoch 1" in line:
            p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=60)
    text = "".join(out)
    assert rc == 130, text
    assert any(ln.startswith("fair: interrupted: deleted workload fairing-") for ln in text.splitlines()), text
    assert "error: interrupted" in text and "epoch 5" not in text


# --- the reprs, executed in a kernel and rendered by nbconvert --------------------------------------

REPR_CELLS = [
    # a real local run's RunResult
    "import fairing\n"
    "def fit():\n    for i in range(5):\n        print(f'step={i} loss={1 / (i + 1):.3f}')\n    print('loss=0.25')\n"
    "    return {'ok': True}\n"
    "res = fairing.config.run(fit, wait=True, quiet=True, deployer='local', local_mode='process')\nres",
    # a TuneResult with the plot inline
    "from fairing.tune.result import TuneResult, Trial\nfrom fairing.tune.space import loguniform\n"
    "tr = TuneResult('accuracy', 'maximize', {'lr': loguniform(1e-4, 1e-1)}, backend='jobs', experiment='exp-<x>')\n"
    "tr.trials = [Trial(i, f'exp-{i}', {'lr': 10 ** -(i + 1)}, 'Succeeded', value=0.5 + i / 10, seconds=3.0) "
    "for i in range(3)] + [Trial(3, 'exp-3', {'lr': 0.5}, 'Failed', error='<oom> & killed')]\ntr.status = 'Succeeded'\ntr",
    # a runs diff
    "a = {'id': 'aaa111', 'params': {'lr': 0.1}, 'metrics': {'loss': 0.3}, 'image': {'digest': 'sha256:1'}}\n"
    "b = {'id': 'bbb222', 'params': {'lr': '<b>0.2</b>'}, 'metrics': {'loss': 0.2}, 'image': {'digest': 'sha256:2'}}\n"
    "fairing.runs.diff(a, b)",
    # an endpoint not yet created
    "from fairing.serving import PredictionEndpoint\nPredictionEndpoint('model.py:Iris', name='iris', deployer='local')",
    # the run's record read back, with its metrics over steps
    "fairing.runs.get(res.run.id)",
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    d = tmp_path_factory.mktemp("reprs")
    (d / "model.py").write_text("class Iris:\n    def predict(self, x):\n        return x\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in REPR_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "FAIRING_RUNS")}
    os.environ.update(PYTHONPATH=CHECKOUT, FAIRING_RUNS=str(d / "runs.db"))
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(d)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    page, _ = HTMLExporter().from_notebook_node(nb)
    (d / "reprs.html").write_text(page)
    print("rendered page:", d / "reprs.html")
    return nb, page


def outputs(nb, i):
    return [o for o in nb.cells[i].outputs if o.output_type == "execute_result"][0]["data"]


def test_a_run_result_shows_status_run_id_and_how_to_follow(rendered):
    nb, page = rendered
    data = outputs(nb, 0)
    html, text = data["text/html"], data["text/plain"]
    assert "Succeeded" in html and "run id" in html and "fair runs show " in html
    assert "local process" in html and "loss=0.25" in html  # the metric the run printed
    assert "{&#x27;ok&#x27;: True}" in html  # the return value, escaped
    assert text.startswith("workload fairing-") and "Succeeded" in text
    assert "fair runs show" in page


def test_a_tune_result_is_a_table_with_the_plot_inline(rendered):
    nb, page = rendered
    html = outputs(nb, 1)["text/html"]
    assert html.count("<tr>") == 5  # header + 4 trials
    assert "2 ★" in html and "best: trial 2" in html
    assert "&lt;oom&gt; &amp; killed" in html and "<oom>" not in html
    assert "exp-&lt;x&gt;" in html
    assert 'src="data:image/png;base64,iVBOR' in html  # a PNG, inline
    assert 'data:image/png;base64,iVBOR' in page


def test_a_runs_diff_is_a_table(rendered):
    nb, page = rendered
    data = outputs(nb, 2)
    html = data["text/html"]
    assert "run aaa111" in html and "run bbb222" in html
    assert "&lt;b&gt;0.2&lt;/b&gt;" in html and "<b>0.2</b>" not in html
    assert "param lr: 0.1 -> <b>0.2</b>" in data["text/plain"]
    assert "sha256:2" in page


def test_an_endpoint_says_what_it_is(rendered):
    nb, _ = rendered
    data = outputs(nb, 3)
    assert "endpoint iris" in data["text/html"] and "not created" in data["text/html"]
    assert "not created" in data["text/plain"]


def test_a_runs_metrics_over_steps_are_a_small_chart(rendered):
    """The run printed `step=N loss=...` five times: its result and its record read back show loss
    over the steps as a line (an inline SVG), with the first and last values."""
    nb, page = rendered
    for i in (0, 4):
        html = outputs(nb, i)["text/html"]
        assert "metrics over steps" in html and "<svg" in html and "<polyline" in html, i
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", html[html.index("metrics over steps"):])
        assert cells[:4] == ["loss", "5", "1.0", "0.2"], cells  # 5 steps, from 1.0 down to 0.2
        # The line falls: the last point is lower on the page (larger y) than the first.
        pts = re.search(r'points="([^"]+)"', html).group(1).split()
        assert len(pts) == 5 and float(pts[-1].split(",")[1]) > float(pts[0].split(",")[1])
    data = outputs(nb, 4)
    assert data["text/plain"].startswith("{")  # the record is still a dict where there is no HTML
    assert "<polyline" in page


def test_wait_timeout_holds_while_the_log_streams_and_leaves_the_run_running(tmp_path):
    """handle.wait(timeout=3) with the log shown: a workload whose log has gone silent cannot hold
    the wait past its timeout (the log used to be followed to its end first); it raises
    WaitTimeout and the workload keeps running."""
    code = textwrap.dedent("""
        import time
        import fairing
        from fairing.errors import WaitTimeout

        def silent():
            import os, time
            print("pid", os.getpid(), flush=True)
            time.sleep(120)

        res = fairing.config.run(silent, wait=False, deployer="local", local_mode="process")
        h = res.handle
        t = time.monotonic()
        try:
            h.wait(timeout=3, quiet=False)
        except WaitTimeout as e:
            print("timeout after %.1f s:" % (time.monotonic() - t), e)
        print("status", h.status())
        h.delete()
        print("status", h.status())
    """)
    rc, out, _ = run_py(code, tmp_path, interrupt_on="\0never")
    assert rc == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("timeout after"))
    assert 2.9 <= float(line.split()[2]) < 6, out
    assert "did not finish within" in line and "fair logs fairing-" in line
    statuses = [ln.split()[1] for ln in out.splitlines() if ln.startswith("status ")]
    assert statuses[0] == "Running" and statuses[1] != "Running", out
    assert "pid " in out  # its log was shown while waiting


def test_the_keep_on_interrupt_setting_keeps_it_without_keep_true(tmp_path, monkeypatch):
    """The setting (here FAIRING_KEEP_ON_INTERRUPT; `keep_on_interrupt: true` in fairing.yaml) is
    keep=True for every call; keep=False in a call still deletes."""
    monkeypatch.setenv("FAIRING_KEEP_ON_INTERRUPT", "1")
    code = "import fairing\n" + SLOW + textwrap.dedent("""
        try:
            fairing.config.fn(slow, quiet=False, deployer="local", local_mode="process")(120)
        except KeyboardInterrupt:
            print("record", fairing.runs.list(last=1)[0]["reason"])
    """)
    rc, out, _ = run_py(code, tmp_path, interrupt_on="epoch 1")
    said = [ln for ln in out.splitlines() if ln.startswith("fairing: interrupted")]
    assert len(said) == 1 and "keeps running" in said[0], out
    assert "record interrupted; kept running" in out, out
    rc, out, _ = run_py(code.replace('local_mode="process")', 'local_mode="process", keep=False)'), tmp_path,
                        interrupt_on="epoch 1")
    assert "fairing: interrupted: deleted workload fairing-" in out, out

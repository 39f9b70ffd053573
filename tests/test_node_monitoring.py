"""Monitoring on the rig's real node (issue 22): the rig's Prometheus finds a served model's replicas
by Kubernetes service discovery (the prometheus.io/* annotations fairing puts on its pods) and
scrapes each one's /metrics, whose series carry the registered model version; `fair status` adds up
every replica and, during a rollout from one version to the next, says which replica serves which."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

FAIR = [sys.executable, "-m", "fairing.cli"]

TRAIN = textwrap.dedent("""
    import os, sys
    open(os.path.join(os.environ["FAIRING_OUTPUT_DIR"], "model.joblib"), "w").write(sys.argv[2])
    print("accuracy=0.9")
""")
# A version whose weights say "slow" takes a while to load: its first replica stays not ready, so
# the rollout to it stays half done long enough to be looked at.
READER = textwrap.dedent("""
    import os, time

    class Reader:
        def load(self, model_dir):
            self.weights = open(os.path.join(model_dir, "model.joblib")).read()
            if self.weights.startswith("slow"):
                time.sleep(40)

        def predict(self, instances):
            return [self.weights for _ in instances]
""")


def fair(*args, env, cwd, timeout=600):
    return subprocess.run([*FAIR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def eventually(check, *, timeout, what):
    """check() -> (done, value); the value once done, else an AssertionError showing the last value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        done, last = check()
        if done:
            return last
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def test_prometheus_scrapes_every_replica_with_its_model_version_and_status_follows_a_rollout(
        on_node, prometheus, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "model.py").write_text(READER)
    env = on_node.cli_env(FAIRING_RUNS=str(tmp_path / "runs.db"), FAIRING_OUTPUTS=on_node.outputs)
    admin_env = {**env, "KUBECONFIG": str(on_node.admin_kubeconfig)}
    model = f"mon-{uuid.uuid4().hex[:6]}"
    # Two versions, from two runs on this machine that keep their outputs in the node's store.
    runs = []
    for weights in ("fast-v1", "slow-v2"):
        r = fair("train", "train.py", "--local-mode", "process", "--", "--weights", weights, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append(json.loads(fair("runs", "-o", "json", "--last", "1", cwd=tmp_path, env=env).stdout)[0]["id"])
        r = fair("models", "register", model, "--run", runs[-1], "--path", "model.joblib", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
    assert fair("models", "promote", model, "1", cwd=tmp_path, env=env).returncode == 0

    for k, val in env.items():
        if k.startswith("FAIRING_"):
            monkeypatch.setenv(k, val)
    from fairing.serving import PredictionEndpoint

    name = f"node-mon-{uuid.uuid4().hex[:6]}"

    def endpoint():
        return PredictionEndpoint(f"{tmp_path / 'model.py'}:Reader", name=name, base_image=on_node.base,
                                  registry=on_node.registry, deployer="serving", kubeconfig=str(on_node.kubeconfig),
                                  namespace=on_node.namespace, mutators=on_node.mutators(), timeout=300,
                                  out=lambda s: None, model_ref=f"{model}@champion", replicas=2, max_surge=1)

    def status(e=admin_env):
        r = fair("status", name, "-n", on_node.namespace, "-o", "json", cwd=tmp_path, env=e, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    ep = endpoint().create()
    try:
        for _ in range(6):
            assert ep.predict([[1]]) == ["fast-v1"]
        v1 = {"model_version": f"{model}:1", "model_run": runs[0]}

        # Prometheus: both replicas discovered through the API server, scraped on their pod
        # addresses, their series labelled with the version; the six predictions add up.
        sel = f'namespace="{on_node.namespace}",pod=~"{name}-.+"'

        def scraped():
            info = prometheus.query(f"fairing_model_info{{{sel}}}")
            total = prometheus.query(f"sum(fairing_model_requests_total{{{sel},model_version=\"{model}:1\"}})")
            ok = len({s["metric"]["pod"] for s in info}) == 2 and total and float(total[0]["value"][1]) == 6
            return ok, (info if ok else (info, total))

        info = eventually(scraped, timeout=90, what="Prometheus scraped both replicas and the 6 requests")
        assert all(v1.items() <= s["metric"].items() for s in info), info
        pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in ep.handle.pods()}
        assert {s["metric"]["pod"] for s in info} == set(pods)
        # Scraped directly on each pod's address (this machine routes to the node's pod network).
        targets = {t["labels"]["pod"]: t for t in prometheus.targets() if t["labels"].get("pod") in pods}
        assert {p: (t["health"], t["scrapeUrl"]) for p, t in targets.items()} == {
            p: ("up", f"http://{ip}:8080/metrics") for p, ip in pods.items()}

        # fair status: every replica, each naming its version; the sum is the endpoint's traffic.
        st = status()
        t = st["traffic"]
        assert st["status"] == "Ready" and t["requests"] == 6 and not t["mixed"], st
        assert len(t["replicas"]) == 2 and all(v1.items() <= r.items() and r["ready"] for r in t["replicas"]), t
        assert sum(r["requests"] for r in t["replicas"]) == 6
        # The tests' least-privilege ServiceAccount may not use pods/proxy: one replica through the
        # Service, and the output says so. (--deployer: that account may not look at other kinds.)
        text = fair("status", name, "-n", on_node.namespace, "--deployer", "serving", cwd=tmp_path, env=env).stdout
        assert f"model: {model}:1 from run {runs[0]}" in text and "pods/proxy" in text, text

        # A rollout to version 2 (slow to load): mid-way, the old replicas serve v1 and the new one
        # (not ready yet) v2, and status says so per replica.
        assert fair("models", "promote", model, "2", cwd=tmp_path, env=env).returncode == 0
        ep2 = endpoint().create(wait=False)

        def mixed():
            t = status().get("traffic") or {}
            versions = {(r.get("model_version"), r["ready"]) for r in t.get("replicas") or []}
            done = {(f"{model}:1", True), (f"{model}:2", False)} <= versions
            return done, (t if done else versions)

        t = eventually(mixed, timeout=180, what="status shows v1 and v2 replicas during the rollout")
        assert t["mixed"] and t["model_version"] == ""
        text = fair("status", name, "-n", on_node.namespace, cwd=tmp_path, env=admin_env).stdout
        assert "model: differs between replicas" in text and f"(not ready): {model}:2 from run {runs[1]}" in text, text

        ep2.handle.wait(300)
        assert ep2.predict([[1]]) == ["slow-v2"]
        st = status()
        assert st["status"] == "Ready" and not st["traffic"]["mixed"], st
        assert {r["model_version"] for r in st["traffic"]["replicas"]} == {f"{model}:2"}
        def v2_scraped():
            found = prometheus.query(f'fairing_model_info{{{sel},model_version="{model}:2"}}')
            return bool(found), found

        eventually(v2_scraped, timeout=60, what="Prometheus scraped a v2 replica")
    finally:
        ep.delete()

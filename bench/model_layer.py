"""Serving a registered model (issue 22): the version's layer mounted vs today's path, on the rig's
plain registry (loopback) with the local base image:

    python bench/model_layer.py [--size-mib 100] [--runs 3]

Each round makes a new random model of --size-mib (so nothing of it is cached anywhere), keeps it as
a run's output in one repository, registers it into a model registry in another (the register
writes the version's layer: timed, shown apart), then builds and pushes a serving image of that
version (`PredictionEndpoint(..., model_ref=NAME:1).build()`, as `fair deploy --model` does) into a
fresh repository twice:

- mount: the version's layer is mounted from the model registry's repository;
- today: the same build with the layer not used (fairing.models.serve.layer_for made to say no,
  as for a version registered before layers): the files fetched here, checked, tarred, gzipped and
  uploaded.

Model bytes uploaded are read from the registry's own access log (a PUT naming the image's model
layer digest = that layer's size uploaded); all bytes uploaded and the wall time from the build.
The dependency layers are the same in both (installed once, warm) and uploaded into each fresh
repository in both. Targets: model bytes uploaded 0 (vs the model's size today); wall time
<= 0.5x today's. Medians of --runs; PASS/MISS, never asserted."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = textwrap.dedent("""
    import os

    class Reader:
        def load(self, model_dir):
            self.size = os.path.getsize(os.path.join(model_dir, "model.safetensors"))

        def predict(self, instances):
            return [self.size for _ in instances]
""")


def model_dir(d: Path, mib: int) -> Path:
    out = d / f"out-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    block = os.urandom(1 << 20)
    with open(out / "model.safetensors", "wb") as f:
        for i in range(mib):
            f.write(hashlib.sha256(block + i.to_bytes(4, "big")).digest() + block[32:])
    return out


def put_lines(log: Path, mark: int, repo: str) -> list[str]:
    time.sleep(0.3)
    with open(log, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if f'"PUT /v2/{repo}/blobs/uploads/' in line]


def build(py: Path, base: str, target: str, ref: str, log: Path, use_layer: bool, docker_host: str) -> dict:
    import fairing.models.serve as serve
    from fairing.serving import PredictionEndpoint

    real = serve.layer_for
    if not use_layer:
        serve.layer_for = lambda m, t: None
    try:
        mark = log.stat().st_size
        t0 = time.perf_counter()
        ep = PredictionEndpoint(f"{py}:Reader", name="bench", base_image=base, target=target, deployer="local",
                                docker_host=docker_host, model_ref=ref, out=lambda s: None)
        img = ep.build()
        seconds = time.perf_counter() - t0
    finally:
        serve.layer_for = real
    from tests.rig.netutil import request

    repo = target.split("/", 1)[1].rsplit(":", 1)[0]
    host = target.split("/", 1)[0]
    r = request(f"http://{host}/v2/{repo}/manifests/{img.digest}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    manifest = json.loads(r.body)
    model = manifest["layers"][-2]  # the model layer, then the code layer
    uploaded = put_lines(log, mark, repo)
    return {"seconds": seconds, "bytes": img.stats.bytes_uploaded,
            "model_bytes": model["size"] if any(model["digest"][7:] in line for line in uploaded) else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    import tests.rig
    from tests.rig.state import rig_dir

    services = tests.rig.up(base=True)
    host, base = services["registry"].host, services["base_image"].docker
    dh = services["engine"].docker_host  # the local deployer's engine (only made, never used here)
    log = rig_dir() / "registry-plain.log"
    import fairing.models as models
    from fairing.image_runtime import outputs as shim
    from fairing.outputs import store as ostore

    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="fairing-bench-mlayer-") as tmp:
        d = Path(tmp)
        os.environ.update(FAIRING_CACHE=str(d / "cache"), FAIRING_RUNS=str(d / "runs.db"))
        runs_store, model_store = f"oci+http://{host}/bench/mlayer-runs-{tag}", f"oci+http://{host}/bench/mlayer-reg-{tag}"
        os.environ["FAIRING_OUTPUTS"] = model_store
        py = d / "server.py"
        py.write_text(SERVER)
        rows = []
        for i in range(a.runs):
            out = model_dir(d, a.size_mib)
            rid = f"b{tag}{i}"
            shim.save(str(out), ostore.open_backend(ostore.parse(runs_store)), rid, {"id": rid, "status": "Succeeded"})
            t0 = time.perf_counter()
            models.register(f"m{i}", {"id": rid, "status": "Succeeded", "outputs": {"store": runs_store}},
                            store=model_store)
            register_s = time.perf_counter() - t0
            if i == 0:  # untimed: the dependency layers installed into the cache once (as on any
                # machine that has served before), the same for both paths
                build(py, base, f"{host}/bench/mlayer-warm-{tag}:v1", f"m{i}:1", log, use_layer=True, docker_host=dh)
            mount = build(py, base, f"{host}/bench/mlayer-mount-{tag}-{i}:v1", f"m{i}:1", log, use_layer=True, docker_host=dh)
            today = build(py, base, f"{host}/bench/mlayer-today-{tag}-{i}:v1", f"m{i}:1", log, use_layer=False, docker_host=dh)
            rows.append((register_s, mount, today))
            print(f"round {i + 1}: register {register_s:.2f} s | mount {mount['seconds']:.2f} s, "
                  f"{mount['bytes'] / 1e6:.1f} MB up ({mount['model_bytes'] / 1e6:.1f} MB model) | "
                  f"today {today['seconds']:.2f} s, {today['bytes'] / 1e6:.1f} MB up "
                  f"({today['model_bytes'] / 1e6:.1f} MB model)", flush=True)
            for p in out.iterdir():
                p.unlink()
    med = lambda xs: statistics.median(xs)  # noqa: E731
    m_s, t_s = med([r[1]["seconds"] for r in rows]), med([r[2]["seconds"] for r in rows])
    m_mb, t_mb = med([r[1]["model_bytes"] for r in rows]), med([r[2]["model_bytes"] for r in rows])
    m_all, t_all = med([r[1]["bytes"] for r in rows]), med([r[2]["bytes"] for r in rows])
    print(f"\nserving image of a registered {a.size_mib} MiB model into a new repository (median of {a.runs}):")
    print(f"  model bytes uploaded: mount {m_mb / 1e6:.1f} MB vs today {t_mb / 1e6:.1f} MB")
    print(f"  all bytes uploaded:   mount {m_all / 1e6:.1f} MB vs today {t_all / 1e6:.1f} MB "
          f"({m_all / t_all:.3f}x)")
    print(f"  wall time:            mount {m_s:.2f} s vs today {t_s:.2f} s ({m_s / t_s:.2f}x)")
    print(f"  register (writes the layer, once per version): {med([r[0] for r in rows]):.2f} s")
    print(f"target: model bytes uploaded 0 (today {t_mb / 1e6:.0f} MB) ... {'PASS' if m_mb == 0 else 'MISS'}")
    print(f"target: wall time <= 0.5x today's ({m_s / t_s:.2f}x) ... {'PASS' if m_s <= 0.5 * t_s else 'MISS'}")


if __name__ == "__main__":
    main()

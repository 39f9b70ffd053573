"""fairing's model server against the one a KServe user would otherwise run: the `kserve` Python
package's ModelServer (from PyPI) with a custom Model class doing what its sklearn server does
(`get_predict_input` -> `model.predict` -> `get_predict_response`), serving the same scikit-learn
model, on loopback, under the same load generator (`hey`) at the same concurrency.

    python bench/serve.py [-d 8] [-r 2] [-c 8] [--batch-c 32]     (bench/run runs it too)

Both servers run in one virtualenv (`kserve` and its pins: uvicorn with uvloop and httptools, the
same scikit-learn), made with uv under the fairing cache (`venvs/bench-kserve`), so the only
difference is the server code. fairing's runs its own entrypoint (`python model_server.py`,
configured by the environment as in a serving image). KServe's latency logging is switched off
(it logs a line per request); gRPC off; everything else is ModelServer's default (one worker).
`hey` is built once from the Go module proxy into the fairing cache's bin directory.

Cases (each a `hey -z D -c C` run after a warm-up, the two servers interleaved, `-r` rounds,
medians shown):
- V1 JSON, one row per request (`{"instances": [[...4 floats]]}`), concurrency `-c`;
- v2 with the binary tensor extension (`Inference-Header-Content-Length`, one FP64 [1, 4] tensor),
  concurrency `-c`;
- V1 JSON at concurrency `--batch-c` (32): fairing with adaptive batching (max_batch_size 32,
  max_latency_ms 5) against KServe (which has no batching inside ModelServer) and fairing
  without batching.

Targets (issue 23): requests/s >= 1.0x KServe's and p99 <= 1.0x its p99, V1 JSON and v2 binary;
with batching at concurrency 32: >= 2x KServe's requests/s, with p50 no more than the latency
budget (5 ms) above fairing's own unbatched p50. Memory per replica: each server's RSS (and its
peak) after its runs."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FAIRING_CACHE", Path.home() / ".cache" / "fairing"))
VENV = CACHE / "venvs" / "bench-kserve"
BIN = CACHE / "bin"
KSERVE = "kserve==0.21.0"
SKLEARN = "scikit-learn==1.9.1"
BUDGET_MS = 5.0

TRAIN = """
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), "model.joblib")
"""
FAIRING_MODEL = """
import joblib

class Iris:
    def load(self, model_dir):
        self.m = joblib.load(model_dir + "/model.joblib")

    def predict(self, rows):
        return self.m.predict(rows)
"""
KSERVE_SERVER = """
import os, joblib, kserve
from kserve.utils.utils import get_predict_input, get_predict_response

class Iris(kserve.Model):
    def __init__(self, name):
        super().__init__(name)
        self.load()

    def load(self):
        self.m = joblib.load("model.joblib")
        self.ready = True
        return True

    def predict(self, payload, headers=None):
        rows = get_predict_input(payload)
        return get_predict_response(payload, self.m.predict(rows), self.name)

if __name__ == "__main__":
    kserve.ModelServer(http_port=int(os.environ["PORT"]), enable_grpc=False, enable_latency_logging=False,
                       workers=1).start([Iris("iris")])
"""
ROW = [6.8, 2.8, 4.8, 1.4]


def ensure_tools() -> tuple[Path, Path]:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import kserve, sklearn, uvicorn, starlette"], capture_output=True).returncode:
        subprocess.run(["uv", "pip", "install", "-q", "--python", str(py), KSERVE, SKLEARN, "joblib"], check=True)
    hey = BIN / "hey"
    if not hey.exists():
        BIN.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "install", "github.com/rakyll/hey@v0.1.5"], check=True,
                       env={**os.environ, "GOBIN": str(BIN)})
    return py, hey


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (code {proc.returncode}); see its log")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after 60 s")


class Server:
    def __init__(self, what: str, cmd: list[str], cwd: Path, env: dict, ready_path: str, name: str):
        self.what, self.port = what, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        # The log goes to a file: a pipe nobody reads would fill and block a server that logs each request.
        self.log = open(cwd / f"server-{self.port}.log", "w+")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**env, "PORT": str(self.port)}, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        wait_ready(self.url + ready_path, self.proc, what)

    def memory(self) -> tuple[float, float]:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024
        hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024
        return rss, hwm

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bodies(d: Path) -> dict[str, tuple[Path, list[str]]]:
    v1 = d / "v1.json"
    v1.write_text(json.dumps({"instances": [ROW]}))
    header = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": 32}}]}, separators=(",", ":")).encode()
    v2 = d / "v2.bin"
    v2.write_bytes(header + struct.pack("<4d", *ROW))
    return {"v1": (v1, ["-T", "application/json"]),
            "v2": (v2, ["-T", "application/octet-stream", "-H", f"Inference-Header-Content-Length: {len(header)}"])}


def path_of(case: str, name: str) -> str:
    return f"/v1/models/{name}:predict" if case == "v1" else f"/v2/models/{name}/infer"


def check(server: Server, case: str, body: tuple[Path, list[str]]) -> None:
    """One request by hand: the answer must be the model's (class 1 for ROW) before load is put on."""
    data, args = body
    headers = {"Content-Type": args[1]}
    if case == "v2":
        k, v = args[3].split(": ")
        headers[k] = v
    req = urllib.request.Request(server.url + path_of(case, server.name), data=data.read_bytes(), headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        n = r.headers.get("Inference-Header-Content-Length")
    doc = json.loads(raw[:int(n)] if n else raw)
    got = doc["predictions"] if case == "v1" else doc["outputs"][0]["data"]
    if list(got) != [1]:
        raise RuntimeError(f"{server.what} {case}: unexpected answer {doc}")


def hey(hey_bin: Path, server: Server, case: str, body: tuple[Path, list[str]], c: int, seconds: float) -> dict:
    data, args = body
    out = subprocess.run([str(hey_bin), "-z", f"{seconds}s", "-c", str(c), "-m", "POST", "-D", str(data), *args,
                          server.url + path_of(case, server.name)], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"\s(\d+)%+ in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    bad = {k: v for k, v in codes.items() if k != "200"}
    # hey -z cuts the requests in flight when the time is up ("context deadline exceeded"): not errors.
    errors = [e for e in re.findall(r"\[\d+\]\s+(.*)", out.split("Error distribution:")[-1])
              if "Error distribution" in out and "deadline exceeded" not in e]
    if bad or errors:
        raise RuntimeError(f"{server.what} {case}: errors under load: {bad} {errors[:3]}")
    if 99 not in pct or not pct[99]:
        raise RuntimeError(f"{server.what} {case}: too few answers for a p99: {out[:600]}")
    return {"rps": rps, "p50": pct[50], "p99": pct[99]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", type=float, default=8.0, help="seconds per hey run")
    ap.add_argument("-r", type=int, default=2, help="rounds (servers interleaved); medians shown")
    ap.add_argument("-c", type=int, default=8, help="concurrency of the V1/v2 comparison")
    ap.add_argument("--batch-c", type=int, default=32, help="concurrency of the batching comparison")
    a = ap.parse_args()
    py, hey_bin = ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: dict[str, Server] = {}
    try:
        subprocess.run([str(py), "-c", TRAIN], cwd=work, check=True)
        (work / "irismodel.py").write_text(FAIRING_MODEL)
        (work / "kserve_server.py").write_text(KSERVE_SERVER)
        shutil.copy(ROOT / "fairing" / "image_runtime" / "model_server.py", work / "model_server.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRING_")}
        env.update(PYTHONDONTWRITEBYTECODE="1", FAIRING_LOG_LEVEL="WARNING")
        fenv = {**env, "MODEL_NAME": "iris", "FAIRING_MODEL": "irismodel:Iris", "FAIRING_MODEL_DIR": str(work),
                "HOST": "127.0.0.1"}
        servers["kserve"] = Server("KServe ModelServer", [str(py), "kserve_server.py"], work, env,
                                   "/v2/health/ready", "iris")
        servers["fairing"] = Server("fairing", [str(py), "model_server.py"], work, fenv, "/v2/health/ready", "iris")
        servers["fairing+batch"] = Server(
            "fairing, batching", [str(py), "model_server.py"], work,
            {**fenv, "FAIRING_MAX_BATCH_SIZE": str(a.batch_c), "FAIRING_MAX_LATENCY_MS": str(BUDGET_MS)},
            "/v2/health/ready", "iris")
        body = bodies(work)
        for name, s in servers.items():
            for case in ("v1", "v2"):
                check(s, case, body[case])
        plan = [("v1", a.c, ("fairing", "kserve")), ("v2", a.c, ("fairing", "kserve")),
                ("v1", a.batch_c, ("fairing+batch", "kserve", "fairing"))]
        results: dict[tuple, list[dict]] = {}
        for rnd in range(a.r):
            for case, c, who in plan:
                for name in (who if rnd % 2 == 0 else tuple(reversed(who))):
                    try:
                        hey(hey_bin, servers[name], case, body[case], c, 2)  # warm-up
                    except RuntimeError:
                        pass
                    results.setdefault((case, c, name), []).append(hey(hey_bin, servers[name], case, body[case], c, a.d))
        mem = {name: s.memory() for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(case, c, name, key):
        return statistics.median(r[key] for r in results[(case, c, name)])

    print(f"\nscikit-learn LogisticRegression (iris), one row per request, loopback, hey -z {a.d:g}s, "
          f"medians of {a.r} interleaved rounds")
    print(f"{'case':34} {'server':20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    lines = []
    for case, c, who in plan:
        label = {"v1": "V1 JSON", "v2": "v2 binary tensors"}[case] + f", c={c}"
        for name in who:
            print(f"{label:34} {servers[name].what:20} {med(case, c, name, 'rps'):9.0f} "
                  f"{med(case, c, name, 'p50'):8.2f} {med(case, c, name, 'p99'):8.2f}")
    print("\nratios vs KServe (req/s: higher is better; p99: lower is better)")
    for case in ("v1", "v2"):
        rps = med(case, a.c, "fairing", "rps") / med(case, a.c, "kserve", "rps")
        p99 = med(case, a.c, "fairing", "p99") / med(case, a.c, "kserve", "p99")
        label = {"v1": "V1 JSON", "v2": "v2 binary"}[case]
        print(f"  {label:10} c={a.c}: req/s {rps:.2f}x, p50 {med(case, a.c, 'fairing', 'p50') / med(case, a.c, 'kserve', 'p50'):.2f}x, p99 {p99:.2f}x")
        lines.append(f"target: {label} c={a.c}: requests/s >= 1.0x KServe's ({rps:.2f}x) ... {'PASS' if rps >= 1.0 else 'MISS'}")
        lines.append(f"target: {label} c={a.c}: p99 <= 1.0x KServe's ({p99:.2f}x) ... {'PASS' if p99 <= 1.0 else 'MISS'}")
    bc = a.batch_c
    brps = med("v1", bc, "fairing+batch", "rps") / med("v1", bc, "kserve", "rps")
    p50b, p50u = med("v1", bc, "fairing+batch", "p50"), med("v1", bc, "fairing", "p50")
    print(f"  V1 JSON c={bc}, fairing batching (max_batch_size {bc}, max_latency_ms {BUDGET_MS:g}): req/s {brps:.2f}x "
          f"KServe's, {med('v1', bc, 'fairing+batch', 'rps') / med('v1', bc, 'fairing', 'rps'):.2f}x fairing unbatched; "
          f"p50 {p50b:.2f} ms vs {p50u:.2f} ms unbatched")
    lines.append(f"target: batching c={bc}: requests/s >= 2x KServe's ({brps:.2f}x) ... {'PASS' if brps >= 2.0 else 'MISS'}")
    lines.append(f"target: batching c={bc}: p50 within the {BUDGET_MS:g} ms budget of unbatched ({p50b:.2f} vs "
                 f"{p50u:.2f} ms) ... {'PASS' if p50b <= p50u + BUDGET_MS else 'MISS'}")
    print("\nmemory per replica after the runs (RSS / peak RSS)")
    for name, (rss, hwm) in mem.items():
        print(f"  {servers[name].what:20} {rss:6.0f} MB / {hwm:6.0f} MB")
    print()
    for line in lines:
        print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 shared cores; hey shares them with the server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

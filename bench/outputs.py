"""Saving and fetching a run's outputs against ORAS, the OCI artifact CLI, on the rig's plain
registry (loopback), with the same 1 GiB model file:

    python bench/outputs.py [--size-mib 1024] [--runs 3]

- save: the outputs shim's save (fairing/image_runtime/outputs.py, the code that runs in the pod)
  into a fresh repository vs `oras push --plain-http` of the same file into another fresh one;
- re-save: the same unchanged model saved again as a new run: model bytes uploaded (target 0);
- fetch: fairing's fetch of the run's model vs `oras pull --plain-http`.
Medians of --runs; PASS/MISS against the targets (save and fetch <= 1.2x ORAS), never asserted.
ORAS (oras.land/oras v1.3.6) is built once from the Go module proxy into the rig's cache."""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def oras_binary() -> Path:
    from tests.rig.gobuild import go_build

    return go_build("oras", "oras.land/oras", "v1.3.6", "oras.land/oras/cmd/oras", install=True)


def model_file(d: Path, mib: int) -> Path:
    p = d / "model.safetensors"
    block = os.urandom(1 << 20)
    with open(p, "wb") as f:
        for i in range(mib):
            f.write(hashlib.sha256(block + i.to_bytes(4, "big")).digest() + block[32:])  # no two blocks alike
    return p


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from fairing.image_runtime import outputs as shim
    from tests.rig.registry import ensure_plain

    reg = ensure_plain()
    oras = str(oras_binary())

    class Counting(shim.RegistryBackend):
        sent = 0

        def put_blob(self, digest, size, path):
            Counting.sent += size
            super().put_blob(digest, size, path)

    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as tmp:
        tmp = Path(tmp)
        out = tmp / "out"
        out.mkdir()
        model = model_file(out, a.size_mib)
        size = model.stat().st_size
        digest = shim.file_digest(str(model))
        save_f, save_o, fetch_f, fetch_o, resent = [], [], [], [], []
        for i in range(a.runs):
            tag = uuid.uuid4().hex[:8]
            repo_f, repo_o = f"bench-outputs/f-{tag}", f"bench-outputs/o-{tag}"
            be = Counting(reg.url, repo_f)
            save_f.append(timed(lambda: shim.save(str(out), be, "r1", {"id": "r1"})))
            save_o.append(timed(lambda: subprocess.run(
                [oras, "push", "--plain-http", "--disable-path-validation", f"{reg.host}/{repo_o}:run-r1",
                 f"{model.name}:{shim.MODEL_MEDIA_TYPE}"], cwd=out, check=True, capture_output=True)))
            Counting.sent = 0
            shim.save(str(out), be, "r2", {"id": "r2"})  # the same model, a new run
            resent.append(Counting.sent)
            dest_f, dest_o = tmp / f"f{i}", tmp / f"o{i}"
            dest_f.mkdir()
            dest_o.mkdir()
            fetch_f.append(timed(lambda: shim.RegistryBackend(reg.url, repo_f).get_blob(digest, str(dest_f / model.name))))
            fetch_o.append(timed(lambda: subprocess.run(
                [oras, "pull", "--plain-http", "-o", str(dest_o), f"{reg.host}/{repo_o}:run-r1"],
                check=True, capture_output=True)))
            assert shim.file_digest(str(dest_f / model.name)) == digest == shim.file_digest(str(dest_o / model.name))
            for d in (dest_f, dest_o):
                (d / model.name).unlink()
        mf, mo = statistics.median(save_f), statistics.median(save_o)
        gf, go = statistics.median(fetch_f), statistics.median(fetch_o)
        mib = size / (1 << 20)
        print(f"model file: {mib:.0f} MiB, registry {reg.host} (loopback), {a.runs} runs, medians")
        print(f"{'case':<32}{'fairing':>10}{'oras':>10}{'ratio':>8}  target")
        rows = [("save (push) 1 file", mf, mo, 1.2), ("fetch (pull) 1 file", gf, go, 1.2)]
        for what, f, o, target in rows:
            ratio = f / o
            print(f"{what:<32}{f:>9.2f}s{o:>9.2f}s{ratio:>7.2f}x  <= {target}x {'PASS' if ratio <= target else 'MISS'}")
        print(f"{'re-save unchanged model':<32}{max(resent):>9d}B{'':>10}{'':>8}  0 bytes {'PASS' if max(resent) == 0 else 'MISS'}")
        print(f"throughput: save {mib / mf:.0f} MiB/s (oras {mib / mo:.0f}), fetch {mib / gf:.0f} MiB/s (oras {mib / go:.0f})")


if __name__ == "__main__":
    main()

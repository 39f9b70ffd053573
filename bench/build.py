"""Build+push benchmark: fairing's `append` and `docker` builders against `podman build && podman
push` and `crane append`, on the rig's local registry with the local base image.

    python bench/build.py [--iterations 5] [--tools append,docker,podman,crane]

Cases (median of N iterations each), for a small training script with 3 pinned wheel requirements:
  cold    build+push with empty caches: a fresh FAIRING_CACHE dir and a fresh repository (the
          engine builds with --no-cache: the shared engine's store is not ours to wipe);
  change  rebuild+push after a one-line code change (warm caches, same repository);
  noop    rebuild+push of the same code.
`crane append` runs the code-change case only: a user tars the code fresh each time and appends
it to the previous image (dependencies already in the registry), the way ko/crane users do.
Bytes uploaded: `append` reports them (BuiltImage.stats); for the others we count the new blobs
(layers, config, manifest) that landed in the registry's store for the case's repository.
Prints PASS/MISS against the issue's targets; nothing is asserted."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUIREMENTS = ("tqdm==4.66.4", "joblib==1.4.2", "threadpoolctl==3.5.0")
TRAIN = '''"""A tiny training loop: fit y = 3x + 1 by gradient descent, save the model with joblib."""
import joblib
from tqdm import tqdm

NOTE = "{note}"
xs = [i / 100 for i in range(100)]
ys = [3 * x + 1 for x in xs]
w, b = 0.0, 0.0
for epoch in tqdm(range(200), disable=True):
    gw = sum((w * x + b - y) * x for x, y in zip(xs, ys)) / len(xs)
    gb = sum((w * x + b - y) for x, y in zip(xs, ys)) / len(xs)
    w, b = w - 0.5 * gw, b - 0.5 * gb
joblib.dump({{"w": w, "b": b}}, "/tmp/model.joblib")
print(f"trained w={{w:.2f}} b={{b:.2f}} ({{NOTE}})")
'''
CRANE_MODULE = "github.com/google/go-containerregistry/cmd/crane@latest"
TOOLS = ("append", "docker", "podman", "crane")
CASES = ("cold", "change", "noop")


# --- helpers ---------------------------------------------------------------------------------------
def quiet(_line: str) -> None:
    pass


@contextlib.contextmanager
def fairing_cache(path: Path):
    """Point the builders (not the rig, which reads the variable too) at a cache directory."""
    old = os.environ.get("FAIRING_CACHE")
    os.environ["FAIRING_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FAIRING_CACHE", None)
        else:
            os.environ["FAIRING_CACHE"] = old


def write_project(d: Path, note: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.py").write_text(TRAIN.format(note=note))
    (d / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    return d


def make_ctx(d: Path):
    from fairing.context import BuildContext

    return BuildContext(files={"train.py": d / "train.py"}, entrypoint=("python3", "train.py"),
                        requirements=REQUIREMENTS, python="3.11", kind="python")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Store:
    """The registry's filesystem store: which blobs exist, and which a repository links to."""

    def __init__(self, root: Path):
        self.blobs = root / "docker" / "registry" / "v2" / "blobs" / "sha256"
        self.repos = root / "docker" / "registry" / "v2" / "repositories"

    def snapshot(self) -> set[str]:
        if not self.blobs.is_dir():
            return set()
        return {b.name for p in os.scandir(self.blobs) if p.is_dir() for b in os.scandir(p.path)}

    def new_bytes(self, repo: str, before: set[str]) -> int:
        """Bytes of blobs linked from `repo` (layers, config, manifests) that were not stored before."""
        total = 0
        for sub in ("_layers", "_manifests/revisions"):
            d = self.repos / repo / sub / "sha256"
            if not d.is_dir():
                continue
            for link in os.scandir(d):
                if link.name not in before:
                    data = self.blobs / link.name[:2] / link.name / "data"
                    if data.exists():
                        total += data.stat().st_size
        return total


def registry_root() -> Path:
    import yaml

    from tests.rig.state import rig_dir

    cfg = yaml.safe_load((rig_dir() / "registry-plain" / "config.yml").read_text())
    return Path(cfg["storage"]["filesystem"]["rootdirectory"])


def ensure_crane() -> Path | None:
    """crane from the Go module proxy, built once into ~/.cache/fairing/bin."""
    bindir = Path(os.environ.get("FAIRING_CACHE") or Path.home() / ".cache" / "fairing") / "bin"
    crane = bindir / "crane"
    if crane.exists():
        return crane
    if not shutil.which("go"):
        print("crane: skipped (Go is not installed)")
        return None
    print(f"installing crane ({CRANE_MODULE}) into {bindir} (first run only)")
    bindir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(bindir), CGO_ENABLED="0")
    proc = subprocess.run(["go", "install", CRANE_MODULE], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"crane: skipped (go install failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return crane


# --- one build per tool ----------------------------------------------------------------------------
class Bench:
    def __init__(self, services: dict, work: Path, store: Store, crane: Path | None):
        self.registry = services["registry"].host
        self.engine = services["engine"].docker_host
        self.base = services["base_image"].docker
        self.work = work
        self.store = store
        self.crane = crane
        self.run_id = uuid.uuid4().hex[:6]

    def repo(self, tool: str, case: str) -> str:
        return f"bench/{tool}-{case}-{self.run_id}-{uuid.uuid4().hex[:4]}"

    def measure(self, tool: str, project: Path, repo: str, cache: Path, *, cold: bool,
                tag: str = "latest") -> tuple[float, int | None, str]:
        """Build+push `project` to `repo` with `tool`; (seconds, bytes uploaded, digest or '')."""
        before = self.store.snapshot()
        target = f"{self.registry}/{repo}:{tag}"
        ctx = make_ctx(project)
        with fairing_cache(cache):
            t0 = time.perf_counter()
            if tool == "append":
                from fairing.builders.append import AppendBuilder

                img = AppendBuilder(self.base, cache_dir=cache, progress=quiet).build(ctx, target)
                dt = time.perf_counter() - t0
                return dt, img.stats.bytes_uploaded, img.digest
            if tool == "docker":
                from fairing.builders.docker import DockerBuilder

                img = DockerBuilder(self.base, docker_host=self.engine, nocache=cold, output=quiet).build(ctx, target)
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), img.digest
            if tool == "podman":
                # The user's project dir as the docker builder lays it out (pip can't run in the
                # base image, so wheels come from the host); making it is part of the cold time.
                ctx_dir = self.podman_dir(ctx, project)
                build = ["podman", "build", "-q", "-t", target, str(ctx_dir)]
                if cold:
                    build.insert(2, "--no-cache")
                run(build)
                run(["podman", "push", "-q", target])
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), ""
            if tool == "crane":
                stage = project / ".crane"
                (stage / "app").mkdir(parents=True, exist_ok=True)
                shutil.copy2(project / "train.py", stage / "app" / "train.py")
                t0 = time.perf_counter()
                run(["tar", "-czf", str(stage / "code.tar.gz"), "-C", str(stage), "app"])
                out = run([str(self.crane), "append", "--insecure", "-b", self.crane_base, "-f",
                           str(stage / "code.tar.gz"), "-t", target])
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), out.stdout.strip().rsplit("@", 1)[-1]
        raise ValueError(tool)

    def podman_dir(self, ctx, project: Path) -> Path:
        import tarfile

        from fairing.builders.docker import context_file, dockerfile, download_wheels

        deps, pip_wheel = download_wheels(ctx.requirements, "3.11", "amd64")
        out = project / ".podman"
        shutil.rmtree(out, ignore_errors=True)
        with context_file(ctx, dockerfile(ctx, self.base, pip_wheel=pip_wheel), deps) as f:
            with tarfile.open(fileobj=f, mode="r:gz") as tar:
                tar.extractall(out, filter="data")
        return out

    # -- the cases ----------------------------------------------------------------------------------
    def cold(self, tool: str, n: int) -> list[tuple[float, int | None, str]]:
        out = []
        for i in range(n):
            d = write_project(self.work / f"{tool}-cold-{i}", f"cold {i} {self.run_id}")
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.work))
            out.append(self.measure(tool, d, self.repo(tool, "cold"), cache, cold=True))
        return out

    def warm(self, tool: str, n: int) -> dict[str, list]:
        """A warm project: one untimed build, then n one-line changes, then n no-op rebuilds."""
        d = write_project(self.work / f"{tool}-warm", f"v0 {self.run_id}")
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.work))
        repo = self.repo(tool, "warm")
        if tool == "crane":
            # crane appends to the previous image: build it (deps + code) with fairing, untimed.
            self.measure("append", d, repo, cache, cold=False, tag="base")
            self.crane_base = f"{self.registry}/{repo}:base"
            self.measure(tool, d, repo, cache, cold=False)  # first append mounts the base's blobs
        else:
            self.measure(tool, d, repo, cache, cold=False)
        results: dict[str, list] = {"change": [], "noop": []}
        for i in range(n):
            write_project(d, f"v{i + 1} {self.run_id}")  # the one-line change (the NOTE line)
            results["change"].append(self.measure(tool, d, repo, cache, cold=False))
        if tool != "crane":
            for _ in range(n):
                results["noop"].append(self.measure(tool, d, repo, cache, cold=False))
        return results

    def reproducible(self) -> tuple[bool, str, str]:
        """Two append builds of the same project from different directories and fresh caches."""
        digests = []
        for name in ("repro-a", "repro-b"):
            d = write_project(self.work / name, f"repro {self.run_id}")
            os.utime(d / "train.py", (time.time() - 3600 * len(digests), time.time() - 3600 * len(digests)))
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.work))
            digests.append(self.measure("append", d, self.repo("append", name), cache, cold=True)[2])
        return digests[0] == digests[1], digests[0], digests[1]

    def code_change_reference(self, ref_repo: str) -> int:
        """Compressed code layer + config + manifest of the last append image in `ref_repo`."""
        import json

        import requests

        url = f"http://{self.registry}/v2/{ref_repo}/manifests/latest"
        accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        r = requests.get(url, headers={"Accept": accept}, timeout=30)
        r.raise_for_status()
        manifest = json.loads(r.content)
        return manifest["layers"][-1]["size"] + manifest["config"]["size"] + len(r.content)


# --- main ------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", "-n", type=int, default=5, help="iterations per case (median reported)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    args = p.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        p.error(f"unknown tools: {', '.join(sorted(unknown))}")

    import tests.rig

    print("starting the rig (registry, Podman API, base image)...", flush=True)
    services = tests.rig.up(base=True)
    store = Store(registry_root())
    crane = ensure_crane() if "crane" in tools else None
    if "crane" in tools and crane is None:
        tools.remove("crane")
    work = Path(tempfile.mkdtemp(prefix="fairing-bench-"))
    bench = Bench(services, work, store, crane)
    if {"docker", "podman"} & set(tools):
        run(["podman", "pull", "-q", bench.base])  # the engines start from a local base, like append's HEADs
    n = args.iterations
    print(f"base image {bench.base}; requirements {', '.join(REQUIREMENTS)}; {n} iterations per case", flush=True)

    results: dict[tuple[str, str], list] = {}
    try:
        for tool in tools:
            t0 = time.perf_counter()
            if tool != "crane":
                results[(tool, "cold")] = bench.cold(tool, n)
            for case, rows in bench.warm(tool, n).items():
                if rows:
                    results[(tool, case)] = rows
            print(f"  {tool}: done in {time.perf_counter() - t0:.1f} s", flush=True)
        same, d1, d2 = bench.reproducible() if "append" in tools else (None, "", "")
        ref_bytes = None
        if "append" in tools:
            # The reference for "bytes for a code change": what the last append change really needs.
            ref_repo = next(r for r in store.repos.joinpath("bench").iterdir()
                            if r.name.startswith(f"append-warm-{bench.run_id}"))
            ref_bytes = bench.code_change_reference(f"bench/{ref_repo.name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if {"docker", "podman"} & set(tools):  # drop this run's tags from the shared engine
            names = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
            mine = [n for n in names if f"/bench/" in n and f"-{bench.run_id}-" in n]
            if mine:
                subprocess.run(["podman", "rmi", "-f", *mine], capture_output=True)

    def med(tool: str, case: str, idx: int) -> float | None:
        rows = results.get((tool, case))
        vals = [r[idx] for r in rows or () if r[idx] is not None]
        return statistics.median(vals) if vals else None

    width = 12
    print()
    print(f"{'seconds (median of %d)' % n:28}" + "".join(f"{t:>{width}}" for t in tools))
    labels = {"cold": "cold build+push", "change": "code change rebuild+push", "noop": "no-op rebuild+push"}
    for case in CASES:
        cells = [med(t, case, 0) for t in tools]
        print(f"{labels[case]:28}" + "".join(f"{('%.2f s' % c) if c is not None else 'n/a':>{width}}" for c in cells))
    print(f"{'bytes uploaded (median)':28}")
    for case in CASES:
        cells = [med(t, case, 1) for t in tools]
        print(f"{labels[case]:28}" + "".join(f"{fmt_bytes(c) if c is not None else 'n/a':>{width}}" for c in cells))
    if "append" in tools:
        print(f"{'time ratio vs append':28}")
        for case in CASES:
            base = med("append", case, 0)
            cells = []
            for t in tools:
                v = med(t, case, 0)
                cells.append(f"{v / base:.1f}x" if v is not None and base else "n/a")
            print(f"{labels[case]:28}" + "".join(f"{c:>{width}}" for c in cells))

    print()
    if same is not None:
        print(f"reproducible: two append builds from different directories -> "
              f"{'identical digests' if same else 'DIFFERENT digests'} ({d1[:19]}...{'' if same else ' vs ' + d2[:19] + '...'}) "
              f"... {'PASS' if same else 'MISS'}")
    change = med("append", "change", 0)
    targets = []
    if change is not None:
        targets.append((f"code-change rebuild+push < 0.5 s (append: {change:.2f} s)", change < 0.5))
        pod = med("podman", "change", 0)
        if pod is not None:
            targets.append((f">= 10x faster than podman build && push ({pod / change:.1f}x)", pod / change >= 10))
        cr = med("crane", "change", 0)
        if cr is not None:
            targets.append((f"no slower than crane append ({change:.2f} s vs {cr:.2f} s)", change <= cr))
        sent = med("append", "change", 1)
        if sent is not None and ref_bytes:
            targets.append((f"code-change bytes within 1.2x of code layer+config+manifest "
                            f"({fmt_bytes(sent)} vs {fmt_bytes(ref_bytes)}, {sent / ref_bytes:.2f}x)", sent <= 1.2 * ref_bytes))
    for text, ok in targets:
        print(f"target: {text} ... {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

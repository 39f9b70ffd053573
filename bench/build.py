"""Build+push benchmark: fairing's `append` and `docker` builders against `podman build && podman
push`, kaniko and `crane append`, on the rig's local registry with the local base image, for a
tiny and a heavy (numpy, pandas, scikit-learn, scipy) requirement set; plus install-at-start
(pip install when the container starts) against a prebuilt image.

    python bench/build.py [-n 3] [--heavy-n 1] [--sets tiny,heavy] [--tools append,docker,podman,kaniko,crane] [--no-node] [--cold-only]

Cases (median of N iterations each):
  cold    build+push with empty caches: a fresh FAIRING_CACHE dir and a fresh repository (the
          engines build with --no-cache: the shared engine's store is not ours to wipe);
  coldpyc append only: the same, but the fresh cache starts with the wheels' bytecode store too
          (what any earlier build of any project that used these wheels leaves; layers re-made);
  change  rebuild+push after a one-line code change (warm caches, same repository);
  noop    rebuild+push of the same code;
  pin     heavy set only: scikit-learn 1.5.2 -> 1.5.1, from a warm build of the heavy set;
  add     one package added (heavy: + tqdm, tiny: + six), from a warm build.
Each iteration of change/noop/pin/add starts from its own warm build (untimed) in a fresh cache
and repository, so no iteration finds the previous one's result. Wheels come from a warm local
wheel cache (as after any earlier build that used them), resolution asks the index (uv).
kaniko runs the heavy cold case; `crane append` the change and no-op cases (the user tars the code
and appends it to the previous image, the way ko/crane users do).
Bytes uploaded: `append` reports them (BuiltImage.stats); for the others we count the new blobs
(layers, config, manifest) that landed in the registry's store for the case's repository.
Prints times, ratios, bytes, append's time split and PASS/MISS against the issue's targets;
nothing is asserted."""
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = {
    "tiny": ("tqdm==4.66.4", "joblib==1.4.2", "threadpoolctl==3.5.0"),
    "heavy": ("numpy==2.1.3", "pandas==2.2.3", "scikit-learn==1.5.2", "scipy==1.14.1"),
}
IMPORTS = {"tiny": "import joblib, tqdm", "heavy": "import numpy, pandas, sklearn, scipy"}
PIN = {"heavy": ("scikit-learn==1.5.2", "scikit-learn==1.5.1")}
ADD = {"heavy": "tqdm==4.66.4", "tiny": "six==1.16.0"}
TRAIN = '''"""A tiny training loop: fit y = 3x + 1 by gradient descent."""
{imports}
print("training started", flush=True)
NOTE = "{note}"
xs = [i / 100 for i in range(100)]
ys = [3 * x + 1 for x in xs]
w, b = 0.0, 0.0
for epoch in range(200):
    gw = sum((w * x + b - y) * x for x, y in zip(xs, ys)) / len(xs)
    gb = sum((w * x + b - y) for x, y in zip(xs, ys)) / len(xs)
    w, b = w - 0.5 * gw, b - 0.5 * gb
print(f"trained w={{w:.2f}} b={{b:.2f}} ({{NOTE}})")
'''
CRANE_MODULE = "github.com/google/go-containerregistry"
CRANE_VERSION = "v0.20.2"
TOOLS = ("append", "docker", "podman", "kaniko", "crane")
CASES = ("cold", "coldpyc", "change", "noop", "pin", "add")
LABELS = {"cold": "cold build+push", "coldpyc": "cold, bytecode stored", "change": "code change", "noop": "no-op rebuild",
          "pin": "one pin changed", "add": "one package added"}


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


@dataclass
class Project:
    dir: Path
    set: str
    requirements: tuple[str, ...]

    def write(self, note: str) -> "Project":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "train.py").write_text(TRAIN.format(imports=IMPORTS[self.set], note=note))
        (self.dir / "requirements.txt").write_text("\n".join(self.requirements) + "\n")
        return self

    def ctx(self):
        from fairing.context import BuildContext

        return BuildContext(files={"train.py": self.dir / "train.py"}, entrypoint=("python3", "train.py"),
                            requirements=self.requirements, python="3.11", kind="python")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{(proc.stderr or '')[-2000:]}")
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


def tools_dir() -> Path:
    from tests.rig.state import cache_dir

    return cache_dir() / "bin"


def ensure_crane() -> Path | None:
    """crane from the Go module proxy, built once into ~/.cache/fairing/bin. A throwaway module
    that requires the exact version (the proxy here refuses `@latest`'s version-list query)."""
    crane = tools_dir() / f"crane-{CRANE_VERSION}"
    if crane.exists():
        return crane
    if not shutil.which("go"):
        print("crane: skipped (Go is not installed)")
        return None
    print(f"building crane {CRANE_VERSION} into {crane.parent} (first run only)", flush=True)
    crane.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(prefix="crane-build-") as work:
        try:
            for args in (["mod", "init", "fairing.local/crane"], ["mod", "edit", f"-require={CRANE_MODULE}@{CRANE_VERSION}"]):
                run(["go", *args], cwd=work, env=env)
            Path(work, "tools.go").write_text(f'//go:build tools\npackage tools\nimport _ "{CRANE_MODULE}/cmd/crane"\n')
            run(["go", "mod", "tidy"], cwd=work, env=env)
            tmp = crane.with_name(f".{crane.name}.{uuid.uuid4().hex[:6]}")
            run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), f"{CRANE_MODULE}/cmd/crane"], cwd=work, env=env)
            tmp.rename(crane)
        except RuntimeError as e:
            print(f"crane: skipped (build failed: {str(e).splitlines()[-1:]})")
            return None
    return crane


def ensure_kaniko(engine) -> str | None:
    """The executor image the cluster-builder tests use (built from the Go module proxy once)."""
    try:
        from tests.test_cluster_builder import kaniko_image

        return kaniko_image(engine)
    except BaseException as e:  # pytest.skip raises a BaseException subclass
        print(f"kaniko: skipped ({type(e).__name__}: {str(e).splitlines()[:1]})")
        return None


# --- one build per tool ----------------------------------------------------------------------------
class Bench:
    def __init__(self, services: dict, work: Path, store: Store, crane: Path | None, kaniko: str | None):
        self.registry = services["registry"].host
        self.engine = services["engine"]
        self.base = services["base_image"].docker
        self.work = work
        self.store = store
        self.crane = crane
        self.kaniko = kaniko
        self.run_id = uuid.uuid4().hex[:6]
        self.wheels = work / "wheel-store"  # the warm wheel cache every fresh cache starts with
        self.pycs = work / "bytecode-store"  # the wheels' compiled bytecode, for the coldpyc case
        self.phases: dict[tuple[str, str], list[dict]] = {}
        self.pin_bytecode: list[int] = []  # bytes of the re-pinned package's bytecode layer, per pin build

    def bytecode_layer_bytes(self, repo: str, digest: str, package: str) -> int:
        """The size of the bytecode layer that follows `package`'s install layer in an image (0: none)."""
        import requests

        accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        m = requests.get(f"http://{self.registry}/v2/{repo}/manifests/{digest}", headers={"Accept": accept}, timeout=30).json()
        config = requests.get(f"http://{self.registry}/v2/{repo}/blobs/{m['config']['digest']}", timeout=30).json()
        lines = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
        for i, line in enumerate(lines[:-1]):
            if line.startswith("fairing: install") and package in line and lines[i + 1].startswith("fairing: bytecode of"):
                return m["layers"][i + 1]["size"]
        return 0

    def repo(self, tool: str, case: str) -> str:
        return f"bench/{tool}-{case}-{self.run_id}-{uuid.uuid4().hex[:4]}"

    def fresh_cache(self, bytecode: bool = False) -> Path:
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.work))
        if self.wheels.is_dir():
            shutil.copytree(self.wheels, cache / "wheels", copy_function=os.link)
        if bytecode and self.pycs.is_dir():
            shutil.copytree(self.pycs, cache / "bytecode", copy_function=os.link)
        return cache

    def warm_wheels(self, sets: list[str]) -> None:
        """Download every wheel the cases use into the shared wheel store, and compile the sets'
        own wheels into the bytecode store (untimed)."""
        from fairing.builders.deps import install_layers, platform_tags
        from fairing.builders.deps.bytecode import interpreter
        from fairing.oci.cache import Cache

        scratch = Path(tempfile.mkdtemp(prefix="warm-", dir=self.work))
        for s in sets:
            for reqs in (SETS[s], requirements(s, "pin"), requirements(s, "add")):
                if reqs:
                    install_layers(list(reqs), python="3.11", tags=platform_tags({"architecture": "amd64"}), cache=Cache(scratch),
                                   interp=interpreter("3.11") if reqs == SETS[s] else None)
        shutil.move(str(scratch / "wheels"), self.wheels)
        if (scratch / "bytecode").is_dir():
            shutil.move(str(scratch / "bytecode"), self.pycs)
        shutil.rmtree(scratch, ignore_errors=True)

    def measure(self, tool: str, project: Project, repo: str, cache: Path, *, cold: bool, case: str = "",
                tag: str = "latest") -> tuple[float, int | None, str]:
        """Build+push `project` to `repo` with `tool`; (seconds, bytes uploaded, digest or '')."""
        result = self._measure(tool, project, repo, cache, cold=cold, case=case, tag=tag)
        if case:  # raw figures as they come, so a late failure loses nothing
            print(f"    {project.set} {tool} {case}: {result[0]:.2f} s, {fmt_bytes(result[1])}", flush=True)
        return result

    def _measure(self, tool: str, project: Project, repo: str, cache: Path, *, cold: bool, case: str = "",
                 tag: str = "latest") -> tuple[float, int | None, str]:
        before = self.store.snapshot()
        target = f"{self.registry}/{repo}:{tag}"
        ctx = project.ctx()
        with fairing_cache(cache):
            t0 = time.perf_counter()
            if tool == "append":
                from fairing.builders.append import AppendBuilder

                img = AppendBuilder(self.base, cache_dir=cache, progress=quiet).build(ctx, target)
                dt = time.perf_counter() - t0
                if case:
                    self.phases.setdefault((project.set, case), []).append(dict(img.stats.phases))
                return dt, img.stats.bytes_uploaded, img.digest
            if tool == "docker":
                from fairing.builders.docker import DockerBuilder

                img = DockerBuilder(self.base, docker_host=self.engine.docker_host, nocache=cold, output=quiet).build(ctx, target)
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), img.digest
            if tool == "podman":
                # The user's project dir as the docker builder lays it out (pip can't run in the
                # base image, so wheels come from the host); making it is part of the time.
                ctx_dir = self.podman_dir(ctx, project)
                build = ["podman", "build", "-q", "-t", target, str(ctx_dir)]
                if cold:
                    build.insert(2, "--no-cache")
                run(build)
                run(["podman", "push", "-q", target])
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), ""
            if tool == "kaniko":
                dt = self.run_kaniko(ctx, target)
                return dt, self.store.new_bytes(repo, before), ""
            if tool == "crane":
                stage = project.dir / ".crane"
                (stage / "app").mkdir(parents=True, exist_ok=True)
                shutil.copy2(project.dir / "train.py", stage / "app" / "train.py")
                t0 = time.perf_counter()
                run(["tar", "-czf", str(stage / "code.tar.gz"), "-C", str(stage), "app"])
                out = run([str(self.crane), "append", "--insecure", "-b", self.crane_base, "-f",
                           str(stage / "code.tar.gz"), "-t", target])
                dt = time.perf_counter() - t0
                return dt, self.store.new_bytes(repo, before), out.stdout.strip().rsplit("@", 1)[-1]
        raise ValueError(tool)

    def podman_dir(self, ctx, project: Project) -> Path:
        import tarfile

        from fairing.builders.docker import context_file, dockerfile, download_wheels

        deps, pip_wheel = download_wheels(ctx.requirements, "3.11", "amd64")
        out = project.dir / ".podman"
        shutil.rmtree(out, ignore_errors=True)
        with context_file(ctx, dockerfile(ctx, self.base, pip_wheel=pip_wheel), deps) as f:
            with tarfile.open(fileobj=f, mode="r:gz") as tar:
                tar.extractall(out, filter="data")
        return out

    def run_kaniko(self, ctx, target: str) -> float:
        """The executor in Podman with the cluster builder's pod args, context on stdin (as the
        cluster-builder tests run it); timed from making the context to the pushed digest."""
        from fairing.builders.cluster import ClusterBuilder
        from fairing.builders.docker import context_file, dockerfile, download_wheels

        t0 = time.perf_counter()
        pod, _ = ClusterBuilder(self.base).manifests(ctx, target, namespace="bench", with_secret=False)
        args = pod["spec"]["containers"][0]["args"]
        deps, pip_wheel = download_wheels(ctx.requirements, "3.11", "amd64")
        with context_file(ctx, dockerfile(ctx, self.base, pip_wheel=pip_wheel), deps) as f:
            context = f.read()
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
        proc = subprocess.run(["podman", "run", "--rm", "-i", "--network=host", self.kaniko, *args],
                              input=context, capture_output=True, timeout=1800, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"kaniko failed: {proc.stderr.decode()[-1500:]}")
        return time.perf_counter() - t0

    # -- the cases ----------------------------------------------------------------------------------
    def cold(self, tool: str, s: str, n: int, case: str = "cold") -> list:
        out = []
        for i in range(n):
            p = Project(self.work / f"{tool}-{s}-{case}-{i}", s, SETS[s]).write(f"{case} {i} {self.run_id}")
            cache = self.fresh_cache(bytecode=case == "coldpyc")
            out.append(self.measure(tool, p, self.repo(tool, case), cache, cold=True, case=case))
        return out

    def warm(self, tool: str, s: str, n: int) -> dict[str, list]:
        """Per iteration: a warm build (untimed) in a fresh cache and repository, then a one-line
        change, a no-op rebuild, a pin change and an added package, each timed."""
        results: dict[str, list] = {c: [] for c in CASES[1:]}
        for i in range(n):
            p = Project(self.work / f"{tool}-{s}-warm-{i}", s, SETS[s]).write(f"v0 {i} {self.run_id}")
            cache = self.fresh_cache()
            repo = self.repo(tool, f"{s}-warm")
            if tool == "crane":
                # crane appends to the previous image: build it (deps + code) with fairing, untimed.
                self.measure("append", p, repo, cache, cold=False, tag="base")
                self.crane_base = f"{self.registry}/{repo}:base"
                self.measure(tool, p, repo, cache, cold=False)  # the first append mounts the base's blobs
            else:
                self.measure(tool, p, repo, cache, cold=False)
            p.write(f"v1 {i} {self.run_id}")  # the one-line change (the NOTE line)
            results["change"].append(self.measure(tool, p, repo, cache, cold=False, case="change"))
            results["noop"].append(self.measure(tool, p, repo, cache, cold=False, case="noop"))
            if tool == "crane":
                continue
            for case in ("pin", "add"):
                reqs = requirements(s, case)
                if reqs is None:
                    continue
                q = Project(p.dir, s, reqs).write(f"v1 {i} {self.run_id}")
                # The shared engine keeps its build cache across runs (not ours to wipe): without
                # --no-cache a set it built before (an earlier iteration or run) would be a cache
                # hit. A changed requirement set re-runs the install step anyway.
                results[case].append(self.measure(tool, q, repo, cache, cold=tool in ("docker", "podman"), case=case))
                if tool == "append" and case == "pin":
                    self.pin_bytecode.append(self.bytecode_layer_bytes(repo, results[case][-1][2], PIN[s][1]))
                Project(p.dir, s, SETS[s]).write(f"v1 {i} {self.run_id}")
        return {k: v for k, v in results.items() if v}

    def reproducible(self, s: str) -> tuple[bool, str, str]:
        """Two append builds of the same project from different directories and fresh caches."""
        digests = []
        for name in ("repro-a", "repro-b"):
            p = Project(self.work / f"{s}-{name}", s, SETS[s]).write(f"repro {self.run_id}")
            os.utime(p.dir / "train.py", (time.time() - 3600 * len(digests), time.time() - 3600 * len(digests)))
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=self.work))  # no shared wheels either
            digests.append(self.measure("append", p, self.repo("append", name), cache, cold=True)[2])
        return digests[0] == digests[1], digests[0], digests[1]

    # -- install at start vs prebuilt ---------------------------------------------------------------
    def first_line(self, cmd: list[str]) -> float:
        """Seconds from `podman run` to the training code's first line."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if "training started" in line:
                    return time.perf_counter() - t0
            raise RuntimeError(f"no training line from {' '.join(cmd[:6])}... (exit {proc.wait()})")
        finally:
            proc.stdout.close()
            proc.wait(timeout=600)

    def install_at_start(self, s: str, n: int) -> tuple[list[float], list[float]]:
        from fairing.builders.docker import download_wheels

        p = Project(self.work / f"start-{s}", s, SETS[s]).write(f"start {self.run_id}")
        cache = self.fresh_cache()
        repo = self.repo("append", f"{s}-prebuilt")
        _, _, digest = self.measure("append", p, repo, cache, cold=False)
        image = f"{self.registry}/{repo}@{digest}"
        wheel_dir, pip_name = download_wheels((), "3.11", "amd64")  # the base image has no pip: mount its wheel
        pip_wheel = wheel_dir / pip_name
        prebuilt, at_start = [], []
        for _ in range(n):
            subprocess.run(["podman", "rmi", "-f", image], capture_output=True)  # pull included, as on a fresh node
            prebuilt.append(self.first_line(["podman", "run", "--rm", "--network=host", "--tls-verify=false", image]))
            script = (f"python3 /pip.whl/pip install --no-cache-dir --disable-pip-version-check -q --target /tmp/site "
                      f"{' '.join(SETS[s])} && PYTHONPATH=/tmp/site exec python3 /app/train.py")
            ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")  # a TLS proxy's CA, as the host's pip uses
            trust = ["-v", f"{ca}:/etc/pip-ca.pem:ro", "-e", "PIP_CERT=/etc/pip-ca.pem"] if ca and Path(ca).is_file() else []
            at_start.append(self.first_line(["podman", "run", "--rm", "--network=host", *trust,
                                             "-v", f"{pip_wheel}:/pip.whl:ro", "-v", f"{p.dir}:/app:ro",
                                             self.base, "sh", "-c", script]))
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True)
        return prebuilt, at_start

    def install_at_start_node(self, s: str, n: int) -> tuple[list[float], list[float]]:
        """The same on the rig's real node (kubelet + containerd), as a Job each: the prebuilt
        image (removed from containerd first, so the pull is timed), against a stock image that
        has pip and the code and pip-installs the set when the pod starts (the Kubeflow SDK's way).
        Both pods share the host's network, as the Podman runs do: the rig's cluster DNS answers
        only cluster names, so the index's names are given as the host resolves them."""
        import socket

        from fairing.builders.append import AppendBuilder
        from fairing.context import BuildContext, BuiltImage
        from fairing.deployers.template import pod_template
        from fairing.deployers import pod
        from fairing.deployers.k8s.job import JobDeployer
        from tests.rig.node import _ctr, real_node

        node = real_node()
        if node.external:
            raise RuntimeError("FAIRING_TEST_KUBECONFIG is set: the rig's own node is not there")
        p = Project(self.work / f"node-start-{s}", s, SETS[s]).write(f"node start {self.run_id}")
        script = ("python3 -m pip install --no-cache-dir --disable-pip-version-check -q --target /tmp/site "
                  f"{' '.join(SETS[s])} && PYTHONPATH=/tmp/site:$PYTHONPATH exec python3 train.py")
        prebuilt_ctx = p.ctx()
        start_ctx = BuildContext(files={"train.py": p.dir / "train.py"}, entrypoint=("sh", "-c", script),
                                 requirements=("pip==24.3.1",), python="3.11", kind="python")
        cache = self.fresh_cache()
        with fairing_cache(cache):
            b = AppendBuilder(self.base, cache_dir=cache, progress=quiet)
            images = [(b.build(prebuilt_ctx, f"{self.registry}/{self.repo('append', s + '-node-prebuilt')}:v1"), prebuilt_ctx),
                      (b.build(start_ctx, f"{self.registry}/{self.repo('append', s + '-node-start')}:v1"), start_ctx)]
        aliases = [{"ip": socket.gethostbyname(h), "hostnames": [h]} for h in ("pypi.org", "files.pythonhosted.org")]

        def host_net(t: dict) -> dict:
            t.setdefault("spec", {}).update(hostNetwork=True, hostAliases=aliases)
            return t

        extra = [host_net]
        ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")  # a TLS proxy's CA, as the host's pip uses
        if ca and Path(ca).is_file():
            extra += [pod.volume({"hostPath": {"path": ca, "type": "File"}}, "/etc/pip-ca.pem", name="pip-ca", read_only=True),
                      pod.env({"PIP_CERT": "/etc/pip-ca.pem"})]

        def first_line(img, ctx) -> float:
            _ctr("images", "rm", img.ref, check=False)  # pull included, as on a fresh node
            built = BuiltImage(ref=img.ref, digest=img.digest, pod_template=pod_template(img.ref, ctx), context=ctx)
            d = JobDeployer(kubeconfig=str(node.sa_kubeconfig), namespace=node.namespace,
                            name=f"bench-start-{uuid.uuid4().hex[:6]}", mutators=[*node.mutators(), *extra])
            t0 = time.perf_counter()
            h = d.deploy(built)
            try:
                for line in h.logs(follow=True):
                    if "training started" in line:
                        return time.perf_counter() - t0
                raise RuntimeError(f"no training line on the node: {h.log_text()[-300:]}")
            finally:
                h.delete()

        prebuilt, at_start = [], []
        for _ in range(n):
            prebuilt.append(first_line(*images[0]))
            at_start.append(first_line(*images[1]))
        return prebuilt, at_start

    # -- the physical limit -------------------------------------------------------------------------
    def limit(self, s: str) -> dict[str, float]:
        """What a cold build of `s` cannot go below on this machine: read the wheels from the
        local cache, unzip them, compress at the measured rate on every core, upload at the
        registry's measured loopback rate."""
        import zipfile

        import requests

        from fairing.builders.deps import platform_tags, resolve
        from fairing.oci.cache import Cache
        from fairing.oci.layer import Compression, workers, write_layer

        cores = workers()
        cache = self.fresh_cache()
        wheels, _ = resolve(list(SETS[s]), "3.11", platform_tags({"architecture": "amd64"}), Cache(cache))
        files = [cache / "wheels" / w.filename for w in wheels]
        t0 = time.perf_counter()
        for f in files:
            f.read_bytes()
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = 0
        for f in files:
            with zipfile.ZipFile(f) as z:
                for name in z.namelist():
                    raw += len(z.read(name))
        unzip = time.perf_counter() - t0
        sample = (self.work / "limit-sample.bin")
        big = max(files, key=lambda f: f.stat().st_size)
        with zipfile.ZipFile(big) as z:
            sample.write_bytes(b"".join(z.read(n) for n in z.namelist())[: 32 << 20])
        os.environ["FAIRING_JOBS"] = "1"
        try:
            import fairing.oci.layer as layer_mod

            layer_mod._pool = None  # noqa: SLF001 - a one-thread pool for a per-core rate
            with open(os.devnull, "wb") as null:
                t0 = time.perf_counter()
                info = write_layer({"x": sample}, null, compression=Compression())
                per_core = sample.stat().st_size / (time.perf_counter() - t0)
        finally:
            os.environ.pop("FAIRING_JOBS", None)
            layer_mod._pool = None  # noqa: SLF001
        ratio = info.size / sample.stat().st_size
        payload = os.urandom(64 << 20)
        url = f"http://{self.registry}/v2/bench/limit-{self.run_id}/blobs/uploads/"
        t0 = time.perf_counter()
        r = requests.post(url, timeout=60)
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{self.registry}{loc}"
        import hashlib

        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        sep = "&" if "?" in loc else "?"
        requests.put(f"{loc}{sep}digest={digest}", data=payload, timeout=300,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        upload_rate = len(payload) / (time.perf_counter() - t0)
        compressed = raw * ratio
        compile_cpu = self.compile_floor(files)
        return {"compile": compile_cpu / cores, "compile CPU": compile_cpu, "cores": cores, "wheel bytes": sum(f.stat().st_size for f in files), "raw bytes": raw,
                "read": read, "unzip": unzip / cores, "compress": raw / per_core / cores,
                "upload": compressed / upload_rate, "compress MB/s/core": per_core / 1e6,
                "upload MB/s": upload_rate / 1e6}


    @staticmethod
    def compile_floor(files: list) -> float:
        """CPU seconds of nothing but Python's own compile() and marshal of the modules a build
        compiles (the wheels' .py outside test directories, as fairing's bytecode layers hold them),
        in one fresh interpreter of the image's Python: what a build that must also compile cannot
        go below, whoever does it."""
        from fairing.builders.deps.bytecode import interpreter

        interp = interpreter("3.11")
        if interp is None:
            return 0.0
        code = ("import sys, time, zipfile, marshal\n"
                "t = 0.0\n"
                "for f in sys.argv[1:]:\n"
                "    with zipfile.ZipFile(f) as z:\n"
                "        for n in z.namelist():\n"
                "            if n.endswith('.py') and not {'tests', 'test'} & set(n.split('/')[:-1]):\n"
                "                src = z.read(n)\n"
                "                t0 = time.process_time()\n"
                "                try:\n"
                "                    marshal.dumps(compile(src, n, 'exec', dont_inherit=True))\n"
                "                except (SyntaxError, ValueError):\n"
                "                    pass\n"
                "                t += time.process_time() - t0\n"
                "print(t)\n")
        r = subprocess.run([interp.path, "-I", "-S", "-c", code, *map(str, files)], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")})
        return float(r.stdout.strip())


def requirements(s: str, case: str) -> tuple[str, ...] | None:
    if case == "pin":
        if s not in PIN:
            return None
        old, new = PIN[s]
        return tuple(new if r == old else r for r in SETS[s])
    if case == "add":
        return SETS[s] + (ADD[s],)
    return SETS[s]


def changed_wheel_bytes(s: str, case: str) -> int | None:
    """The compressed size of what a case changes: the wheel(s) of the new or re-pinned package."""
    from fairing.builders.deps import platform_tags, resolve
    from fairing.oci.cache import Cache

    reqs = requirements(s, case)
    if reqs is None:
        return None
    tags = platform_tags({"architecture": "amd64"})
    with tempfile.TemporaryDirectory() as d:
        before, _ = resolve(list(SETS[s]), "3.11", tags, Cache(d))
        after, _ = resolve(list(reqs), "3.11", tags, Cache(d))
    old = {w.sha256 for w in before}
    return sum(w.size or 0 for w in after if w.sha256 not in old)


# --- main ------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", "-n", type=int, default=3, help="iterations per case for the tiny set (median reported)")
    p.add_argument("--heavy-n", type=int, default=1, help="iterations per case for the heavy set")
    p.add_argument("--sets", default="tiny,heavy", help="comma-separated subset of tiny,heavy")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    p.add_argument("--no-node", dest="node", action="store_false",
                   help="skip install-at-start on the rig's real node (measured by default, heavy set)")
    p.add_argument("--cold-only", action="store_true",
                   help="only the cold case, the reproducibility check and the physical limit (no warm cases, no install-at-start)")
    args = p.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    sets = [s for s in args.sets.split(",") if s]
    if set(tools) - set(TOOLS) or set(sets) - set(SETS):
        p.error(f"unknown tools or sets: {', '.join(sorted((set(tools) - set(TOOLS)) | (set(sets) - set(SETS))))}")

    import tests.rig

    print("starting the rig (registry, Podman API, base image)...", flush=True)
    services = tests.rig.up(base=True)
    store = Store(registry_root())
    crane = ensure_crane() if "crane" in tools else None
    kaniko = ensure_kaniko(services["engine"]) if "kaniko" in tools and "heavy" in sets else None
    tools = [t for t in tools if not (t == "crane" and crane is None) and not (t == "kaniko" and kaniko is None)]
    work = Path(tempfile.mkdtemp(prefix="fairing-bench-"))
    bench = Bench(services, work, store, crane, kaniko)
    if {"docker", "podman", "kaniko"} & set(tools) or "heavy" in sets:
        run(["podman", "pull", "-q", bench.base])  # the engines start from a local base, like append's HEADs
    print(f"base image {bench.base}; {args.iterations} iteration(s) for tiny, {args.heavy_n} for heavy; "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if {"append", "crane"} & set(tools):  # the engines and kaniko download with pip themselves
        bench.warm_wheels(sets)

    results: dict[tuple[str, str, str], list] = {}
    repro: dict[str, tuple] = {}
    starts: dict[str, tuple] = {}
    node_starts: dict[str, tuple] = {}
    limits: dict[str, dict] = {}
    try:
        for s in sets:
            n = args.iterations if s == "tiny" else args.heavy_n
            for tool in tools:
                t0 = time.perf_counter()
                try:
                    if tool not in ("crane",) and not (tool == "kaniko" and s != "heavy"):
                        results[(s, tool, "cold")] = bench.cold(tool, s, n)
                    if tool == "append":
                        results[(s, tool, "coldpyc")] = bench.cold(tool, s, n, "coldpyc")
                    if tool != "kaniko" and not args.cold_only:
                        for case, rows in bench.warm(tool, s, n).items():
                            results[(s, tool, case)] = rows
                except RuntimeError as e:
                    print(f"  {s}/{tool}: FAILED ({str(e).splitlines()[0][:200]})", flush=True)
                print(f"  {s}/{tool}: done in {time.perf_counter() - t0:.1f} s", flush=True)
            if "append" in tools:
                for what, fn in (("reproducibility", lambda: repro.__setitem__(s, bench.reproducible(s))),
                                 ("physical limit", lambda: limits.__setitem__(s, bench.limit(s))),
                                 ("install-at-start", lambda: s == "heavy" and not args.cold_only and starts.__setitem__(s, bench.install_at_start(s, n))),
                                 ("install-at-start on the real node",
                                  lambda: s == "heavy" and args.node and not args.cold_only and node_starts.__setitem__(s, bench.install_at_start_node(s, n)))):
                    try:
                        fn()
                    except Exception as e:  # report and go on: the other figures still count
                        print(f"  {s}: {what} FAILED ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if {"docker", "podman", "kaniko"} & set(tools):  # drop this run's tags from the shared engine
            names = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
            mine = [n for n in names if "/bench/" in n and f"-{bench.run_id}-" in n]
            if mine:
                subprocess.run(["podman", "rmi", "-f", *mine], capture_output=True)

    def med(s: str, tool: str, case: str, idx: int) -> float | None:
        vals = [r[idx] for r in results.get((s, tool, case)) or () if r[idx] is not None]
        return statistics.median(vals) if vals else None

    width = 11
    checks: list[tuple[str, bool]] = []
    for s in sets:
        n = args.iterations if s == "tiny" else args.heavy_n
        cases = [c for c in CASES if any((s, t, c) in results for t in tools)]
        print(f"\n== {s}: {', '.join(SETS[s])} (median of {n})")
        print(f"{'seconds':26}" + "".join(f"{t:>{width}}" for t in tools))
        for case in cases:
            cells = [med(s, t, case, 0) for t in tools]
            print(f"{LABELS[case]:26}" + "".join(f"{('%.2f s' % c) if c is not None else '-':>{width}}" for c in cells))
        print("bytes uploaded")
        for case in cases:
            cells = [med(s, t, case, 1) for t in tools]
            print(f"{LABELS[case]:26}" + "".join(f"{fmt_bytes(c) if c is not None else '-':>{width}}" for c in cells))
        if "append" in tools:
            print("time ratio vs append")
            for case in cases:
                base = med(s, "append", case, 0)
                cells = []
                for t in tools:
                    v = med(s, t, case, 0)
                    cells.append(f"{v / base:.1f}x" if v is not None and base else "-")
                print(f"{LABELS[case]:26}" + "".join(f"{c:>{width}}" for c in cells))
            keys = ("resolve", "download", "install", "tar", "compress", "compile", "layers", "upload")
            print("append's time split (s; tar, compress and compile: CPU seconds summed over threads and processes; layers: their wall time)")
            print(f"{'':26}" + "".join(f"{k:>9}" for k in keys))
            for case in cases:
                rows = bench.phases.get((s, case)) or []
                if rows:
                    cells = [statistics.median([r.get(k, 0.0) for r in rows]) for k in keys]
                    print(f"{LABELS[case]:26}" + "".join(f"{c:>9.2f}" for c in cells))
            for case in cases:  # the layers begun while resolving (builders/deps/speculate.py)
                rows = [r for r in bench.phases.get((s, case)) or [] if "speculated" in r]
                if rows:
                    print(f"{LABELS[case]:26} speculation: " + ", ".join(
                        f"{k} {statistics.median([r.get(k, 0) for r in rows]):.3g}"
                        for k in ("speculated", "speculated_early", "speculated_unused", "speculate")))
        if s in limits:
            lim = limits[s]
            total = lim["read"] + lim["unzip"] + lim["compress"] + lim["upload"]
            cold, coldpyc = med(s, "append", "cold", 0), med(s, "append", "coldpyc", 0)
            print(f"physical limit, cold ({lim['cores']} cores): read wheels {lim['read']:.2f} s + unzip {lim['unzip']:.2f} s"
                  f" + compress {lim['compress']:.2f} s ({fmt_bytes(lim['raw bytes'])} at {lim['compress MB/s/core']:.0f} MB/s/core)"
                  f" + upload {lim['upload']:.2f} s (at {lim['upload MB/s']:.0f} MB/s) = {total:.2f} s"
                  + (f"; append cold {cold:.2f} s = {cold / total:.2f}x the limit" if cold else "")
                  + (f", with the bytecode stored {coldpyc:.2f} s = {coldpyc / total:.2f}x" if coldpyc else ""))
            if lim.get("compile"):
                floor = total + lim["compile"]
                print(f"  a build that must also compile: + compile {lim['compile']:.2f} s ({lim['compile CPU']:.2f} CPU-s of"
                      f" compile() and marshal alone, on {lim['cores']} cores) = {floor:.2f} s, {floor / total:.2f}x the limit"
                      + (f"; append cold, nothing compiled before, is {cold / floor:.2f}x that" if cold else ""))
            if s == "heavy":  # issue 23, part 4
                for what, t in (("cold, nothing compiled before", cold),
                                ("cold, the wheels' bytecode in the store (any earlier build that used them)", coldpyc)):
                    if t:
                        checks.append((f"heavy {what}: <= 1.5x the physical limit ({t:.2f} s vs {total:.2f} s, {t / total:.2f}x)",
                                       t <= 1.5 * total))
        if s in repro:
            same, d1, d2 = repro[s]
            checks.append((f"{s}: identical digests for identical inputs from two directories and caches "
                           f"({d1[7:19]}{'' if same else ' vs ' + d2[7:19]})", same))
        ap = {c: med(s, "append", c, 0) for c in CASES}
        cr = med(s, "crane", "change", 0)
        for case in ("change", "noop"):
            crc = med(s, "crane", case, 0) or cr
            if ap[case] is not None and crc:
                checks.append((f"{s} {LABELS[case]}: no slower than crane append ({ap[case]:.2f} s vs {crc:.2f} s, {ap[case] / crc:.2f}x)",
                               ap[case] <= crc))
        if s == "heavy":
            pod = med(s, "podman", "cold", 0)
            if ap["cold"] and pod:
                checks.append((f"heavy cold: >= 3x faster than podman build && push ({pod:.1f} s vs {ap['cold']:.1f} s, {pod / ap['cold']:.1f}x)",
                               pod / ap["cold"] >= 3))
            sent = med(s, "append", "pin", 1)
            ref = changed_wheel_bytes(s, "pin")
            if ap["pin"] is not None and sent is not None and ref:
                pyc = statistics.median(bench.pin_bytecode) if bench.pin_bytecode else 0
                split = (f" = {fmt_bytes(sent - pyc)} package layer + {fmt_bytes(pyc)} bytecode layer" if pyc else "")
                # Issue 23 lets this target count the bytecode layer apart: it is the compiled form
                # of the same package, which the wheel itself does not carry.
                checks.append((f"heavy pin change: bytes <= 1.2x the changed wheel, the bytecode layer counted apart "
                               f"({fmt_bytes(sent)}{split} vs {fmt_bytes(ref)}: {(sent - pyc) / ref:.2f}x without bytecode, "
                               f"{sent / ref:.2f}x with it)", sent - pyc <= 1.2 * ref))
                checks.append((f"heavy pin change: under 3 s ({ap['pin']:.2f} s)", ap["pin"] < 3))
            for where, got in (("Podman", starts.get(s)), ("the real node", node_starts.get(s))):
                if not got:
                    continue
                pre, at = (statistics.median(x) for x in got)
                print(f"time to the first training line on {where}: prebuilt image {pre:.1f} s (pull included), "
                      f"pip install at container start {at:.1f} s ({at / pre:.1f}x)")
            # The target is judged on the real node when the rig has one, else in Podman.
            judged = node_starts.get(s) or starts.get(s)
            if judged:
                where = "the real node" if node_starts.get(s) else "Podman"
                pre, at = (statistics.median(x) for x in judged)
                checks.append((f"first training line on {where}: prebuilt >= 5x sooner than install-at-start "
                               f"({at:.1f} s vs {pre:.1f} s, {at / pre:.1f}x)", at / pre >= 5))
    print()
    for text, ok in checks:
        print(f"target: {text} ... {'PASS' if ok else 'MISS'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (the machine is shared; figures move with it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

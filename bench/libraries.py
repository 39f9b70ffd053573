"""Which library pays: uv against pip for resolve+install of the heavy ML set, and zlib (levels 1
and 6), ISA-L (`isal`, levels 0-3) and zstd for compressing its installed files.

    python bench/libraries.py [-n 2]

Install: `pip install --target` and `uv pip install --target --python-platform --python-version`,
each with a fresh cache directory (cold: every wheel from the index) and again with that cache
warm, into a fresh target each time; plus fairing's own path (uv resolution + parallel wheel
download + install straight into compressed per-package layers), which is what the append
builder runs (so it also includes tar and gzip, which the others do not).
Compression: the heavy set's installed files as one tar, compressed on one core; MB/s of input,
output size, and whether the bytes are the same at every thread count (fairing's block layout).
Nothing is asserted; prints PASS/MISS for "uv at least 2x faster than pip" and
"fairing's path no slower than uv"."""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEAVY = ("numpy==2.1.3", "pandas==2.2.3", "scikit-learn==1.5.2", "scipy==1.14.1")
PLATFORM = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")


def pip_install(target: Path, cache: Path, reqs: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:", "--no-compile",
           "--disable-pip-version-check", "-r", str(reqs)]
    for p in PLATFORM:
        cmd += ["--platform", p]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PIP_CACHE_DIR": str(cache)})


def uv_install(target: Path, cache: Path, reqs: Path) -> None:
    from fairing.builders.deps.resolve import uv_binary

    subprocess.run([uv_binary(), "pip", "install", "-q", "--target", str(target), "--python-platform",
                    "x86_64-manylinux_2_28", "--python-version", "3.11", "--only-binary", ":all:", "-r", str(reqs)],
                   check=True, capture_output=True, env={**os.environ, "UV_CACHE_DIR": str(cache)})


def fairing_install(target: Path, cache: Path, reqs: Path) -> None:
    """What the append builder runs: resolve (uv), download (parallel, wheel cache) and install
    each wheel straight into its compressed layer (so this also includes tar and gzip)."""
    from fairing.builders.deps import install_layers, platform_tags
    from fairing.oci.cache import Cache

    install_layers(reqs.read_text().split(), python="3.11", tags=platform_tags({"architecture": "amd64"}), cache=Cache(cache))


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def compressors():
    import zlib

    def z(level, mod=zlib):
        def f(data: bytes) -> bytes:
            c = mod.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(data) + c.flush()
        return f

    out = {"zlib-1": z(1), "zlib-6": z(6)}
    try:
        from isal import isal_zlib

        out.update({f"isal-{lv}": z(lv, isal_zlib) for lv in (0, 1, 2, 3)})
    except ImportError:
        print("isal: not installed (pip install isal) - skipped")
    try:
        import zstandard

        out.update({f"zstd-{lv}": (lambda lv: lambda d: zstandard.ZstdCompressor(level=lv).compress(d))(lv) for lv in (1, 3)})
    except ImportError:
        print("zstandard: not installed - skipped")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", "-n", type=int, default=2)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fairing-libs-"))
    reqs = work / "requirements.txt"
    reqs.write_text("\n".join(HEAVY) + "\n")
    print(f"heavy set: {' '.join(HEAVY)}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    try:
        times: dict[tuple[str, str], list[float]] = {}
        from fairing.builders.deps.resolve import uv_binary

        tools = {"pip": pip_install, "fairing": fairing_install}
        if uv_binary():
            tools["uv"] = uv_install
        else:
            print("uv: not installed (pip install uv) - skipped")
        for i in range(args.iterations):
            for name, fn in tools.items():
                cache = work / f"cache-{name}-{i}"
                for state in ("cold", "warm"):
                    target = work / f"t-{name}-{i}-{state}"
                    times.setdefault((name, state), []).append(timed(fn, target, cache, reqs))
                    shutil.rmtree(target, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
        print("\nresolve+install of the heavy set into a fresh directory (median, seconds)")
        print(f"{'':8}{'cold cache':>12}{'warm cache':>12}{'vs pip (cold)':>15}")
        pip_cold = statistics.median(times[("pip", "cold")])
        for name in tools:
            cold, warm = (statistics.median(times[(name, s)]) for s in ("cold", "warm"))
            print(f"{name:8}{cold:>11.2f}s{warm:>11.2f}s{pip_cold / cold:>14.1f}x")

        # -- compression --------------------------------------------------------------------------
        site = work / "site"
        uv_install(site, work / "uvc", reqs) if "uv" in tools else pip_install(site, work / "pipc", reqs)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(site, arcname=".")
        data = buf.getvalue()
        print(f"\ncompressing the installed heavy set ({len(data) / 1e6:.0f} MB tar) on one core")
        print(f"{'':10}{'MB/s':>8}{'size':>10}{'vs zlib-6':>11}")
        rows = {}
        for name, fn in compressors().items():
            t0 = time.perf_counter()
            out = fn(data)
            dt = time.perf_counter() - t0
            rows[name] = (len(data) / dt / 1e6, len(out))
        base = rows["zlib-6"]
        for name, (rate, size) in rows.items():
            print(f"{name:10}{rate:>8.0f}{size / 1e6:>9.1f}M{base[1] and size / base[1]:>10.2f}x")
        z1, z6 = rows["zlib-1"], rows["zlib-6"]
        print(f"trade-off: zlib-1 is {z1[0] / z6[0]:.1f}x faster than zlib-6 for {100 * (z1[1] / z6[1] - 1):.0f}% more bytes")

        import fairing.oci.layer as layer

        digests = set()
        for jobs in ("1", "2", "8"):
            os.environ["FAIRING_JOBS"] = jobs
            layer._pool = None  # noqa: SLF001 - a pool of this size
            info = layer.write_layer({"d/x": data[: 24 << 20]}, open(os.devnull, "wb"))
            digests.add(info.digest)
        os.environ.pop("FAIRING_JOBS", None)
        print(f"fairing's block gzip, 24 MB at 1, 2 and 8 threads: {'one digest' if len(digests) == 1 else 'DIFFERENT digests'}"
              f" ({hashlib.sha256(''.join(sorted(digests)).encode()).hexdigest()[:12]})")
        print()
        if "uv" in tools:
            uv_cold = statistics.median(times[("uv", "cold")])
            print(f"target: uv at least 2x faster than pip, cold ({pip_cold / uv_cold:.1f}x) ... {'PASS' if pip_cold / uv_cold >= 2 else 'MISS'}")
            f_cold = statistics.median(times[("fairing", "cold")])
            print(f"target: fairing's path no slower than uv, cold ({f_cold:.2f} s vs {uv_cold:.2f} s) ... {'PASS' if f_cold <= uv_cold else 'MISS'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Deterministic layers and the local layer cache (no services needed)."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from fairing.errors import BuildError, ConfigError
from fairing.oci.cache import Cache
from fairing.oci.layer import tree, write_layer


def _project(root: Path, mtime: int, mode: int = 0o644) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("import pkg\nprint('hi')\n")
    (root / "pkg" / "__init__.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\nexec python train.py\n")
    os.chmod(root / "train.py", mode)
    os.chmod(root / "run.sh", 0o700)
    for p in [*root.rglob("*"), root]:
        os.utime(p, (mtime, mtime))
    return root


def _layer(entries) -> tuple[object, bytes]:
    buf = io.BytesIO()
    info = write_layer(entries, buf)
    return info, buf.getvalue()


def test_same_files_in_different_dirs_with_different_mtimes_and_modes_give_one_digest(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = _project(tmp_path / "a", mtime=1_000_000, mode=0o600)
    b = _project(tmp_path / "somewhere" / "else", mtime=1_700_000_000, mode=0o664)
    info_a, data_a = _layer(tree(a, "app"))
    info_b, data_b = _layer(tree(b, "app"))
    assert info_a == info_b
    assert data_a == data_b
    assert info_a.size == len(data_a)


def test_entries_are_normalised(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = _project(tmp_path / "p", mtime=1_234_567)
    (root / "link").symlink_to("train.py")
    _, data = _layer({**tree(root, "app/src"), "app/generated.txt": b"made in memory"})
    members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
    names = [m.name for m in members]
    # sorted, and every parent directory is an explicit entry before its children
    assert names == sorted(names)
    assert names[:3] == ["app", "app/generated.txt", "app/src"]
    assert "app/src/pkg" in names and names.index("app/src/pkg") < names.index("app/src/pkg/__init__.py")
    by = {m.name: m for m in members}
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
    assert by["app/src"].isdir() and by["app/src"].mode == 0o755
    assert by["app/src/run.sh"].mode == 0o755  # executable stays executable
    assert by["app/src/train.py"].mode == 0o644  # 0600 on disk -> readable by any uid in the pod
    assert by["app/src/link"].issym() and by["app/src/link"].linkname == "train.py"


def test_gzip_header_has_no_name_or_time(tmp_path):
    _, data = _layer({"app/a.txt": b"x"})
    assert data[:4] == b"\x1f\x8b\x08\x00"  # magic, deflate, FLG=0: no FNAME, no FCOMMENT
    assert data[4:8] == b"\x00\x00\x00\x00"  # MTIME = 0
    assert gzip.decompress(data)  # and it is a valid gzip stream


def test_diff_id_is_sha256_of_the_uncompressed_tar():
    import hashlib

    info, data = _layer({"app/a.txt": b"hello"})
    assert info.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    assert info.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_source_date_epoch_sets_every_mtime(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    info1, data = _layer({"app/a.txt": b"x"})
    assert {m.mtime for m in tarfile.open(fileobj=io.BytesIO(data))} == {1700000000}
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    info0, _ = _layer({"app/a.txt": b"x"})
    assert info0.digest != info1.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        _layer({"app/a.txt": b"x"})


def test_gnu_tar_reads_the_layer(tmp_path):
    if not shutil.which("tar"):
        pytest.skip("no tar binary on this machine")
    _, data = _layer({"app/dir/a.txt": b"hello\n", "app/b.txt": b"b\n"})
    (tmp_path / "l.tar.gz").write_bytes(data)
    listing = subprocess.run(["tar", "-tzvf", str(tmp_path / "l.tar.gz")], capture_output=True, text=True, check=True).stdout
    assert "app/dir/a.txt" in listing and "root/root" not in listing  # numeric owner 0/0, no names
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "l.tar.gz"), "-C", str(out)], check=True)
    assert (out / "app/dir/a.txt").read_text() == "hello\n"


@pytest.mark.parametrize("bad", ["../etc/passwd", "app/../../x", "/", ""])
def test_paths_escaping_the_image_are_refused(bad):
    with pytest.raises(ConfigError, match="invalid path"):
        _layer({bad: b"x"})


# --- cache -------------------------------------------------------------------------------------
def test_cache_keeps_layers_by_diff_id_and_reuses_the_first_digest(tmp_path):
    cache = Cache(tmp_path / "cache")
    first = cache.build_layer({"app/a.txt": b"same"})
    assert first.path.exists() and first.path.parent == tmp_path / "cache" / "layers"
    assert first.path.name == first.diff_id.split(":")[1] + ".tar.gz"
    again = cache.build_layer({"app/a.txt": b"same"})
    assert again == first
    assert cache.get_layer(first.diff_id) == first
    # no temp files left behind
    assert not [p for p in (tmp_path / "cache" / "layers").iterdir() if p.name.startswith(".")]


def test_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path):
    cache = Cache(tmp_path / "cache")
    layer = cache.build_layer({"app/a.txt": b"payload" * 100})
    data = bytearray(layer.path.read_bytes())
    data[-12] ^= 0xFF  # same size, different bytes
    layer.path.write_bytes(bytes(data))
    os.utime(layer.path, ns=(1, 1))  # a new stat key so the per-process verification re-hashes
    assert Cache(tmp_path / "cache").get_layer(layer.diff_id) is None
    assert not layer.path.exists()  # the corrupt entry is gone
    rebuilt = cache.build_layer({"app/a.txt": b"payload" * 100})
    assert rebuilt.digest == layer.digest and rebuilt.path.read_bytes() != bytes(data)


def test_fairing_cache_env_sets_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRING_CACHE", str(tmp_path / "elsewhere"))
    layer = Cache().build_layer({"app/a.txt": b"x"})
    assert layer.path.is_relative_to(tmp_path / "elsewhere")


def test_disk_full_is_a_clear_build_error_and_leaves_no_entry(tmp_path):
    # A real full disk: a 256 KiB tmpfs (needs root and mount(2); skipped with a reason otherwise).
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        cache = Cache(mnt)
        with pytest.raises(BuildError, match="no space left") as exc:
            cache.build_layer({"app/big.bin": os.urandom(1 << 20)})
        assert "FAIRING_CACHE" in exc.value.hint
        left = [p.name for p in (mnt / "layers").iterdir()] if (mnt / "layers").exists() else []
        assert left == []  # no half-written layer, no temp file
        small = cache.build_layer({"app/a.txt": b"fits"})  # and the cache still works afterwards
        assert cache.get_layer(small.diff_id) == small
    finally:
        subprocess.run(["umount", str(mnt)], check=False)

"""Wheel members read for the layer tar by raw inflate (deps/zipread.py): the same bytes as
zipfile gives, the same layer digest as before, and a damaged member is a clear error. Real zip
files written by zipfile; nothing mocked."""
from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from fairing.builders.deps import wheels, zipread
from fairing.errors import BuildError
from fairing.oci.layer import write_layer

WHEEL_FILES = {
    "demo/__init__.py": b"VALUE = 1\n" * 5000,
    "demo/data.bin": random.Random(7).randbytes(3 << 20),  # incompressible, bigger than a read
    "demo/empty.txt": b"",
    "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
}


def make_wheel(path: Path, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in WHEEL_FILES.items():
            z.writestr(name, data)
    return path


class _Null:
    def write(self, b) -> int:
        return len(b)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_members_read_whole_or_in_pieces_match_zipfile(tmp_path, compression):
    whl = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", compression)
    with zipfile.ZipFile(whl) as z, open(whl, "rb") as f:
        for info in z.infolist():
            want = z.read(info)
            assert zipread.Inflated(f.fileno(), info, whl.name).read() == want
            piece, got = zipread.Inflated(f.fileno(), info, whl.name), b""
            while chunk := piece.read(100_000):
                got += chunk
            assert got == want


def test_installed_layer_has_the_digest_zipfile_reading_gives(tmp_path):
    whl = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl")
    with zipfile.ZipFile(whl) as z:
        contents = {name: z.read(name) for name in WHEEL_FILES}  # read by zipfile, CRC-checked
    with wheels.installed(whl, "opt/site") as entries:
        ours = write_layer(entries, _Null())
        theirs = write_layer({p: contents.get(p.removeprefix("opt/site/"), src) for p, src in entries.items()}, _Null())
    assert (ours.digest, ours.diff_id) == (theirs.digest, theirs.diff_id)


def test_a_damaged_member_is_a_clear_error(tmp_path):
    whl = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl")
    with zipfile.ZipFile(whl) as z:
        info = z.getinfo("demo/__init__.py")
    raw = bytearray(whl.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    raw[start:start + info.compress_size] = b"\xff" * info.compress_size  # not deflate (block type 3 is invalid)
    whl.write_bytes(bytes(raw))
    with open(whl, "rb") as f, pytest.raises(BuildError, match="demo/__init__.py") as e:
        zipread.Inflated(f.fileno(), info, whl.name).read()
    assert "FAIRING_CACHE" in e.value.hint

"""Reading a wheel's members for the layer tar: inflated straight from the file, without CRC-32.

zipfile computes a CRC-32 of every member as it is read, to check it at the end; for a wheel
that is ~280 MB of CRC on the heavy set, beside the inflating the layer cannot avoid. Here the
check is not needed: every wheel's sha256 was checked against the resolver's hash when it was
downloaded (wheels.py), which covers every byte of every member, and the layer's own sha256s
(digest and DiffID) are computed from the bytes written. A member that inflates to fewer bytes
than the zip says, or not at all, is still an error.

Reads use os.pread on the wheel's descriptor: no shared file position, so the bytecode compiler
can read one member while the tar writer reads another."""
from __future__ import annotations

import os
import struct
import zipfile
import zlib

from ...errors import BuildError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra length
_READ = 1 << 18  # compressed bytes per pread


def damaged(wheel_name: str, member: str, why: str) -> BuildError:
    return BuildError(f"{wheel_name}: member {member} {why}",
                      hint="the wheel file in the cache is damaged; delete FAIRING_CACHE's wheels/ and retry")


class Inflated:
    """One member of a zip open on `fd`, as a read-only file object (read(n), read())."""

    def __init__(self, fd: int, info: zipfile.ZipInfo, wheel_name: str):
        self.fd, self.info, self.wheel_name = fd, info, wheel_name
        head = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
        if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
            raise damaged(wheel_name, info.filename, "has no local header where the zip directory says")
        _, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        self.pos = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        self.left = info.compress_size  # compressed bytes not read yet
        self.out = 0  # bytes returned so far
        self.inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None

    def __enter__(self) -> "Inflated":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def close(self) -> None:
        pass

    def _pread(self, n: int) -> bytes:
        raw = os.pread(self.fd, min(n, self.left), self.pos)
        self.pos += len(raw)
        self.left -= len(raw)
        return raw

    def read(self, n: int = -1) -> bytes:
        want = self.info.file_size - self.out if n is None or n < 0 else min(n, self.info.file_size - self.out)
        parts, got = [], 0
        try:
            while got < want:
                if self.inflate is None:  # stored
                    data = self._pread(want - got)
                elif self.inflate.unconsumed_tail:
                    data = self.inflate.decompress(self.inflate.unconsumed_tail, want - got)
                elif self.left > 0 and not self.inflate.eof:
                    data = self.inflate.decompress(self._pread(_READ), want - got)
                else:
                    data = b""
                if not data and (self.inflate is None or self.inflate.eof or (self.left <= 0 and not self.inflate.unconsumed_tail)):
                    break
                parts.append(data)
                got += len(data)
        except zlib.error as e:
            raise damaged(self.wheel_name, self.info.filename, f"does not inflate ({e})") from None
        if got < want:
            raise damaged(self.wheel_name, self.info.filename, f"is shorter than its size ({self.out + got} of {self.info.file_size} bytes)")
        self.out += got
        return parts[0] if len(parts) == 1 else b"".join(parts)


def opener(fd: int, info: zipfile.ZipInfo, wheel_name: str, z: zipfile.ZipFile):
    """A function opening `info` for reading: raw inflate for stored and deflated members (what
    wheels use), zipfile's own reader for anything else."""
    if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) and not info.flag_bits & 0x1:
        return lambda: Inflated(fd, info, wheel_name)
    return lambda: z.open(info)

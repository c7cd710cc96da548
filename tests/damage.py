"""Damage done to files on purpose, as a disk, a copy or a transfer would do it."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def flip_bytes_inside_a_tensor(path: Path, count: int = 4096) -> None:
    """Invert `count` bytes in the middle of the largest tensor stored in a `torch.save` file (a
    zip archive), leaving the archive's structure and the pickled part intact."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.file_size >= count, "the largest tensor is smaller than the damage"
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    data_start = info.header_offset + 30 + name_length + extra_length
    start = data_start + (info.file_size - count) // 2
    raw[start : start + count] = bytes(byte ^ 0xFF for byte in raw[start : start + count])
    path.write_bytes(raw)

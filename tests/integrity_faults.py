"""Fault injection for the integrity tests: flip a byte, flip a float's exponent inside a safetensors file, truncate
a file. Each returns a description of what it did (for assertion messages)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path


def flip_byte(path: Path, offset: int | None = None, *, keep_mtime: bool = False) -> str:
    """XOR one byte (default: the middle one) with 0x10; ``keep_mtime`` restores the modification time (bit rot)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return f"byte {i} of {path.name} flipped"


def flip_exponent(path: Path, tensor: str | None = None, index: int = 0) -> str:
    """Flip bit 6 of the high byte of a float32 element in a safetensors file: the exponent jumps by 2^7, so the
    value is multiplied by about 2^128 (or divided), e.g. 0.02 -> 7e36. The header and size are unchanged."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    names = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"]
    name = tensor if tensor is not None else sorted(names)[0]
    start = 8 + n + header[name]["data_offsets"][0] + 4 * index
    data[start + 3] ^= 0x40
    path.write_bytes(bytes(data))
    return f"exponent of {name}[{index}] in {path.name} flipped"


def truncate(path: Path, fraction: float = 0.5) -> str:
    """Cut ``path`` to ``fraction`` of its length."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))
    return f"{path.name} truncated to {int(size * fraction)} of {size} bytes"

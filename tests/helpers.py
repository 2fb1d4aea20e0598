"""Helpers shared by the tests: small deterministic images and fast encoding options."""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: Encoding options that keep tests fast: short training, no compilation.
FAST = dict(effort="fast", compile=False)


def crop(height: int = 48, width: int = 64) -> np.ndarray:
    """A crop of scikit-image's astronaut: a face edge, some texture, some flat background."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[150:150 + height, 200:200 + width])


def reseal(body: bytes) -> bytes:
    """A file's bytes before its checksum, with a valid checksum appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The file with its header's image size replaced (and a valid checksum)."""
    body = bytearray(data[:-4])
    body[4:8] = struct.pack("<HH", width, height)
    return reseal(bytes(body))

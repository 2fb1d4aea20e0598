"""Pipeline stage 4: entropy coding of the quantised symbols.

Coder 0, ``zstd``: every symbol q is zigzag-mapped to an unsigned integer (0, -1, 1, -2, ... ->
0, 1, 2, 3, ...), so small magnitudes of either sign become small bytes. The low bytes of all
tensors come first, in tensor order, then the high bytes of the tensors whose bit depth exceeds 8
(byte-planar layout): zstd then sees long runs of similarly distributed bytes instead of
interleaved high bytes that are nearly always zero. The stream is one zstd frame, with its content
size recorded, which the decoder checks against the size implied by the header before it
decompresses anything.
"""

from __future__ import annotations

import numpy as np
import zstandard

from .errors import InrFormatError

CODER_IDS = {"zstd": 0}
CODER_NAMES = {v: k for k, v in CODER_IDS.items()}
ZSTD_LEVEL = 22


def zigzag(q: np.ndarray) -> np.ndarray:
    q = q.astype(np.int64)
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.int64)
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2).astype(np.int32)


def planes(bits: int) -> int:
    """Bytes per symbol of a tensor of this bit depth (zigzag values < 2^bits)."""
    return 1 if bits <= 8 else 2


def layout(symbols: list[np.ndarray], bits: list[int]) -> bytes:
    """The byte-planar serialisation of the tensors' symbols (before compression)."""
    unsigned = [zigzag(s) for s in symbols]
    low = [(u & 0xFF).astype(np.uint8) for u in unsigned]
    high = [(u >> 8).astype(np.uint8) for u, b in zip(unsigned, bits) if planes(b) == 2]
    return b"".join(a.tobytes() for a in low + high)


def unlayout(raw: bytes, sizes: list[int], bits: list[int]) -> list[np.ndarray]:
    data = np.frombuffer(raw, dtype=np.uint8)
    out, offset = [], 0
    for n in sizes:
        out.append(data[offset:offset + n].astype(np.uint32))
        offset += n
    for i, (n, b) in enumerate(zip(sizes, bits)):
        if planes(b) == 2:
            out[i] |= data[offset:offset + n].astype(np.uint32) << 8
            offset += n
    return [unzigzag(u) for u in out]


def encode(symbols: list[np.ndarray], bits: list[int], coder: str = "zstd") -> bytes:
    if coder != "zstd":
        raise ValueError(f"unknown entropy coder {coder!r}")
    raw = layout(symbols, bits)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True,
                                    write_checksum=False).compress(raw)


def decode(payload: bytes, sizes: list[int], bits: list[int], coder: str = "zstd"
           ) -> list[np.ndarray]:
    """Symbols of each tensor; raises InrFormatError unless the payload is exactly right."""
    if coder != "zstd":
        raise InrFormatError(f"unknown entropy coder {coder!r}")
    expected = sum(n * planes(b) for n, b in zip(sizes, bits))
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise InrFormatError(f"payload is not a zstd frame: {exc}") from None
    if params.content_size != expected:
        raise InrFormatError(f"payload holds {params.content_size} bytes of symbols, "
                             f"the header implies {expected}")
    try:
        dctx = zstandard.ZstdDecompressor()
        reader = dctx.decompressobj()
        raw = reader.decompress(payload)
        if not reader.eof or reader.unused_data:
            raise InrFormatError("payload has bytes after its zstd frame, or the frame is cut")
    except zstandard.ZstdError as exc:
        raise InrFormatError(f"payload does not decompress: {exc}") from None
    if len(raw) != expected:
        raise InrFormatError(f"payload decompresses to {len(raw)} bytes, expected {expected}")
    return unlayout(raw, sizes, bits)

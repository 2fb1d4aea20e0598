"""Pipeline stage 4: entropy coding of the quantised symbols, by coders behind one interface.

A tensor of ``bits`` b holds integer symbols in [-qmax, qmax], qmax = 2^(b-1) - 1. A coder
(:class:`Coder`) turns the symbols of all tensors into one payload and back; :data:`CODERS` maps
the names users choose (``--coder``) to coders, and each coder's ``coder_id`` is what the file
stores.

Coder 0, ``zstd``: every symbol q is folded to an unsigned integer (0, -1, 1, -2, ... -> 0, 1,
2, 3, ...: :func:`fold`), so small magnitudes of either sign become small bytes. The low bytes of
all tensors come first, in tensor order, then the high bytes of the tensors whose bit depth
exceeds 8 (byte-planar layout): zstd then sees long runs of similarly distributed bytes instead
of interleaved high bytes that are nearly always zero. The stream is one zstd frame, with its
content size recorded, which the decoder checks against the size implied by the header before
it decompresses anything.

Coder 1, ``rans`` (the default): each tensor's symbols are modelled as a two-sided geometric
distribution, p(q) ~ r^|q| on -qmax..qmax, whose ratio r (a u16 fraction of 2^16, the
maximum-likelihood fit to the tensor) is stored, and all tensors are coded as one rANS stream
(:mod:`.rans`, which says why it is ours). On Kodak that payload is 3-6% smaller than coder 0's.
The ratios and the stream are still wrapped in one zstd frame, the container's compressor, which
stores them as they are for a few bytes; its content size is checked against the largest stream
the header allows before decompression.

Coder 2, ``context`` (the latent family's default): as coder 1, except that every
three-dimensional tensor (a latent grid, C x H x W) is coded plane by plane with a spatial
context model, each value's table chosen and its mean predicted from its decoded neighbours
(:mod:`.context`); its model (12 bytes) takes the place of the ratio.

Coder 3, ``arm`` (``--coder arm``): as coder 2, except that every latent grid is coded with one
learned network for the file, which gives each latent a discretised Laplace from its decoded
neighbours, in integer arithmetic (:mod:`.arm`); the encoder fits the network to the latents it
codes, and its values lead the payload.
"""

from __future__ import annotations

import math
import struct
from typing import ClassVar

import numpy as np
import zstandard

from . import arm, context, rans
from .errors import InrFormatError

#: The bit depths a tensor may have.
MIN_BITS, MAX_BITS = 2, 16
ZSTD_LEVEL = 22


def qmax(bits: int) -> int:
    """The largest symbol magnitude of a ``bits``-bit tensor."""
    return (1 << (bits - 1)) - 1


def fold(q: np.ndarray) -> np.ndarray:
    """Signed symbols to unsigned: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    q = q.astype(np.int64)
    return np.where(q >= 0, 2 * q, -2 * q - 1).astype(np.uint32)


def unfold(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.int64)
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2).astype(np.int32)


def planes(bits: int) -> int:
    """Bytes per symbol of a tensor of this bit depth (folded values < 2^bits)."""
    return 1 if bits <= 8 else 2


def layout(symbols: list[np.ndarray], bits: list[int]) -> bytes:
    """The byte-planar serialisation of the tensors' symbols (before compression)."""
    unsigned = [fold(s) for s in symbols]
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
    return [unfold(u) for u in out]


def ratio_of_mean(m: float) -> float:
    """The maximum-likelihood ratio r of a two-sided geometric distribution p(q) ~ r^|q| whose
    mean magnitude is m: m = 2r / (1 - r^2), so r = (sqrt(1 + m^2) - 1) / m."""
    return (math.sqrt(1 + m * m) - 1) / m if m > 0 else 0.0


def geometric_ratio(symbols: np.ndarray) -> int:
    """The maximum-likelihood ratio of a two-sided geometric distribution fitted to
    ``symbols``, as a u16 fraction (:func:`ratio_of_mean`)."""
    return ratio_of_magnitudes(int(np.abs(symbols.astype(np.int64)).sum()), symbols.size)


def magnitude_bits(symbols: np.ndarray) -> float:
    """What one unit more of a symbol's magnitude costs in coder 1's model of ``symbols``
    (bits): -log2 of its fitted ratio."""
    return -math.log2(geometric_ratio(symbols) / rans.RATIO_ONE)


def ratio_of_magnitudes(total: int, count: int) -> int:
    """:func:`geometric_ratio` of ``count`` symbols whose magnitudes sum to ``total``."""
    m = total / count if count else 0.0
    return min(round(ratio_of_mean(m) * rans.RATIO_ONE), rans.RATIO_ONE - 1)


def _zstd_frame(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True,
                                    write_checksum=False).compress(raw)


def _unzstd(payload: bytes, largest: int, exact: bool) -> bytes:
    """The content of the single zstd frame ``payload``: exactly ``largest`` bytes if ``exact``,
    else at most that many (checked before anything is decompressed)."""
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise InrFormatError(f"payload is not a zstd frame: {exc}") from None
    size = params.content_size
    if (size != largest) if exact else not 0 < size <= largest:
        raise InrFormatError(f"payload holds {size} bytes of symbols, the header implies "
                             f"{'' if exact else 'at most '}{largest}")
    try:
        reader = zstandard.ZstdDecompressor().decompressobj()
        raw = reader.decompress(payload)
        if not reader.eof or reader.unused_data:
            raise InrFormatError("payload has bytes after its zstd frame, or the frame is cut")
    except zstandard.ZstdError as exc:
        raise InrFormatError(f"payload does not decompress: {exc}") from None
    if len(raw) != size:
        raise InrFormatError(f"payload decompresses to {len(raw)} bytes, expected {size}")
    return raw


class Coder:
    """Turns the symbols of a file's tensors into one payload and back.

    ``encode`` is given each tensor's symbols (an int array of the tensor's shape) and bit
    depth. ``decode`` is given what the header implies (each tensor's shape and bit depth) and
    returns each tensor's symbols, flat; it raises :class:`InrFormatError` unless the payload
    is exactly right, before allocating anything larger than those shapes allow.
    """

    name: ClassVar[str]
    coder_id: ClassVar[int]
    #: What decoding one stored value costs, in multiply-adds of rendering that take the same
    #: time (the decoder's work bound counts it: ``limits.MAX_WORK``); measured on the 2-core
    #: development machine with ``benchmarks/decode_cost.py`` and rounded up to a power of two
    #: (docs/security.md).
    work_per_value: ClassVar[int]

    def encode(self, symbols: list[np.ndarray], bits: list[int]) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes, shapes: list[tuple[int, ...]], bits: list[int]
               ) -> list[np.ndarray]:
        raise NotImplementedError


class ZstdCoder(Coder):
    name, coder_id = "zstd", 0
    work_per_value = 128  # 70 measured (numpy on byte planes)

    def encode(self, symbols, bits):
        return _zstd_frame(layout(symbols, bits))

    def decode(self, payload, shapes, bits):
        sizes = [math.prod(s) for s in shapes]
        raw = _unzstd(payload, sum(n * planes(b) for n, b in zip(sizes, bits)), exact=True)
        return unlayout(raw, sizes, bits)


class RansCoder(Coder):
    name, coder_id = "rans", 1
    work_per_value = 1024  # 923 measured (a Python loop per symbol)

    def encode(self, symbols, bits):
        ratios = [geometric_ratio(s) for s in symbols]
        tables = [rans.Table.geometric(qmax(b), r) for b, r in zip(bits, ratios)]
        head = struct.pack(f"<{len(ratios)}H", *ratios)
        return _zstd_frame(head + rans.encode(list(zip(symbols, tables))))

    def decode(self, payload, shapes, bits):
        sizes = [math.prod(s) for s in shapes]
        # No symbol costs more than PRECISION bits, so no valid stream is longer than this.
        largest = 2 * len(sizes) + 8 + 4 * (-(-sum(sizes) * rans.PRECISION // rans.WORD) + 1)
        raw = _unzstd(payload, largest, exact=False)
        head = 2 * len(sizes)
        if len(raw) < head:
            raise InrFormatError("payload is too short for its tensors' ratios")
        ratios = struct.unpack_from(f"<{len(sizes)}H", raw)
        tables = [rans.Table.geometric(qmax(b), r) for b, r in zip(bits, ratios)]
        try:
            return rans.decode(raw[head:], list(zip(sizes, tables)))
        except rans.RansError as exc:
            raise InrFormatError(f"payload does not decode: {exc}") from None


def _geometric_head(symbols: np.ndarray, bits: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A tensor coded as coder 1 codes it: its ratio's bytes, its frequencies and cumulatives."""
    ratio = geometric_ratio(symbols)
    f, c = rans.Table.geometric(qmax(bits), ratio).lookup(symbols)
    return struct.pack("<H", ratio), f, c


def _grid_payload(symbols: list[np.ndarray], bits: list[int], code_grid, head=None, freq=None,
                  cum=None) -> bytes:
    """The payload of coders 2 and 3: after what ``head``, ``freq`` and ``cum`` hold already,
    each tensor's model bytes and its symbols' frequencies, a grid's (a tensor of three
    dimensions) by ``code_grid(symbols, bits)`` (unless None), every other tensor's as coder 1
    codes it; then the model bytes and one rANS stream, in one zstd frame."""
    head, freq, cum = head or [], freq or [], cum or []
    for s, b in zip(symbols, bits):
        model, f, c = code_grid(s, b) if s.ndim == 3 and code_grid else _geometric_head(s, b)
        head.append(model)
        freq.append(f)
        cum.append(c)
    return _zstd_frame(b"".join(head) + rans.encode_symbols(freq, cum))


class ContextCoder(Coder):
    name, coder_id = "context", 2
    work_per_value = 2048  # 1705 measured (a Python loop per symbol, with its context)

    def encode(self, symbols, bits):
        return _grid_payload(symbols, bits, lambda s, b: context.encode_model(s, qmax(b)))

    def decode(self, payload, shapes, bits):
        head = sum(context.MODEL_BYTES if len(s) == 3 else 2 for s in shapes)
        # A residual costs at most PRECISION bits, like any symbol of coder 1.
        largest = head + 8 + 4 * (-(-sum(math.prod(s) for s in shapes) * rans.PRECISION
                                    // rans.WORD) + 1)
        raw = _unzstd(payload, largest, exact=False)
        if len(raw) < head:
            raise InrFormatError("payload is too short for its tensors' models")
        try:
            reader = rans.Reader(raw[head:], sum(math.prod(s) for s in shapes))
            models, offset = [], 0
            for shape, b in zip(shapes, bits):
                if len(shape) == 3:
                    weights, ratios = context.read_model(raw, offset)
                    offset += context.MODEL_BYTES
                    tables = context.residual_tables(qmax(b), ratios)
                    models.append((weights, ratios, min(t.least_bits for t in tables)))
                else:
                    (ratio,) = struct.unpack_from("<H", raw, offset)
                    offset += 2
                    table = rans.Table.geometric(qmax(b), ratio)
                    models.append((None, table, table.least_bits))
            reader.check_length(sum(math.prod(s) * least for s, (_, _, least)
                                    in zip(shapes, models)))
            out = []
            for shape, b, (weights, model, _) in zip(shapes, bits, models):
                if weights is not None:
                    out.append(context.decode_planes(reader, shape, qmax(b), weights, model))
                else:
                    out.append(rans.decode_with(reader, math.prod(shape), model))
            reader.finish()
        except rans.RansError as exc:
            raise InrFormatError(f"payload does not decode: {exc}") from None
        return out


class ArmCoder(Coder):
    """Coder 3. Made with ``prior``, a function that gives the network to code the tensors of
    three dimensions (latent grids) with (:class:`.arm.Network`; the latent family's, fitted to
    its latents), when it encodes; without one (the coder in :data:`CODERS`, or a model of
    another family), the file holds no network and every tensor is coded as coder 1 codes it."""

    name, coder_id = "arm", 3
    # 4,357 measured with the largest network a file may hold (benchmarks/decode_cost.py; the
    # other coders measured 1,191 and 2,533 in the same run).
    work_per_value = 8192

    def __init__(self, prior=None):
        self.prior = prior

    def encode(self, symbols, bits):
        net = self.prior() if self.prior is not None and any(s.ndim == 3 for s in symbols) \
            else None
        grids = [net is not None and s.ndim == 3 for s in symbols]
        for is_grid, b in zip(grids, bits):
            if is_grid and b > arm.MAX_GRID_BITS:
                raise ValueError(f"the arm coder takes grids of at most {arm.MAX_GRID_BITS} "
                                 f"bits, not {b}")
        head, freq, cum = [arm.NO_NETWORK], [], []
        if net is not None:
            values = net.values()
            value_bits = arm.value_bits(net)
            ratio = geometric_ratio(values)
            head = [struct.pack(arm.HEAD_FORMAT, net.context, net.width, net.depth, net.shift,
                                value_bits, ratio)]
            f, c = rans.Table.geometric(qmax(value_bits), ratio).lookup(values)
            freq.append(f)
            cum.append(c)
        code_grid = None if net is None else \
            (lambda s, b: (b"", *arm.encode_grid(s, qmax(b), net)))
        return _grid_payload(symbols, bits, code_grid, head, freq, cum)

    def decode(self, payload, shapes, bits):
        values = sum(math.prod(s) for s in shapes) + arm.MAX_VALUES
        largest = arm.HEAD_BYTES + 2 * len(shapes) + 8 \
            + 4 * (-(-values * rans.PRECISION // rans.WORD) + 1)
        raw = _unzstd(payload, largest, exact=False)
        try:
            context, width, depth, shift, value_bits, ratio = arm.read_head(raw)
        except arm.ArmError as exc:
            raise InrFormatError(f"payload's entropy model: {exc}") from None
        grids = [bool(context) and len(s) == 3 for s in shapes]
        for is_grid, b in zip(grids, bits):
            if is_grid and b > arm.MAX_GRID_BITS:
                raise InrFormatError(f"a latent grid of {b} bits is more than the arm coder's "
                                     f"{arm.MAX_GRID_BITS}")
        head = arm.HEAD_BYTES + 2 * grids.count(False)
        if len(raw) < head:
            raise InrFormatError("payload is too short for its tensors' models")
        n_values = arm.Network.count(context, width, depth) if context else 0
        value_table = rans.Table.geometric(qmax(value_bits), ratio) if context else None
        ratios = iter(struct.unpack_from(f"<{grids.count(False)}H", raw, arm.HEAD_BYTES))
        tables = [None if g else rans.Table.geometric(qmax(b), next(ratios))
                  for g, b in zip(grids, bits)]
        try:
            reader = rans.Reader(raw[head:], n_values + sum(math.prod(s) for s in shapes))
            least = sum(math.prod(s) * (arm.least_bits(qmax(b)) if t is None else t.least_bits)
                        for s, b, t in zip(shapes, bits, tables))
            reader.check_length(least + (n_values * value_table.least_bits if context else 0))
            net = None
            if context:
                net = arm.Network.from_values(context, width, depth, shift,
                                              rans.decode_with(reader, n_values, value_table)
                                              .astype(np.int64))
            out = [arm.decode_grid(reader, shape, qmax(b), net) if t is None
                   else rans.decode_with(reader, math.prod(shape), t)
                   for shape, b, t in zip(shapes, bits, tables)]
            reader.finish()
        except rans.RansError as exc:
            raise InrFormatError(f"payload does not decode: {exc}") from None
        return out


#: The coders by name, default first; a new coder is a class above and a line here.
CODERS: dict[str, Coder] = {c.name: c for c in (RansCoder(), ZstdCoder(), ContextCoder(),
                                                 ArmCoder())}
CODER_IDS = {name: c.coder_id for name, c in CODERS.items()}
CODER_NAMES = {c.coder_id: name for name, c in CODERS.items()}
DEFAULT_CODER = "rans"


def get(name: str | Coder) -> Coder:
    """The coder of this name (or this coder: an encoder's, made with its prior)."""
    if isinstance(name, Coder):
        return name
    try:
        return CODERS[name]
    except KeyError:
        raise ValueError(f"unknown entropy coder {name!r}; choose from "
                         f"{', '.join(CODERS)}") from None


def encode(symbols: list[np.ndarray], bits: list[int], coder: str | Coder = DEFAULT_CODER
           ) -> bytes:
    return get(coder).encode(symbols, bits)


def decode(payload: bytes, shapes: list[tuple[int, ...] | int], bits: list[int],
           coder: str = DEFAULT_CODER) -> list[np.ndarray]:
    """Symbols of each tensor (flat), given each one's shape (or size: a flat tensor); raises
    InrFormatError unless the payload is exactly right."""
    if coder not in CODERS:
        raise InrFormatError(f"unknown entropy coder {coder!r}")
    shapes = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    return CODERS[coder].decode(payload, shapes, bits)

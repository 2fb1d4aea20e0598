"""Pipeline stage 5: the `.inr` container, byte by byte (see docs/format.md).

Layout of versions 1 and 2 (all integers little-endian)::

    0   3   magic "INR"
    3   1   format version (1 or 2; 2 where a family's hyper-parameters need fields of version 2)
    4   2   width, u16, 1..16384
    6   2   height, u16, 1..16384 (width x height at most 2^27)
    (a whole file is at most 2^28 bytes: limits.MAX_FILE_BYTES)
    8   1   colour: low nibble = colour transform id, high nibble = channels (1 or 3)
    9   1   model family id
    10  1   input encoding id
    11  E   input encoding parameters (fixed layout per encoding)
    .   F   family hyper-parameters (fixed layout per family and version)
    .   X   family side information (variable; e.g. the residual family's cell bitmap)
    .   1   entropy coder id
    .   5T  per stored tensor, in file order: bits (u8, 2..16), step (f32, finite, > 0)
    .   P   payload: the entropy-coded symbols, to 4 bytes before the end
    -4  4   CRC-32 (zlib's) of every byte before it

Nothing in the file is trusted until checked: the magic and version first, then the checksum,
then every field against its range, then the tensor shapes the header implies (their total
bounded by :data:`~.limits.MAX_PARAMS` before anything is allocated), then the payload's exact
length. The format's limits are :mod:`.limits`'s, which the encoder checks too.

The container knows nothing of networks: a model family's part of the header (its
hyper-parameters, side information and tensor shapes) is read through the family's
:class:`Layout`, which the caller looks up (``parse(data, layouts)``; see :mod:`.decoder`).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Protocol

from . import encodings, limits
from .color import TRANSFORM_IDS, TRANSFORM_NAMES
from .entropy import CODER_IDS, CODER_NAMES, MAX_BITS, MIN_BITS, qmax
from .errors import InrFormatError, InrInputError
from .fields import Reader, Schema
from .quantize import TensorQuant

MAGIC = b"INR"
#: The newest format version, which this build reads with every older one. A file is written in
#: the lowest version that holds it (:meth:`.fields.Schema.version`), so a file that needs no
#: newer field keeps its bytes.
VERSION = 2
MIN_FILE = 3 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 4
FLOAT32_MAX = 3.4028234663852886e38


class Layout(Protocol):
    """What the container needs of a model family: its name and id, the fixed-size
    hyper-parameters (``schema``), the variable-size side information, and the shapes of the
    stored tensors, all computed from the header alone (the model families implement it)."""

    name: ClassVar[str]
    family_id: ClassVar[int]
    schema: ClassVar[Schema]

    @classmethod
    def validate_for_image(cls, hparams: dict, height: int, width: int, channels: int
                           ) -> None: ...

    @classmethod
    def pack_extra(cls, extra: dict, hparams: dict, height: int, width: int) -> bytes: ...

    @classmethod
    def read_extra(cls, reader: Reader, hparams: dict, height: int, width: int) -> dict: ...

    @classmethod
    def shapes(cls, hparams: dict, height: int, width: int, channels: int, encoding_dim: int,
               extra: dict) -> list[tuple[int, ...]]: ...


@dataclass
class InrFile:
    """Everything a `.inr` file holds, parsed and validated."""

    width: int
    height: int
    channels: int
    color: str
    layout: type[Layout]
    hparams: dict
    encoding: str
    encoding_params: dict
    extra: dict = field(default_factory=dict)
    coder: str = "zstd"
    quants: list[TensorQuant] = field(default_factory=list)
    payload: bytes = b""

    @property
    def family(self) -> str:
        return self.layout.name

    @property
    def version(self) -> int:
        """The format version the file is written in: the lowest that holds its fields."""
        return self.layout.schema.version(self.layout.schema.validate(self.hparams))

    def shapes(self) -> list[tuple[int, ...]]:
        enc_dim = encodings.out_dim(self.encoding, self.encoding_params)
        return self.layout.shapes(self.hparams, self.height, self.width, self.channels, enc_dim,
                                  self.extra)

    def header_bytes(self) -> bytes:
        """Every byte before the payload."""
        family = self.layout
        enc_schema = encodings.SCHEMAS[self.encoding]
        out = bytearray(MAGIC)
        out += struct.pack("<BHHBBB", self.version, self.width, self.height,
                           TRANSFORM_IDS[self.color] | (self.channels << 4),
                           family.family_id, encodings.ENCODING_IDS[self.encoding])
        out += enc_schema.pack(self.encoding_params)
        out += family.schema.pack(self.hparams, self.version)
        out += family.pack_extra(self.extra, self.hparams, self.height, self.width)
        out += struct.pack("<B", CODER_IDS[self.coder])
        for q in self.quants:
            out += struct.pack("<Bf", q.bits, q.step)
        return bytes(out)

    def to_bytes(self) -> bytes:
        if len(self.quants) != len(self.shapes()):
            raise InrInputError("one quantiser per stored tensor is needed")
        check_params(self.shapes())
        body = self.header_bytes() + self.payload
        if len(body) + 4 > limits.MAX_FILE_BYTES:
            raise InrInputError(f"the file would be {len(body) + 4} bytes; the format holds at "
                                f"most {limits.MAX_FILE_BYTES}: ask for a lower rate")
        return body + struct.pack("<I", zlib.crc32(body))


def check_start(prefix: bytes) -> None:
    """Refuse data whose first bytes are not an .inr file's (before the rest is read)."""
    if len(prefix) >= len(MAGIC) and prefix[:len(MAGIC)] != MAGIC:
        raise InrFormatError("not an .inr file (bad magic)")


def check_params(shapes: list[tuple[int, ...]]) -> int:
    """The number of stored values ``shapes`` declare; InrFormatError above the format's
    limit (the encoder checks its plan with the same function)."""
    total = sum(math.prod(s) for s in shapes)
    if total > limits.MAX_PARAMS:
        raise InrFormatError(f"header declares {total} weights; at most {limits.MAX_PARAMS} "
                             "are allowed")
    return total


def parse(data: bytes, layouts: Mapping[int, type[Layout]]) -> InrFile:
    """Parse and validate a `.inr` file whose model family is one of ``layouts`` (by id).
    Raises :class:`InrFormatError` on any problem."""
    data = bytes(data)
    if len(data) > limits.MAX_FILE_BYTES:
        raise InrFormatError(f"{len(data)} bytes is larger than any .inr file "
                             f"({limits.MAX_FILE_BYTES} bytes at most)")
    if len(data) < 4 or data[:3] != MAGIC:
        raise InrFormatError("not an .inr file (bad magic)")
    version = data[3]
    if not 1 <= version <= VERSION:
        raise InrFormatError(f"unsupported .inr format version {version} (this build reads "
                             f"versions 1 to {VERSION})")
    if len(data) < MIN_FILE:
        raise InrFormatError(f"truncated file: {len(data)} bytes is shorter than any .inr file")
    stored_crc = struct.unpack("<I", data[-4:])[0]
    if zlib.crc32(data[:-4]) != stored_crc:
        raise InrFormatError("checksum mismatch: the file is corrupt or truncated")
    body = data[:-4]
    r = Reader(body, 4)
    width, height, colour_byte, family_id, encoding_id = r.unpack("HHBBB", "header")
    if not (1 <= width <= limits.MAX_SIDE and 1 <= height <= limits.MAX_SIDE) \
            or width * height > limits.FORMAT_MAX_PIXELS:
        raise InrFormatError(f"bad image size {width}x{height}")
    transform_id, channels = colour_byte & 0x0F, colour_byte >> 4
    if transform_id not in TRANSFORM_NAMES:
        raise InrFormatError(f"unknown colour transform id {transform_id}")
    color_name = TRANSFORM_NAMES[transform_id]
    if channels not in (1, 3) or (color_name == "ycbcr" and channels != 3):
        raise InrFormatError(f"bad channel count {channels} for colour transform {color_name}")
    if family_id not in layouts:
        raise InrFormatError(f"unknown model family id {family_id}")
    family = layouts[family_id]
    if encoding_id not in encodings.ENCODING_NAMES:
        raise InrFormatError(f"unknown input encoding id {encoding_id}")
    encoding = encodings.ENCODING_NAMES[encoding_id]
    encoding_params = encodings.SCHEMAS[encoding].read(r, f"{encoding} encoding")
    hparams = family.schema.read(r, f"{family.name} hyper-parameters", version)
    if family.schema.version(hparams) != version:  # one file per content: the lowest version
        raise InrFormatError(f"a version {version} file whose {family.name} hyper-parameters "
                             f"are those of version {family.schema.version(hparams)}")
    try:
        family.validate_for_image(hparams, height, width, channels)
    except ValueError as exc:
        raise InrFormatError(f"bad {family.name} hyper-parameters: {exc}") from None
    extra = family.read_extra(r, hparams, height, width)
    coder_id = r.unpack("B", "entropy coder id")
    if coder_id not in CODER_NAMES:
        raise InrFormatError(f"unknown entropy coder id {coder_id}")
    enc_dim = encodings.out_dim(encoding, encoding_params)
    shapes = family.shapes(hparams, height, width, channels, enc_dim, extra)
    check_params(shapes)
    quants = []
    for i in range(len(shapes)):
        bits, step = r.unpack("Bf", f"quantiser of tensor {i}")
        if not MIN_BITS <= bits <= MAX_BITS:
            raise InrFormatError(f"tensor {i} has {bits} bits; {MIN_BITS}..{MAX_BITS} allowed")
        # Every weight q * step must be a finite float32 (the decoder computes it so).
        if not (math.isfinite(step) and 0 < step * qmax(bits) <= FLOAT32_MAX):
            raise InrFormatError(f"tensor {i} has a bad step size {step}")
        quants.append(TensorQuant(bits, step))
    payload = r.take(r.remaining, "payload")
    if not payload:
        raise InrFormatError("the file has no payload")
    return InrFile(width=width, height=height, channels=channels, color=color_name,
                   layout=family, hparams=hparams, encoding=encoding,
                   encoding_params=encoding_params, extra=extra, coder=CODER_NAMES[coder_id],
                   quants=quants, payload=payload)

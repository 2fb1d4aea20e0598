"""Fixed-layout binary fields with bounds, and a reader that never reads past its data.

Model families and input encodings declare their hyper-parameters as a :class:`Schema`: an ordered
list of :class:`Field` objects, each a little-endian struct code with an inclusive range. The same
declaration packs the values into the `.inr` header, validates them when a header is parsed, and
documents them (``inr info`` and ``docs/format.md`` list them in this order).

A field added to a schema in a later format version says so (``since``) and holds the value that
files of earlier versions mean (``default``): a file is written in the lowest version whose
fields hold its values, so every file that needs no new field keeps its bytes, and a reader of
an older file gets the default.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InrFormatError, InrInputError


@dataclass(frozen=True)
class Field:
    """One hyper-parameter: its name, struct code (B, H, I, e or f), inclusive range and meaning;
    for a field added in a later format version, that version and the value older files mean."""

    name: str
    code: str
    lo: float
    hi: float
    doc: str = ""
    since: int = 1
    default: float | None = None

    def __post_init__(self):
        if self.since > 1 and self.default is None:
            raise ValueError(f"field {self.name} of version {self.since} needs a default")

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.code)

    @property
    def is_float(self) -> bool:
        return self.code in "ef"

    def check(self, value: Any, error: type[Exception]) -> Any:
        """Return ``value`` as the field's Python type, or raise ``error`` naming the field."""
        if self.is_float:
            value = float(value)
            if not math.isfinite(value) or not self.lo <= value <= self.hi:
                raise error(f"{self.name} = {value!r} is outside [{self.lo}, {self.hi}]")
            return value
        if isinstance(value, float) and not value.is_integer():
            raise error(f"{self.name} = {value!r} must be a whole number")
        value = int(value)
        if not self.lo <= value <= self.hi:
            raise error(f"{self.name} = {value} is outside [{int(self.lo)}, {int(self.hi)}]")
        return value


class Reader:
    """A cursor over bytes that raises :class:`InrFormatError` instead of reading past the end."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data = memoryview(data)
        self.offset = offset

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise InrFormatError(f"truncated file: {what} needs {n} bytes at offset {self.offset}, "
                                 f"{len(self.data) - self.offset} left")
        chunk = bytes(self.data[self.offset:self.offset + n])
        self.offset += n
        return chunk

    def unpack(self, code: str, what: str) -> Any:
        fmt = "<" + code
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))
        return values[0] if len(values) == 1 else values

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


class Schema:
    """An ordered set of fields packed back to back, with no padding and no names on disk."""

    def __init__(self, *fields: Field):
        self.fields = fields
        self._by_name = {f.name: f for f in fields}

    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def defaults(self) -> dict[str, float]:
        """The values of the fields that files of the first version do not hold."""
        return {f.name: f.default for f in self.fields if f.since > 1}

    def version(self, values: Mapping[str, Any]) -> int:
        """The lowest format version whose fields hold ``values``: that of the newest field
        whose value is not its default."""
        return max([1] + [f.since for f in self.fields
                          if f.since > 1 and values[f.name] != f.default])

    def size(self, version: int) -> int:
        """The bytes of the fields a file of ``version`` holds."""
        return sum(f.size for f in self.fields if f.since <= version)

    def validate(self, values: Mapping[str, Any], error: type[Exception] = InrInputError) -> dict:
        """Check every field is present, known and in range; return the normalised values."""
        unknown = set(values) - set(self._by_name)
        if unknown:
            raise error(f"unknown hyper-parameter(s): {', '.join(sorted(unknown))}")
        values = {**self.defaults(), **values}  # fields newer than the first are optional
        missing = [f.name for f in self.fields if f.name not in values]
        if missing:
            raise error(f"missing hyper-parameter(s): {', '.join(missing)}")
        out = {f.name: f.check(values[f.name], error) for f in self.fields}
        for f in self.fields:  # a value must survive its storage format unchanged
            if f.is_float:
                stored = struct.unpack("<" + f.code, struct.pack("<" + f.code, out[f.name]))[0]
                out[f.name] = stored
        return out

    def pack(self, values: Mapping[str, Any], version: int = 1) -> bytes:
        """The fields a file of ``version`` holds; InrInputError if a value needs a newer one."""
        checked = self.validate(values)
        if self.version(checked) > version:
            raise InrInputError(f"these values need format version {self.version(checked)}")
        return b"".join(struct.pack("<" + f.code, checked[f.name]) for f in self.fields
                        if f.since <= version)

    def read(self, reader: Reader, what: str, version: int = 1) -> dict:
        """The fields of a file of ``version``, the newer ones at their defaults."""
        raw = {f.name: reader.unpack(f.code, f"{what} {f.name}") if f.since <= version
               else f.default for f in self.fields}
        try:
            return self.validate(raw, InrFormatError)
        except InrFormatError as exc:
            raise InrFormatError(f"bad {what}: {exc}") from None

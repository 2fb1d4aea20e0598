"""The codecs a benchmark compares, as classes behind one interface (:class:`BenchCodec`).

A codec spec is a name from :data:`classical.CODECS` (``jpeg``, ``jpeg444``, ``webp``, ``avif``,
``jpeg2000``) or ``inr:FAMILY`` with settings joined by ``+``, e.g. ``inr:gridded+effort=best``
or ``inr:siren+encoding=positional:6+depth=5+cycles=2``: any key that
:class:`~inrcodec.options.EncodeOptions` takes (an option, a training override or a
hyper-parameter of the family), checked when the spec is parsed. A classical codec's settings
are its quality sweep; an inr codec's settings are target bits per pixel.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import InrInputError
from ..options import EncodeOptions
from ..presets import FAMILY_NAMES
from .classical import CODECS, Classical, JpegXL

#: Default rate targets (bpp) of inr codecs: they bracket 0.25, 0.5 and 1 bpp.
INR_TARGETS = (0.15, 0.3, 0.6, 1.1)


@dataclass
class Coded:
    """One image through one codec at one setting: the file, its decoding and their times."""

    data: bytes
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


class BenchCodec:
    """A codec under test: its spec and label, the settings it sweeps, a fingerprint of its
    implementation (cached results are redone when it changes), and one encode and decode."""

    kind: ClassVar[str]

    def __init__(self, spec: str, label: str):
        self.spec, self.label = spec, label

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def settings(self, points: int | None = None, bpps: list[float] | None = None
                 ) -> list[float]:
        raise NotImplementedError

    def run(self, pixels: np.ndarray, setting: float, effort: str | None = None) -> Coded:
        raise NotImplementedError

    def effort(self, default: str) -> str:
        """The effort this codec runs at when the benchmark's is ``default``: its spec's, for
        an inr codec that names one; the benchmark's otherwise (a classical codec has none, and
        its rows say so)."""
        return default


class ClassicalCodec(BenchCodec):
    """One of Pillow's codecs, swept over its quality settings."""

    kind = "classical"

    def __init__(self, spec: str, codec: Classical | JpegXL):
        super().__init__(spec, codec.label)
        self.codec = codec

    @property
    def fingerprint(self) -> str:
        return self.codec.fingerprint

    def settings(self, points=None, bpps=None):
        settings = list(self.codec.settings)
        if points and points < len(settings):
            picks = np.linspace(0, len(settings) - 1, points).round().astype(int)
            settings = [settings[i] for i in sorted(set(picks))]
        return settings

    def run(self, pixels, setting, effort=None):
        start = time.perf_counter()
        data = self.codec.encode(pixels, setting)
        encoded = time.perf_counter()
        decoded = self.codec.decode(data)
        return Coded(data, decoded, encoded - start, time.perf_counter() - encoded)


def inr_fingerprint() -> str:
    """``inr-`` and a hash of the codec's source (not the benchmark's) and its learned data (the
    warm starts), so cached inr results are redone whenever the encoder changes."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha1()
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.npy")]):
        if "bench" not in path.relative_to(root).parts:
            h.update(path.read_bytes())
    return "inr-" + h.hexdigest()[:12]


class InrCodec(BenchCodec):
    """A family of ours with the spec's settings, at target rates in bits per pixel."""

    kind = "inr"

    def __init__(self, spec: str, label: str, options: EncodeOptions, effort_given: bool):
        super().__init__(spec, label)
        self.options, self.effort_given = options, effort_given

    @property
    def family(self) -> str:
        return self.options.model

    @property
    def fingerprint(self) -> str:
        return inr_fingerprint()

    def settings(self, points=None, bpps=None):
        if bpps:
            return list(bpps)
        if points:
            if points == 1:
                return [0.3]
            return [round(math.exp(math.log(0.15) + i * math.log(1.1 / 0.15) / (points - 1)), 3)
                    for i in range(points)]
        return list(INR_TARGETS)

    def effort(self, default):
        return self.options.effort if self.effort_given else default

    def run(self, pixels, setting, effort=None):
        from ..decoder import decode
        from ..encoder import encode
        options = self.options.replace(bpp=setting)
        if effort:
            options = options.replace(effort=self.effort(effort))
        start = time.perf_counter()
        data = encode(pixels, options)
        encoded = time.perf_counter()
        decoded = np.atleast_3d(decode(data))  # the bench compares (H, W, C) arrays
        return Coded(data, decoded, encoded - start, time.perf_counter() - encoded)


def _value(text: str):
    """A spec value as a number or boolean where it reads as one (for the label; the options
    convert each value to its key's type)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_codec(spec: str) -> BenchCodec:
    spec = spec.strip()
    if spec in CODECS:
        codec = CODECS[spec]
        if not codec.available():
            raise InrInputError(f"Pillow here has no {codec.label} support")
        return ClassicalCodec(spec, codec)
    if spec.startswith("inr:"):
        name, *opts = spec[4:].split("+")
        if name not in FAMILY_NAMES:
            raise InrInputError(f"unknown model family in {spec!r}; choose from "
                                f"{', '.join(FAMILY_NAMES)}")
        settings = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise InrInputError(f"codec option {opt!r} in {spec!r} is not key=value")
            settings[key] = _value(value)
        try:
            options = EncodeOptions.from_settings(settings, model=name)
        except InrInputError as exc:
            raise InrInputError(f"{spec}: {exc}") from None
        label = "inr " + name + "".join(f" {k}={v}" for k, v in settings.items())
        return InrCodec(spec, label, options, "effort" in settings)
    raise InrInputError(f"unknown codec {spec!r}; choose from {', '.join(CODECS)} or inr:FAMILY")


def default_codecs() -> list[str]:
    return [f"inr:{name}" for name in FAMILY_NAMES] + [
        name for name, codec in CODECS.items() if codec.available()]

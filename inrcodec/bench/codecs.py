"""The codecs a benchmark compares, behind one interface.

A codec spec is a name from :data:`classical.CODECS` (``jpeg``, ``jpeg444``, ``webp``, ``avif``,
``jpeg2000``) or ``inr:FAMILY`` with options joined by ``+``, e.g. ``inr:gridded+effort=best``
or ``inr:siren+encoding=positional:6+depth=5``. Options in :data:`COMPRESS_OPTIONS` go to
:func:`inrcodec.compress`; any other is a hyper-parameter of the family. A classical codec's settings are its quality sweep; an inr codec's
settings are target bits per pixel.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InrInputError
from .classical import CODECS, Classical

#: Default rate targets (bpp) of inr codecs: they bracket 0.25, 0.5 and 1 bpp.
INR_TARGETS = (0.15, 0.3, 0.6, 1.1)
#: Options that go to inrcodec.compress (the last ones are FitOptions overrides, for ablations);
#: any other option of an inr codec is a hyper-parameter of its family.
COMPRESS_OPTIONS = {"effort", "steps", "seed", "encoding", "color", "bits", "compile", "lr",
                    "batch", "qat_steps", "qat_lr", "lr_floor", "warmup", "eval_every",
                    "allocation", "window_weights", "bits_per_weight", "coder"}


@dataclass
class Outcome:
    data: bytes
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


def _code_fingerprint() -> str:
    """A hash of the codec's source (not the benchmark's), so cached inr results are redone
    whenever the encoder changes."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        if "bench" not in path.relative_to(root).parts:
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


@dataclass
class BenchCodec:
    spec: str
    label: str
    kind: str  # "classical" or "inr"
    classical: Classical | None = None
    family: str = ""
    options: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        if self.kind == "inr":
            return "inr-" + _code_fingerprint()
        from PIL import __version__ as pillow, features
        return f"pillow-{pillow}-{features.version(self.classical.feature)}"

    def settings(self, points: int | None = None, bpps: list[float] | None = None
                 ) -> list[float]:
        if self.kind == "inr":
            if bpps:
                return list(bpps)
            if points:
                if points == 1:
                    return [0.3]
                return [round(math.exp(math.log(0.15) + i * math.log(1.1 / 0.15) / (points - 1)),
                              3) for i in range(points)]
            return list(INR_TARGETS)
        settings = list(self.classical.settings)
        if points and points < len(settings):
            picks = np.linspace(0, len(settings) - 1, points).round().astype(int)
            settings = [settings[i] for i in sorted(set(picks))]
        return settings

    def run(self, pixels: np.ndarray, setting: float, effort: str | None = None) -> Outcome:
        if self.kind == "classical":
            start = time.perf_counter()
            data = self.classical.encode(pixels, setting)
            encoded = time.perf_counter()
            decoded = self.classical.decode(data)
            return Outcome(data, decoded, encoded - start, time.perf_counter() - encoded)
        import inrcodec
        options = {k: v for k, v in self.options.items() if k in COMPRESS_OPTIONS}
        hparams = {k: v for k, v in self.options.items() if k not in COMPRESS_OPTIONS}
        if effort and "effort" not in options:
            options["effort"] = effort
        start = time.perf_counter()
        data = inrcodec.encode(pixels, model=self.family, bpp=setting, hparams=hparams, **options)
        encoded = time.perf_counter()
        decoded = inrcodec.decode(data)
        return Outcome(data, decoded, encoded - start, time.perf_counter() - encoded)


def parse_codec(spec: str) -> BenchCodec:
    spec = spec.strip()
    if spec in CODECS:
        codec = CODECS[spec]
        if not codec.available():
            raise InrInputError(f"Pillow here has no {codec.label} support")
        return BenchCodec(spec, codec.label, "classical", classical=codec)
    if spec.startswith("inr:"):
        from ..models import FAMILIES
        name, *opts = spec[4:].split("+")
        if name not in FAMILIES:
            raise InrInputError(f"unknown model family in {spec!r}; choose from "
                                f"{', '.join(FAMILIES)}")
        options = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise InrInputError(f"codec option {opt!r} in {spec!r} is not key=value")
            value = _number(value)
            options[key] = {"true": True, "false": False}.get(value, value) \
                if isinstance(value, str) else value
        label = "inr " + name + "".join(f" {k}={v}" for k, v in options.items())
        return BenchCodec(spec, label, "inr", family=name, options=options)
    raise InrInputError(f"unknown codec {spec!r}; choose from {', '.join(CODECS)} or inr:FAMILY")


def default_codecs() -> list[str]:
    from ..models import FAMILIES
    return [f"inr:{name}" for name in FAMILIES] + [
        name for name, codec in CODECS.items() if codec.available()]

"""One schema for the options of an encode: :class:`EncodeOptions`.

Every entry point builds one: :func:`inrcodec.encode` from its keyword arguments, ``inr encode``
from its flags and ``--hparam KEY=VALUE``, Pillow's ``save`` from its parameters, and
``inr bench`` from a codec spec such as ``inr:gridded+effort=best+cycles=2+width=24``. The same
flat ``key=value`` settings are accepted everywhere and routed by name:

- the fields of :class:`EncodeOptions` (model, effort, rate target, coder, seed, ...);
- training overrides: the fields of :class:`~.presets.Schedule` (steps, cycles, lr, ...);
- anything else is a hyper-parameter of the model family (``width``, ``rows``, ...).

Every value is checked when the options are built, before any work starts, and an unknown key
is refused with the list of valid ones. This module imports no torch until it has to check a
family's hyper-parameters or an input encoding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import entropy
from .errors import InrInputError
from .presets import DEFAULT_FAMILY, EFFORTS, FAMILY_NAMES, SCHEDULE_KEYS, Preset, Schedule, \
    preset

DEVICES = ("auto", "cpu", "cuda")
#: The PSNR targets a search accepts (dB): below, any image is a grey field; above, 8-bit
#: rounding itself is in the way.
MIN_PSNR, MAX_PSNR = 10.0, 60.0


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that decides an encode besides the image (see the module docstring)."""

    #: The model family (``inrcodec.presets.FAMILY_NAMES``).
    model: str = DEFAULT_FAMILY
    #: ``fast``, ``default`` or ``best``: the family's training schedule and sizing.
    effort: str = "default"
    #: The rate target: bits per pixel, or a quality 1..100 (``ratecontrol.quality_to_bpp``);
    #: neither means quality 50. The file lands at most 0.5% above the target.
    bpp: float | None = None
    quality: float | None = None
    #: A quality target instead: the smallest file found whose PSNR (dB, RGB) reaches it, by
    #: encoding at several rates (``ratecontrol.PsnrSearch``).
    psnr: float | None = None
    #: The family's hyper-parameters, in full or in part; what is not given is sized for the
    #: rate target.
    hparams: Mapping[str, float] = field(default_factory=dict)
    #: Overrides of the effort's training schedule (``steps`` keeps rounding's share).
    training: Mapping[str, Any] = field(default_factory=dict)
    #: ``none``, ``positional:L`` or ``fourier:N:SCALE[:SEED]``; None: the family's default.
    encoding: str | None = None
    #: ``rgb`` or ``ycbcr``; None: the family's default (grey images are always one channel).
    color: str | None = None
    #: The entropy coder (``inrcodec.entropy.CODERS``); None: the family's default.
    coder: str | None = None
    #: Quantise every tensor to this many bits instead of searching the steps for the rate
    #: target (the file is then as large as it comes out).
    bits: int | None = None
    #: The rate that sizing assumes per weight; None: the effort's.
    bits_per_weight: float | None = None
    #: Seed of the initialisation and of the training batches.
    seed: int = 0
    #: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``; the file is the same format.
    device: str = "auto"
    #: torch's CPU threads during the encode; None: as they are.
    threads: int | None = None
    #: Compile the training step (None: when a phase is long enough to pay).
    compile: bool | None = None
    #: The limits of decoding that the encode must stay within (None: ``limits.MAX_PIXELS``
    #: and ``limits.MAX_WORK``): an image of more pixels is refused from its header, and so is
    #: an encode whose file would cost a decoder more work (``ratecontrol.check_decodable``).
    #: Raise them as the decoder's, for a file its decoders will be told to allow.
    max_pixels: int | None = None
    max_work: float | None = None

    def __post_init__(self):
        for name, kind in FIELD_TYPES.items():  # strings from a command line become values
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _coerce(name, value, kind))
        _choice("model", self.model, FAMILY_NAMES)
        _choice("effort", self.effort, EFFORTS)
        if self.coder is not None:
            _choice("entropy coder", self.coder, tuple(entropy.CODERS))
        _choice("device", self.device, DEVICES)
        if sum(t is not None for t in (self.bpp, self.quality, self.psnr)) > 1:
            raise InrInputError("give one of bpp, quality and psnr")
        if self.bpp is not None and not 0.001 <= self.bpp <= 64:
            raise InrInputError(f"bpp must be in [0.001, 64], not {self.bpp}")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise InrInputError(f"quality must be in 1..100, not {self.quality}")
        if self.psnr is not None and not MIN_PSNR <= self.psnr <= MAX_PSNR:
            raise InrInputError(f"psnr must be in [{MIN_PSNR}, {MAX_PSNR}] dB, not {self.psnr}")
        if self.bits is not None and not entropy.MIN_BITS <= self.bits <= entropy.MAX_BITS:
            raise InrInputError(f"bits must be in {entropy.MIN_BITS}..{entropy.MAX_BITS}, "
                                f"not {self.bits}")
        if self.bits_per_weight is not None and not 0.5 <= self.bits_per_weight <= 32:
            raise InrInputError(f"bits_per_weight must be in [0.5, 32], not "
                                f"{self.bits_per_weight}")
        if not 0 <= self.seed < 2 ** 63:
            raise InrInputError(f"seed must be in 0..2^63-1, not {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise InrInputError(f"threads must be at least 1, not {self.threads}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise InrInputError(f"max_pixels must be at least 1, not {self.max_pixels}")
        if self.max_work is not None and not self.max_work > 0:
            raise InrInputError(f"max_work must be positive, not {self.max_work}")
        object.__setattr__(self, "hparams", dict(self.hparams))
        for key in self.training:
            if key not in SCHEDULE_KEYS:
                raise InrInputError(f"unknown training setting {key!r}; valid: "
                                    f"{', '.join(SCHEDULE_KEYS)}")
        object.__setattr__(self, "training", {k: _coerce(k, v, SCHEDULE_KEYS[k])
                                              for k, v in self.training.items()})
        try:
            self.schedule()
        except ValueError as exc:
            raise InrInputError(str(exc)) from None
        if self.color is not None:
            _choice("color", self.color, ("rgb", "ycbcr"))
        if self.encoding is not None:
            _check_encoding(self.encoding)
        if self.hparams:
            object.__setattr__(self, "hparams", _check_hparams(self.model, self.hparams))

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, **more: Any
                      ) -> EncodeOptions:
        """Options from flat ``key=value`` settings (values may be strings, as a command line
        or a codec spec gives them), routed by name; ``hparams`` and ``training`` may also be
        given as mappings. Raises :class:`InrInputError` naming the valid keys."""
        return cls().with_settings({**(settings or {}), **more})

    def with_settings(self, settings: Mapping[str, Any]) -> EncodeOptions:
        """These options with ``settings`` (as :meth:`from_settings` takes them) on top."""
        fields: dict[str, Any] = {}
        hparams, training = dict(self.hparams), dict(self.training)
        for key, value in settings.items():
            if key == "hparams":
                hparams.update(value or {})
            elif key == "training":
                training.update(value or {})
            elif key in FIELD_TYPES:
                fields[key] = value
            elif key in SCHEDULE_KEYS:
                training[key] = value
            else:
                hparams[key] = value
        return dataclasses.replace(self, **fields, hparams=hparams, training=training)

    def replace(self, **changes: Any) -> EncodeOptions:
        return dataclasses.replace(self, **changes)

    # -- what they mean -------------------------------------------------------------------
    @property
    def preset(self) -> Preset:
        return preset(self.model, self.effort)

    def schedule(self) -> Schedule:
        """The effort's training schedule with this encode's overrides."""
        schedule = self.preset.schedule
        overrides = dict(self.training)
        if "steps" in overrides:
            schedule = schedule.with_steps(overrides.pop("steps"))
        return dataclasses.replace(schedule, **overrides)

    def sizing(self) -> tuple[dict, float]:
        """The hyper-parameters fixed before sizing (the effort's, then the caller's) and the
        bits per weight the network is sized for."""
        return ({**self.preset.hparams, **self.hparams},
                self.bits_per_weight or self.preset.bits_per_weight)


#: Types of the fields that a setting may name directly.
FIELD_TYPES: dict[str, type] = {
    "model": str, "effort": str, "bpp": float, "quality": float, "psnr": float, "encoding": str, "color": str,
    "coder": str, "bits": int, "bits_per_weight": float, "seed": int, "device": str,
    "threads": int, "compile": bool, "max_pixels": int, "max_work": float}


def valid_keys(model: str) -> str:
    """The keys a setting may use for ``model``, grouped, for error messages and help."""
    return (f"valid keys: {', '.join(FIELD_TYPES)}; training: {', '.join(SCHEDULE_KEYS)}; "
            f"{model} hyper-parameters: {', '.join(_family_keys(model))}")


def _choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InrInputError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (from a string as a command line gives it, or checked)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif isinstance(value, str):
        return value
    article = "an" if kind is int else "a"
    raise InrInputError(f"{key} takes {article} {kind.__name__}, not {value!r}")


def _number(key: str, text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return _coerce(key, text, float)


def _family_keys(model: str) -> list[str]:
    from .models import get_family
    return get_family(model).schema.names()


def _check_hparams(model: str, hparams: dict) -> dict:
    from .models import get_family
    fields = {f.name: f for f in get_family(model).schema.fields}
    unknown = [k for k in hparams if k not in fields]
    if unknown:
        raise InrInputError(f"unknown option(s) {', '.join(map(repr, unknown))} for {model}; "
                            f"{valid_keys(model)}")
    out = {}
    for key, value in hparams.items():
        if isinstance(value, str):
            value = _number(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InrInputError(f"{key} takes a number, not {value!r}")
        out[key] = fields[key].check(value, InrInputError)
    return out


def _check_encoding(text: str) -> None:
    from .encodings import SCHEMAS, parse_encoding
    try:
        kind, params = parse_encoding(text)
        SCHEMAS[kind].validate(params, ValueError)
    except ValueError as exc:
        raise InrInputError(str(exc)) from None

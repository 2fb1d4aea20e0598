"""The pipeline, end to end: image -> colour transform -> fit -> quantise -> entropy code ->
container, and back.

:func:`compress` and :func:`decompress` are the library's entry points (``encode``/``decode`` are
the same with plain return values). Rate control: a target in bits per pixel (``bpp``, or
``quality`` through :func:`quality_to_bpp`) becomes a byte budget for the whole file. The network
is sized so that its weights fill the budget; after fitting, the quantiser step sizes are
searched so the entropy-coded payload fits; optional quantisation-aware fine-tuning then runs
through those quantisers, and a last check coarsens them if the file still overshoots (see
:mod:`.ratecontrol`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import container, entropy
from .color import ColorTransform, to_uint8
from .container import InrFile
from .encodings import Encoding, parse_encoding
from .errors import InrInputError
from .fit import FitOptions, FitReport, Progress, fit
from .imageio import MAX_PIXELS, MAX_SIDE, ImageLike, load_image
from .models import FAMILIES, get_family
from .models.base import ImageModel
from .quantize import TensorQuant, from_symbols, to_symbols
from .ratecontrol import BITS_PER_WEIGHT, budget_quantiser, fit_to_budget, fixed_bits


#: The efforts, from quickest to best. Each family sets its training steps per effort
#: (``ImageModel.steps``); every family's default effort encodes a Kodak image in under a minute
#: here (docs/results/kodak.md).
EFFORTS = ("fast", "default", "best")
#: Quantisation-aware fine-tuning steps, as a share of the training steps. Off by default: on
#: Kodak it gained nothing measurable at our quantiser steps while it cost more time than the
#: training steps it displaced (docs/experiments.md); ``qat_steps`` still turns it on.
QAT_SHARE = 0.0
#: Training samples per step, over all of a model's networks.
BATCH = 4096


def training_preset(family: type[ImageModel], effort: str, steps: int | None = None) -> dict:
    """Training steps, cosine cycles, starts, fine-tuning and progressive rounding steps, batch
    and learning rate for a family and effort; ``steps`` overrides the effort's step count."""
    if effort not in EFFORTS:
        raise InrInputError(f"unknown effort {effort!r}; choose from {', '.join(EFFORTS)}")
    if steps is not None and steps < 1:
        raise InrInputError("steps must be at least 1")
    preset_steps = family.steps[effort]
    steps = preset_steps if steps is None else steps
    # Progressive rounding keeps its share of the training when ``steps`` overrides the count.
    progressive_steps = round(family.progressive_steps.get(effort, 0) * steps / preset_steps)
    return dict(steps=steps, cycles=family.cycles.get(effort, 1),
                starts=family.starts.get(effort, 1), progressive_steps=progressive_steps,
                qat_steps=round(QAT_SHARE * steps), batch=BATCH, lr=family.learning_rate)


def quality_to_bpp(quality: float) -> float:
    """The bits per pixel that ``--quality Q`` asks for: 0.05 bpp at Q = 1, 2 bpp at Q = 100,
    evenly spaced in log-rate between (Q = 50 is about 0.31 bpp, Q = 75 about 0.78)."""
    if not 1 <= quality <= 100:
        raise InrInputError(f"quality must be in 1..100, not {quality}")
    return 0.05 * 40 ** ((quality - 1) / 99)


@dataclass
class EncodeResult:
    """A finished encoding: the file and what it cost."""

    data: bytes
    width: int
    height: int
    model: str
    params: int
    psnr: float
    seconds: float
    description: str
    report: FitReport

    @property
    def bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.width * self.height)

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "bpp": self.bpp, "psnr": self.psnr,
                "seconds": self.seconds, "model": self.model, "params": self.params,
                "width": self.width, "height": self.height, "description": self.description}


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of one shape, over all samples."""
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if err == 0 else 10 * math.log10(255.0 ** 2 / err)


def _model_file(model: ImageModel, quants: list[TensorQuant], payload: bytes, coder: str
                ) -> InrFile:
    return InrFile(width=model.width, height=model.height, channels=model.channels,
                   color=model.color.name, family=model.name, hparams=model.hparams,
                   encoding=model.encoding.kind, encoding_params=model.encoding.params,
                   extra=model.extra, coder=coder, quants=quants, payload=payload)


def _serialise(model: ImageModel, quants: dict[str, TensorQuant], coder: str) -> bytes:
    tensors = model.tensors()
    ordered = [quants[n] for n, _ in tensors]
    symbols = [to_symbols(p, q) for (_, p), q in zip(tensors, ordered)]
    payload = entropy.encode(symbols, [q.bits for q in ordered], coder)
    return _model_file(model, ordered, payload, coder).to_bytes()


def compress(image: ImageLike, *, model: str = "gridded", bpp: float | None = None,
             quality: float | None = None, effort: str = "default", steps: int | None = None,
             seed: int = 0, encoding: str | None = None, color: str | None = None,
             hparams: dict | None = None, bits: int | None = None, compile: bool | None = None,
             device: str = "auto", progress: Callable[[Progress], None] | None = None,
             bits_per_weight: float | None = None, coder: str = entropy.DEFAULT_CODER,
             **fit_overrides) -> EncodeResult:
    """Encode an image. Returns the `.inr` bytes with the encoding's measurements.

    - ``model``: a family name (see ``inrcodec.FAMILIES``).
    - ``bpp`` or ``quality`` (1..100): the rate target; neither means quality 50. The file lands
      at most 5% above the target.
    - ``effort``: ``fast``, ``default`` or ``best`` training presets; ``steps`` overrides the
      number of training steps.
    - ``bits_per_weight``: the rate that sizing assumes per weight (default BITS_PER_WEIGHT, or
      the family's for the effort, ``ImageModel.sizing``); lower means a bigger network with
      coarser quantisers.
    - Further keyword arguments override :class:`~.fit.FitOptions` fields (``lr``, ``batch``,
      ``qat_steps``, ``allocation``, ...), for experiments.
    - ``hparams``: the family's hyper-parameters, in full or in part; without a ``width`` (or the
      family's size parameter) the network is sized for the rate target.
    - ``bits``: quantise every tensor to this many bits instead of searching the step for the
      rate target (the file is then as large as it comes out).
    - ``encoding``: ``none``, ``positional:L`` or ``fourier:N:SCALE[:SEED]``.
    - ``coder``: the entropy coder, ``rans`` (default) or ``zstd`` (see :mod:`.entropy`).
    - ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; the file is the same
      format either way.
    """
    start = time.perf_counter()
    pixels = load_image(image)
    height, width, channels = pixels.shape
    family = get_family(model)
    preset = training_preset(family, effort, steps)
    preset.update(fit_overrides)
    sizing = family.sizing.get(effort, {})
    hparams = {**sizing.get("hparams", {}), **(hparams or {})}
    bits_per_weight = bits_per_weight or sizing.get("bits_per_weight", BITS_PER_WEIGHT)
    if bpp is not None and quality is not None:
        raise InrInputError("give --bpp or --quality, not both")
    if bpp is None:
        bpp = quality_to_bpp(50 if quality is None else quality)
    if not 0.001 <= bpp <= 64:
        raise InrInputError(f"bpp must be in [0.001, 64], not {bpp}")
    budget = bpp * height * width / 8
    if coder not in entropy.CODER_IDS:
        raise InrInputError(f"unknown entropy coder {coder!r}; choose from "
                            f"{', '.join(entropy.CODER_IDS)}")

    color_name = color or (family.default_color if channels == 3 else "rgb")
    try:
        transform = ColorTransform(color_name, channels)
        kind, enc_params = parse_encoding(encoding) if encoding else family.default_encoding
        enc = Encoding(kind, 2, **enc_params)
    except ValueError as exc:
        raise InrInputError(str(exc)) from None

    net = _build_model(family, height, width, transform, enc, hparams, budget, seed,
                       bits_per_weight,
                       preset["steps"] * preset["batch"] / preset["cycles"])
    torch_device = resolve_device(device)
    net.to(torch_device)
    header_bytes = _header_size(net)
    payload_budget = budget - header_bytes
    if bits is not None:
        quantiser = fixed_bits(bits)
    else:
        if payload_budget <= 16:
            raise InrInputError(f"{bpp} bpp is {budget:.0f} bytes for this image, too few for "
                                f"the {header_bytes}-byte header of a {family.name} model")
        total = net.n_params()

        def quantiser(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None
                      ) -> dict[str, TensorQuant]:
            share = sum(t.numel() for t in tensors.values()) / total
            return budget_quantiser(payload_budget * share, coder)(tensors, sensitivity)

    options = FitOptions(seed=seed, compile=compile, quantiser=quantiser, **preset)
    target = transform.forward(_image_tensor(pixels))
    report = fit(net, target, options, progress)
    net.cpu()  # the final checks and the reported PSNR use the CPU decoder's arithmetic
    quants = dict(report.quants)
    if bits is None:
        tensors = {n: p.detach() for n, p in net.tensors()}
        try:
            data, quants = fit_to_budget(tensors, quants, lambda q: _serialise(net, q, coder),
                                         budget)
        except ValueError as exc:
            raise InrInputError(str(exc)) from None
        _apply(net, quants)
    else:
        data = _serialise(net, quants, coder)
    decoded = _render_uint8(net, height, width)
    return EncodeResult(data=data, width=width, height=height, model=family.name,
                        params=net.n_params(), psnr=psnr(decoded, pixels),
                        seconds=time.perf_counter() - start, description=net.describe(),
                        report=report)


def _header_size(net: ImageModel) -> int:
    """Bytes of the file besides the payload: header and checksum."""
    placeholder = [TensorQuant(8, 1.0)] * len(net.tensors())
    return len(_model_file(net, placeholder, b"", entropy.DEFAULT_CODER).header_bytes()) + 4


def _build_model(family: type[ImageModel], height: int, width: int, transform: ColorTransform,
                 enc: Encoding, hparams: dict, budget: float, seed: int,
                 bits_per_weight: float, samples: float) -> ImageModel:
    """The network to fit: ``hparams`` as given, the rest sized so the weights fill ``budget``
    bytes at about ``bits_per_weight`` bits each after the header (whose size depends only on the
    number of tensors, so one correction settles it), for a fit that draws ``samples``
    in each cosine cycle."""
    header = 64
    for _ in range(2):
        chosen = dict(hparams)
        if set(family.schema.names()) - set(chosen):
            n_weights = int(max(0.0, budget - header) * 8 / bits_per_weight)
            chosen = family.hparams_for_params(n_weights, height, width, transform.channels,
                                               enc.out_dim, samples=samples, **hparams)
        try:
            net = family(height, width, transform, chosen, enc,
                         generator=torch.Generator().manual_seed(seed))
        except ValueError as exc:
            raise InrInputError(f"bad {family.name} hyper-parameters: {exc}") from None
        actual = _header_size(net)
        if actual <= header:
            break
        header = actual
    return net


def _apply(net: ImageModel, quants: dict[str, TensorQuant]) -> None:
    with torch.no_grad():
        for n, p in net.tensors():
            q = quants[n]
            p.copy_(from_symbols(to_symbols(p, q), q, tuple(p.shape)))


def encode(image: ImageLike, **options) -> bytes:
    """Encode an image to `.inr` bytes. See :func:`compress` for the options."""
    return compress(image, **options).data


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InrInputError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InrInputError("no CUDA device is available to torch here")
    return torch.device(device)


def load_model(data: bytes, device: str = "cpu") -> ImageModel:
    """Parse a `.inr` file and rebuild its network with the stored weights."""
    f = container.parse(data)
    family = FAMILIES[f.family]
    transform = ColorTransform(f.color, f.channels)
    enc = Encoding(f.encoding, 2, **f.encoding_params)
    net = family(f.height, f.width, transform, f.hparams, enc, extra=f.extra)
    tensors = net.tensors()
    sizes = [p.numel() for _, p in tensors]
    symbols = entropy.decode(f.payload, sizes, [q.bits for q in f.quants], f.coder)
    with torch.no_grad():
        for (name, p), q, s in zip(tensors, f.quants, symbols):
            if s.size and int(np.abs(s).max()) > q.qmax:
                raise container.InrFormatError(f"tensor {name} has symbols beyond its "
                                               f"{q.bits}-bit range")
            p.copy_(from_symbols(s, q, tuple(p.shape)))
    return net.to(resolve_device(device))


def output_size(width: int, height: int, scale: float | None = None,
                size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (width, height) of a decode at ``scale`` or at an explicit ``size``."""
    if scale is not None and size is not None:
        raise InrInputError("give a scale or a size, not both")
    if size is not None:
        out_w, out_h = size
    else:
        scale = 1.0 if scale is None else float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise InrInputError(f"scale must be a positive number, not {scale}")
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    if not (1 <= out_w <= MAX_SIDE and 1 <= out_h <= MAX_SIDE) or out_w * out_h > MAX_PIXELS:
        raise InrInputError(f"output size {out_w}x{out_h} is outside 1..{MAX_SIDE} per side "
                            f"and {MAX_PIXELS} pixels")
    return out_w, out_h


def _render_uint8(net: ImageModel, out_h: int, out_w: int) -> np.ndarray:
    out = np.empty((out_h, out_w, net.channels), dtype=np.uint8)
    for r0, band in net.render_bands(out_h, out_w):
        out[r0:r0 + band.shape[0]] = to_uint8(net.color.inverse(band)).numpy()
    return out


def decode(data: bytes, scale: float | None = None, size: tuple[int, int] | None = None,
           device: str = "cpu") -> np.ndarray:
    """Decode `.inr` bytes to a uint8 array (H, W, C), C = 3 or 1, at any scale or size.

    ``device`` renders on ``cuda`` (or ``auto``); the CPU default needs no GPU and gives the
    same pixels everywhere up to floating-point rounding (one 8-bit level at most)."""
    net = load_model(data, device)
    out_w, out_h = output_size(net.width, net.height, scale, size)
    return _render_uint8(net, out_h, out_w)


def info(data: bytes) -> dict:
    """What a `.inr` file holds, without decoding it (a stable schema; see docs/cli.md)."""
    f = container.parse(data)
    shapes = f.shapes()
    params = sum(math.prod(s) for s in shapes)
    header = len(f.header_bytes())
    return {
        "format_version": f.version,
        "width": f.width,
        "height": f.height,
        "channels": f.channels,
        "color": f.color,
        "model": f.family,
        "hparams": f.hparams,
        "encoding": {"kind": f.encoding, **f.encoding_params},
        "extra": f.extra,
        "coder": f.coder,
        "params": params,
        "tensors": [{"shape": list(s), "bits": q.bits, "step": q.step}
                    for s, q in zip(shapes, f.quants)],
        "bytes": len(data),
        "header_bytes": header,
        "payload_bytes": len(f.payload),
        "bpp": 8 * len(data) / (f.width * f.height),
    }

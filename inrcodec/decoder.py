"""Decoding: a `.inr` file rendered to pixels at any size, and what a file holds.

Needs no training code: it loads the file's network (:mod:`.bitstream`) and renders it in bands
of bounded memory through the family's own ``render_band``.

A decode's cost is bounded before any of it is spent, from the header alone (:func:`check_cost`):
at most :data:`~.limits.MAX_PIXELS` output pixels and :data:`~.limits.MAX_WORK` multiply-adds,
every stage counted: the entropy decoding of the stored values (their number times the coder's
``work_per_value``) and the rendering (output pixels times the family's ``macs_per_pixel``). A
caller who trusts a file raises them per call (``max_pixels=``, ``max_work=``; ``inr decode
--max-pixels/--max-work``) or for the process, as Pillow's ``Image.MAX_IMAGE_PIXELS`` is raised
(``inrcodec.limits.MAX_PIXELS = ...``). An input longer than any `.inr` file is refused as it is
read (:data:`~.limits.MAX_FILE_BYTES`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import torch

from . import entropy, limits
from .bitstream import build, read
from .color import to_uint8
from .container import InrFile, check_start
from .errors import InrInputError
from .imageio import read_binary
from .models.base import ImageModel

#: What a decode reads: a path, bytes, or a binary file.
InrSource = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]
#: A decode's size request: (width, height), either of them None to keep the aspect ratio.
Size = tuple[int | None, int | None]


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InrInputError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InrInputError("no CUDA device is available to torch here")
    return torch.device(device)


def read_inr(source: InrSource) -> bytes:
    """The bytes of a `.inr` file (a path, bytes or a binary file): refused at its first bytes
    if they are not an .inr file's, and as it is read if it is longer than any can be."""
    return read_binary(source, "an .inr file", limits.MAX_FILE_BYTES, check_start)


def _side(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= limits.MAX_SIDE:
        raise InrInputError(f"{what} must be a whole number of pixels in 1..{limits.MAX_SIDE}, "
                            f"not {value!r}")
    return int(value)


def output_size(width: int, height: int, scale: float | None = None,
                size: Size | None = None) -> tuple[int, int]:
    """The (width, height) of a decode at ``scale`` or at an explicit ``size`` (one side of it
    may be None: the other sets it, keeping the stored aspect ratio)."""
    if scale is not None and size is not None:
        raise InrInputError("give a scale or a size, not both")
    if size is not None:
        out_w, out_h = size
        if out_w is None and out_h is None:
            raise InrInputError("a size needs a width, a height or both")
        if out_w is not None:
            out_w = _side(out_w, "the output width")
        if out_h is not None:
            out_h = _side(out_h, "the output height")
        if out_w is None:
            out_w = max(1, round(width * out_h / height))
        elif out_h is None:
            out_h = max(1, round(height * out_w / width))
    else:
        try:
            scale = 1.0 if scale is None else float(scale)
        except (TypeError, ValueError):
            raise InrInputError(f"scale must be a number, not {scale!r}") from None
        if not (math.isfinite(scale) and scale > 0):
            raise InrInputError(f"scale must be a positive number, not {scale}")
        exact_w, exact_h = width * scale, height * scale  # floats: no overflow for any scale
        if max(exact_w, exact_h) > limits.MAX_SIDE + 0.5:
            raise InrInputError(f"scale {scale:g} is too large for this {width}x{height} image: "
                                f"an output side may be at most {limits.MAX_SIDE} pixels "
                                f"(scale {limits.MAX_SIDE / max(width, height):.4g} at most)")
        out_w, out_h = max(1, round(exact_w)), max(1, round(exact_h))
    if not (out_w <= limits.MAX_SIDE and out_h <= limits.MAX_SIDE) \
            or out_w * out_h > limits.FORMAT_MAX_PIXELS:
        raise InrInputError(f"output size {out_w}x{out_h} is outside 1..{limits.MAX_SIDE} per "
                            f"side and {limits.FORMAT_MAX_PIXELS} pixels")
    return out_w, out_h


@dataclass(frozen=True)
class Cost:
    """What a decode of a file at some size costs: its output pixels and its work, in
    multiply-adds, of entropy decoding the stored values and of rendering."""

    pixels: int
    values: int
    entropy: float
    render: float

    @property
    def work(self) -> float:
        return self.entropy + self.render

    def describe(self) -> str:
        return (f"{self.work:.2g} multiply-adds ({self.entropy:.2g} to entropy-decode "
                f"{self.values} stored values, {self.render:.2g} to render)")


def decode_cost(f: InrFile, out_w: int, out_h: int) -> Cost:
    """The cost of decoding ``f`` at out_w x out_h, from its header alone."""
    shapes = f.shapes()
    values = sum(math.prod(s) for s in shapes)
    pixels = out_w * out_h
    return Cost(pixels, values, float(values * entropy.CODERS[f.coder].work_per_value),
                pixels * f.layout.macs_per_pixel(f.hparams, shapes)
                + f.layout.macs_per_decode(f.hparams, shapes))


def check_cost(f: InrFile, out_w: int, out_h: int, max_pixels: int | None = None,
               max_work: float | None = None) -> float:
    """Refuse a decode of ``f`` at out_w x out_h above the pixel or work limits (None: those
    of :mod:`.limits`); return its work in multiply-adds."""
    max_pixels, max_work = limits.pixel_limit(max_pixels), limits.work_limit(max_work)
    cost = decode_cost(f, out_w, out_h)
    if cost.pixels > max_pixels:
        raise InrInputError(f"a {out_w}x{out_h} decode is {cost.pixels} pixels, more than the "
                            f"limit of {max_pixels}; allow it with --max-pixels (max_pixels=) "
                            "if you trust the file")
    if cost.work > max_work:
        raise InrInputError(f"a {out_w}x{out_h} decode of this {f.family} file costs "
                            f"{cost.describe()}, more than the limit of {max_work:.2g}; allow "
                            "it with --max-work (max_work=) if you trust the file")
    return cost.work


def render(model: ImageModel, out_h: int, out_w: int) -> np.ndarray:
    """``model`` rendered as a uint8 array (out_h, out_w, C), band by band."""
    out = np.empty((out_h, out_w, model.channels), dtype=np.uint8)
    for r0, band in model.render_bands(out_h, out_w):
        out[r0:r0 + band.shape[0]] = to_uint8(model.color.inverse(band)).numpy()
    return out


def decode(source: InrSource, scale: float | None = None, size: Size | None = None,
           device: str = "cpu", max_pixels: int | None = None,
           max_work: float | None = None) -> np.ndarray:
    """Decode a `.inr` file (a path, bytes or a binary file) to a uint8 array at any scale or
    size: (H, W, 3) for colour, (H, W) for grey (as Pillow's ``np.asarray`` gives them).

    ``device`` renders on ``cuda`` (or ``auto``); the CPU default needs no GPU and gives the
    same pixels everywhere up to floating-point rounding (one 8-bit level at most).
    ``max_pixels`` and ``max_work`` raise the limits of :func:`check_cost` for this call."""
    f = read(read_inr(source))
    out_w, out_h = output_size(f.width, f.height, scale, size)
    check_cost(f, out_w, out_h, max_pixels, max_work)
    pixels = render(build(f).to(resolve_device(device)), out_h, out_w)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def info(source: InrSource) -> dict:
    """What a `.inr` file (a path, bytes or a binary file) holds, without decoding it (a
    stable schema; see docs/cli.md)."""
    data = read_inr(source)
    f = read(data)
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

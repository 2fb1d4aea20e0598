"""Decoding: a `.inr` file rendered to pixels at any size, and what a file holds.

Needs no training code: it loads the file's network (:mod:`.bitstream`) and renders it in bands
of bounded memory through the family's own ``render_band``.

A decode's cost is bounded before any of it is spent, from the header alone: at most
:data:`MAX_DECODE_PIXELS` output pixels and :data:`MAX_DECODE_WORK` multiply-adds (output pixels
times the family's ``macs_per_pixel``). A caller who trusts a file raises them per call
(``max_pixels=``, ``max_work=``; ``inr decode --max-pixels/--max-work``) or for the process, as
Pillow's ``Image.MAX_IMAGE_PIXELS`` is raised (``inrcodec.decoder.MAX_DECODE_PIXELS = ...``).
"""

from __future__ import annotations

import math
import os
from typing import BinaryIO, Union

import numpy as np
import torch

from .bitstream import build, read
from .color import to_uint8
from .container import InrFile
from .errors import InrInputError
from .imageio import MAX_PIXELS, MAX_SIDE, read_binary
from .models.base import ImageModel

#: What a decode reads: a path, bytes, or a binary file.
InrSource = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]

#: Output pixels a decode renders unless the caller allows more (8192 x 8192; the format's own
#: limit, MAX_PIXELS, is twice that).
MAX_DECODE_PIXELS = 1 << 26
#: Multiply-adds a decode may spend unless the caller allows more: about a minute on two CPU
#: cores (a Kodak file at 4x costs about 5e10).
MAX_DECODE_WORK = 1 << 40


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InrInputError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InrInputError("no CUDA device is available to torch here")
    return torch.device(device)


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


def check_cost(f: InrFile, out_w: int, out_h: int, max_pixels: int | None = None,
               max_work: float | None = None) -> float:
    """Refuse a decode of ``f`` at out_w x out_h above the pixel or work limits (None: the
    module's); return its multiply-adds."""
    max_pixels = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    max_work = MAX_DECODE_WORK if max_work is None else max_work
    pixels = out_w * out_h
    if pixels > max_pixels:
        raise InrInputError(f"a {out_w}x{out_h} decode is {pixels} pixels, more than the limit "
                            f"of {max_pixels}; allow it with --max-pixels (max_pixels=) if you "
                            f"trust the file")
    work = pixels * f.layout.macs_per_pixel(f.hparams, f.shapes())
    if work > max_work:
        raise InrInputError(f"a {out_w}x{out_h} decode of this {f.family} file costs {work:.2g} "
                            f"multiply-adds, more than the limit of {max_work:.2g}; allow it "
                            f"with --max-work (max_work=) if you trust the file")
    return work


def render(model: ImageModel, out_h: int, out_w: int) -> np.ndarray:
    """``model`` rendered as a uint8 array (out_h, out_w, C), band by band."""
    out = np.empty((out_h, out_w, model.channels), dtype=np.uint8)
    for r0, band in model.render_bands(out_h, out_w):
        out[r0:r0 + band.shape[0]] = to_uint8(model.color.inverse(band)).numpy()
    return out


def decode(source: InrSource, scale: float | None = None, size: tuple[int, int] | None = None,
           device: str = "cpu", max_pixels: int | None = None,
           max_work: float | None = None) -> np.ndarray:
    """Decode a `.inr` file (a path, bytes or a binary file) to a uint8 array at any scale or
    size: (H, W, 3) for colour, (H, W) for grey (as Pillow's ``np.asarray`` gives them).

    ``device`` renders on ``cuda`` (or ``auto``); the CPU default needs no GPU and gives the
    same pixels everywhere up to floating-point rounding (one 8-bit level at most).
    ``max_pixels`` and ``max_work`` raise the limits of :func:`check_cost` for this call."""
    f = read(read_binary(source, "an .inr file"))
    out_w, out_h = output_size(f.width, f.height, scale, size)
    check_cost(f, out_w, out_h, max_pixels, max_work)
    pixels = render(build(f).to(resolve_device(device)), out_h, out_w)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def info(source: InrSource) -> dict:
    """What a `.inr` file (a path, bytes or a binary file) holds, without decoding it (a
    stable schema; see docs/cli.md)."""
    data = read_binary(source, "an .inr file")
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

"""Decoding: a `.inr` file rendered to pixels at any size, and what a file holds.

Needs no training code: it loads the file's network (:mod:`.bitstream`) and renders it in bands
of bounded memory through the family's own ``render_band``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .bitstream import load_model, read
from .color import to_uint8
from .errors import InrInputError
from .imageio import MAX_PIXELS, MAX_SIDE
from .models.base import ImageModel


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


def render(model: ImageModel, out_h: int, out_w: int) -> np.ndarray:
    """``model`` rendered as a uint8 array (out_h, out_w, C), band by band."""
    out = np.empty((out_h, out_w, model.channels), dtype=np.uint8)
    for r0, band in model.render_bands(out_h, out_w):
        out[r0:r0 + band.shape[0]] = to_uint8(model.color.inverse(band)).numpy()
    return out


def decode(data: bytes, scale: float | None = None, size: tuple[int, int] | None = None,
           device: str = "cpu") -> np.ndarray:
    """Decode `.inr` bytes to a uint8 array (H, W, C), C = 3 or 1, at any scale or size.

    ``device`` renders on ``cuda`` (or ``auto``); the CPU default needs no GPU and gives the
    same pixels everywhere up to floating-point rounding (one 8-bit level at most)."""
    model = load_model(data)
    out_w, out_h = output_size(model.width, model.height, scale, size)
    return render(model.to(resolve_device(device)), out_h, out_w)


def info(data: bytes) -> dict:
    """What a `.inr` file holds, without decoding it (a stable schema; see docs/cli.md)."""
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

"""Quality metrics: PSNR over RGB on 8-bit values (and of a mean squared error on [0, 1]
values, as training measures it), and MS-SSIM.

MS-SSIM is pytorch-msssim's (5 scales, Gaussian window of 11, the usual weights). Images whose
smaller side is at most 160 pixels are too small for that window at 5 scales; they are measured
with the largest odd window that fits (at least 3), and :func:`ms_ssim_window` says which.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ms_ssim", "ms_ssim_db", "ms_ssim_window", "psnr", "psnr_of_mse"]


def _same_shape(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as (H, W, C) (a grey (H, W) is (H, W, 1)); a ValueError if they differ."""
    a, b = np.atleast_3d(a), np.atleast_3d(b)
    if a.shape != b.shape:
        raise ValueError(f"images of different shapes: {a.shape} and {b.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of one shape, over all samples; a grey image may
    be (H, W) or (H, W, 1)."""
    a, b = _same_shape(a, b)
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if err == 0 else 10 * math.log10(255.0 ** 2 / err)


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of values in [0, 1] (floored at 1e-12)."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def ms_ssim_window(height: int, width: int) -> int | None:
    """The window MS-SSIM uses for an image of this size; None if it is too small."""
    side = min(height, width)
    window = 11
    while window >= 3 and not side > (window - 1) * 16:
        window -= 2
    return window if window >= 3 else None


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two uint8 images (H, W, C) or (H, W), in [0, 1]; NaN for images under 33 pixels a side."""
    try:
        from pytorch_msssim import ms_ssim as _ms_ssim
    except ImportError:  # pragma: no cover - an install without the bench extra
        raise ImportError("MS-SSIM needs pytorch-msssim: pip install 'inrcodec[bench]'") from None
    a, b = _same_shape(a, b)
    window = ms_ssim_window(a.shape[0], a.shape[1])
    if window is None:
        return float("nan")
    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
    # oneDNN's grouped convolution (the Gaussian window, one group per channel) is 3x slower
    # than PyTorch's own on a CPU; float64 would be 4x slower again and changes nothing here.
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return float(_ms_ssim(x, y, data_range=255, size_average=True, win_size=window))
    finally:
        torch.backends.mkldnn.enabled = onednn


def ms_ssim_db(value: float) -> float:
    """MS-SSIM as decibels, -10 log10(1 - MS-SSIM), the usual scale for plotting it."""
    return float("inf") if value >= 1 else -10 * math.log10(1 - value)

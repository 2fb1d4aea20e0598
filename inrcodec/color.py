"""Pipeline stage 1: the colour transform between RGB and the space the model is fitted in.

Pixel values enter the model space centred: ``model = M (rgb - 1/2)`` with rgb in [0, 1], where M
is the identity (``rgb``) or the BT.601 full-range matrix of JPEG/JFIF (``ycbcr``). Grey images
have one channel and always use the identity.

The loss is always measured in RGB, as PSNR is: an error ``e`` in model space is an RGB error
``M^-1 e``, and :meth:`ColorTransform.rgb_error` maps one to the other, so fitting in YCbCr changes
how the model spends its capacity, not what it optimises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_YCBCR = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.168735892, -0.331264108, 0.5],
    [0.5, -0.418687589, -0.081312411],
], dtype=torch.float64)

#: Colour transforms by the id stored in the `.inr` header.
TRANSFORM_IDS = {"rgb": 0, "ycbcr": 1}
TRANSFORM_NAMES = {v: k for k, v in TRANSFORM_IDS.items()}


@dataclass(frozen=True)
class ColorTransform:
    name: str
    channels: int

    def __post_init__(self):
        if self.name not in TRANSFORM_IDS:
            raise ValueError(f"unknown colour transform {self.name!r}")
        if self.name == "ycbcr" and self.channels != 3:
            raise ValueError("ycbcr needs 3 channels")

    @property
    def matrix(self) -> torch.Tensor:
        return _YCBCR.float() if self.name == "ycbcr" else torch.eye(self.channels)

    @property
    def inverse_matrix(self) -> torch.Tensor:
        return torch.linalg.inv(_YCBCR).float() if self.name == "ycbcr" else torch.eye(self.channels)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], channels last -> centred model space."""
        centred = rgb - 0.5
        return centred if self.name == "rgb" else centred @ self.matrix.T

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """Model space -> RGB in [0, 1] (unclamped), channels last."""
        return self.rgb_error(values) + 0.5

    def rgb_error(self, error: torch.Tensor) -> torch.Tensor:
        """An error in model space, channels last, as the RGB error it causes."""
        return error if self.name == "rgb" else error @ self.inverse_matrix.T


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 with rounding to the nearest level. A NaN (only a forged file's
    weights can make one) becomes 0 on every machine, where a cast would be undefined."""
    return (rgb.nan_to_num(0.0).clamp(0, 1) * 255).round_().to(torch.uint8)

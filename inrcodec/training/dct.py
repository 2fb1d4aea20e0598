"""The DCT-head family's encode side: training on each block's DCT coefficients directly (the
DCT is orthonormal, so their squared error is the pixels'), and its sizing."""

from __future__ import annotations

from functools import partial
from typing import Iterator

import torch

from ..models.base import SineLayers, SirenStack
from ..models.dct import DctHead, dct_matrix
from ..presets import Schedule
from . import trainable
from .base import FitTask, Trainable
from .siren import largest_width

#: Blocks per training step, as a fraction of the effort's samples per step.
BATCH_FACTOR = 0.25


@trainable
class DctFit(Trainable, DctHead):
    def block_coefficients(self, target: torch.Tensor) -> torch.Tensor:
        """Zig-zag DCT coefficients of every block of ``target`` (H, W, C): (N, C, coeffs).
        Edge blocks are completed by repeating the last row and column."""
        b = self.block
        pad_h, pad_w = self.n_rows * b - self.height, self.n_cols * b - self.width
        image = target.permute(2, 0, 1)[None]
        if pad_h or pad_w:
            image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        blocks = image[0].reshape(self.channels, self.n_rows, b, self.n_cols, b)
        blocks = blocks.permute(1, 3, 0, 2, 4)  # rows, cols, C, b, b
        d = dct_matrix(b)
        coefficients = d @ blocks @ d.T
        flat = coefficients.reshape(self.n_rows * self.n_cols, self.channels, b * b)
        return flat[..., self.flat_index].contiguous()

    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        coefficients = self.block_coefficients(target)
        coords = self.block_coords(torch.arange(self.n_rows), torch.arange(self.n_cols))
        inverse_t = self.color.inverse_matrix.T.contiguous()
        n = coords.shape[0]

        def draw(generator: torch.Generator, batch: int) -> torch.Tensor:
            return torch.randint(0, n, (batch,), generator=generator)

        def assemble(data: dict[str, torch.Tensor], index: torch.Tensor):
            return data["coords"][index][None], data["coefficients"][index][None]

        def loss(stored: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
            error = self.spread(stored) - wanted  # (1, B, C, K)
            return (error.transpose(-1, -2) @ inverse_t.to(error.device)).square().mean()

        yield FitTask(module=self, draw=draw, assemble=assemble,
                      data={"coords": coords, "coefficients": coefficients}, loss=loss,
                      samples=n, name="dct",
                      evaluate=partial(self.mse_against, target), batch_factor=BATCH_FACTOR)

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        hp = {"block": 8, "coeffs": 21, "chroma_coeffs": 6 if channels == 3 else 0, "depth": 3,
              "w0_first": 30.0, "w0": 30.0, **fixed}
        outputs = hp["coeffs"] + (channels - 1) * hp["chroma_coeffs"]
        hp.setdefault("width", largest_width(n_params, lambda w: SirenStack.count(
            1, encoding_dim, w, hp["depth"], outputs, SineLayers.of(hp))))
        return hp

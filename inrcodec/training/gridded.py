"""The gridded family's encode side: its training stage (a tiled SIREN's) and its sizing, the
grid and depth chosen by rate and training length."""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator

import torch

from ..models.base import SineLayers, SirenStack
from ..models.gridded import Gridded
from ..presets import Schedule
from . import trainable
from .base import FitTask, Trainable
from .siren import largest_width, tapered, tiled_fit_task

# Sizing rules, each measured in docs/experiments.md ("Training steps instead of fine-tuning,
# and the grid sized by rate"; "A deeper network at low rates"; "Warm restarts"):
#: Hidden width that sizing aims for: the grid gets as many cells as networks of this width
#: the budget buys (cells near 20 wide beat finer and coarser grids at 0.12 to 1 bpp).
TARGET_WIDTH = 20
#: Networks get 4 sine layers rather than 3 below this many weights per pixel (about 0.65 bpp;
#: +0.26 to +0.41 dB at 0.12 to 0.5 bpp, -0.12 dB at 1 bpp) ...
DEEP_BELOW = 0.1
#: ... and only when one cosine cycle visits each pixel this many times on average (177 for a
#: Kodak image at the default and best efforts): with far fewer visits depth 4 has not
#: converged, with far more its long training went astray, where depth 3 was sound in both.
DEEP_VISITS = (100, 400)


def grid_for(height: int, width: int, cell_side: float) -> tuple[int, int]:
    """Rows and columns of cells about ``cell_side`` pixels square."""
    return (min(64, max(1, round(height / cell_side))), min(64, max(1, round(width / cell_side))))


@trainable
class GriddedFit(Trainable, Gridded):
    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        yield tiled_fit_task(self.field, target, self.color, partial(self.mse_against, target),
                             "gridded", error_map=partial(self.error_map, target),
                             schedule=schedule)

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        pixels = height * width
        visits = math.inf if samples is None else samples / pixels
        deep = n_params < DEEP_BELOW * pixels and DEEP_VISITS[0] <= visits <= DEEP_VISITS[1]
        depth = 4 if deep else 3
        hp = {"depth": depth, "overlap": 0.0625, "w0_first": 20.0, "w0": 30.0, **fixed}
        # The grid is chosen for networks of equal widths, whatever the sine layers: tapered
        # widths reshape each cell's network within its share of the weights, so that a step
        # costs what it did (counted with the taper, the cells grew up to sixfold at 0.25 bpp).
        per_cell = SirenStack.count(1, encoding_dim, hp.get("width", TARGET_WIDTH), hp["depth"],
                                    channels)
        cells = max(1.0, n_params / per_cell)
        rows, cols = grid_for(height, width, math.sqrt(height * width / cells))

        def size(hp: dict) -> dict:
            grid = hp.get("rows", rows), hp.get("cols", cols)

            def hidden(rows: int, cols: int) -> int:
                return largest_width(n_params, lambda w: SirenStack.count(
                    rows * cols, encoding_dim, w, hp["depth"], channels, SineLayers.of(hp)))

            if "width" in hp:
                return {**hp, "rows": grid[0], "cols": grid[1]}
            while hidden(*grid) < 8 and grid[0] * grid[1] > 1 \
                    and "rows" not in hp and "cols" not in hp:
                grid = max(1, math.ceil(grid[0] / 2)), max(1, math.ceil(grid[1] / 2))
            return {**hp, "width": hidden(*grid), "rows": grid[0], "cols": grid[1]}

        return tapered(size, hp, "width", keep=("rows", "cols"))

"""The gridded family: one small SIREN per cell of a rows x cols grid, blended without seams.

All cells' networks share one shape and train together as one batched model (batched matrix
products, one network per cell). Each network sees its cell's local coordinates (the cell spans
[-1, 1]), so a small network only has to represent a small, simple patch: fewer operations per
pixel than one large network of the same parameter count, and faster convergence.

Seams: each cell's network is also trained on a band of ``overlap`` times the cell size beyond
every edge it shares with a neighbour, and rendering blends neighbours across that band with
cos^2 / sin^2 weights that sum to one (see :mod:`.tiling`). docs/experiments.md measures PSNR
along cell edges against PSNR elsewhere.
"""

from __future__ import annotations

from functools import partial

import math
from typing import Iterator

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import FitTask, ImageModel, SirenStack
from .siren import DEPTH, W0, W0_FIRST, WIDTH, TiledSiren, largest_width
from .tiling import Tiling

ROWS = Field("rows", "B", 1, 64, "grid rows")
COLS = Field("cols", "B", 1, 64, "grid columns")
OVERLAP = Field("overlap", "e", 0, 0.5, "band shared with each neighbour, as a fraction of the "
                "cell size")

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


@register
class Gridded(ImageModel):
    name = "gridded"
    family_id = 1
    schema = Schema(ROWS, COLS, OVERLAP, WIDTH, DEPTH, W0_FIRST, W0)
    #: Five octaves on the cell's local frame and a first-layer factor of 20 (SIREN's usual 30
    #: puts too much of the first layer's energy at high frequencies once the coordinates are
    #: encoded): +0.2 to +0.4 dB at 0.12 to 1 bpp over 4 octaves and 30 (docs/experiments.md).
    default_encoding = ("positional", {"levels": 5})

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        tiling = Tiling(height, width, hp["rows"], hp["cols"], hp["overlap"])
        self.field = TiledSiren(tiling, encoding, hp["width"], hp["depth"], self.channels,
                                hp["w0_first"], hp["w0"], generator)

    @classmethod
    def validate_for_image(cls, hparams, height, width, channels):
        if hparams["rows"] > height or hparams["cols"] > width:
            raise ValueError(f"a {hparams['rows']}x{hparams['cols']} grid does not fit a "
                             f"{width}x{height} image")

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        return SirenStack.shapes(hparams["rows"] * hparams["cols"], encoding_dim,
                                 hparams["width"], hparams["depth"], channels)

    def fit_tasks(self, target: torch.Tensor) -> Iterator[FitTask]:
        yield self.field.fit_task(target, self.color, partial(self.mse_against, target),
                                  "gridded", error_map=partial(self.error_map, target))

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return self.field.band(ys, xs)

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        pixels = height * width
        visits = math.inf if samples is None else samples / pixels
        deep = n_params < DEEP_BELOW * pixels and DEEP_VISITS[0] <= visits <= DEEP_VISITS[1]
        depth = 4 if deep else 3
        hp = {"depth": depth, "overlap": 0.0625, "w0_first": 20.0, "w0": 30.0, **fixed}
        per_cell = SirenStack.count(1, encoding_dim, hp.get("width", TARGET_WIDTH), hp["depth"],
                                    channels)
        cells = max(1.0, n_params / per_cell)
        rows, cols = grid_for(height, width, math.sqrt(height * width / cells))
        rows, cols = hp.get("rows", rows), hp.get("cols", cols)

        def hidden(rows: int, cols: int) -> int:
            return largest_width(n_params, lambda w: SirenStack.count(
                rows * cols, encoding_dim, w, hp["depth"], channels))

        if "width" not in hp:
            while hidden(rows, cols) < 8 and rows * cols > 1 \
                    and "rows" not in fixed and "cols" not in fixed:
                rows, cols = max(1, math.ceil(rows / 2)), max(1, math.ceil(cols / 2))
            hp["width"] = hidden(rows, cols)
        return {**hp, "rows": rows, "cols": cols}

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
from .base import FitTask, ImageModel, SirenStack
from .siren import DEPTH, W0, W0_FIRST, WIDTH, TiledSiren, largest_width
from .tiling import Tiling

ROWS = Field("rows", "B", 1, 64, "grid rows")
COLS = Field("cols", "B", 1, 64, "grid columns")
OVERLAP = Field("overlap", "e", 0, 0.5, "band shared with each neighbour, as a fraction of the "
                "cell size")

#: Hidden width that sizing aims for: the grid has as many cells as networks of this width
#: that the budget buys. Measured on kodim01 and kodim07 from 0.12 to 1 bpp (docs/experiments.md),
#: cells whose networks come out near 20 wide beat both finer grids of narrower networks and
#: coarser grids of wider ones, at every rate.
TARGET_WIDTH = 20
#: Below this many weights per pixel (about 0.65 bpp at 6.5 bits a weight) the cells' networks
#: have 4 sine layers, above it 3. Measured on kodim01 and kodim07 at the default effort
#: (docs/experiments.md): depth 4 gains 0.26 / 0.28 / 0.41 dB at 0.12 / 0.25 / 0.5 bpp and
#: loses 0.12 dB at 1 bpp, for 10-40% more encode time.
DEEP_BELOW = 0.1
#: ... and only when training visits each pixel this many times on average in one cosine cycle
#: (a Kodak image at the default and best efforts: 177), the range where it was measured to
#: pay. With fewer visits the deeper networks have not converged (a 4096x4096 image at the
#: default effort, 5 visits: -5 dB) and with many more their long training went astray at
#: 0.5 bpp (Kodak, one cosine of 100,000 steps, 1,041 visits: -3 dB), while depth 3 was sound
#: in both (docs/experiments.md).
DEEP_VISITS = (100, 400)


def grid_for(height: int, width: int, cell_side: float) -> tuple[int, int]:
    """Rows and columns of cells about ``cell_side`` pixels square."""
    return (min(64, max(1, round(height / cell_side))), min(64, max(1, round(width / cell_side))))


class Gridded(ImageModel):
    name = "gridded"
    steps = {"fast": 2000, "default": 17000, "best": 68000}
    #: The best effort is the default's training four times over, each cycle from the best
    #: weights of the one before at half its peak learning rate (warm restarts): depth 4 then
    #: stays sound, where one long cosine of 100,000 steps went astray (docs/experiments.md).
    cycles = {"best": 4}
    #: ... the first of them from two starts, each cell going on from the better one: a cell
    #: that starts badly is not stuck with it (kodim09 at 0.5 bpp: +1.43 dB, kodim01 / kodim07
    #: +0.01 / +0.06; docs/experiments.md), for a quarter more steps.
    starts = {"best": 2}
    #: ... and the trained weights rounded one tensor at a time, the tensors not yet rounded
    #: training on after each for 9,000 steps in all at lr 1e-4: kodim01 / kodim07 at 0.5 bpp
    #: +0.09 / +0.29 dB (docs/experiments.md), for a tenth more steps.
    progressive_steps = {"best": 9000}
    #: ... sized for 5.5 bits a weight rather than 6.5 (18% more weights), with half the overlap
    #: between cells (1/32 of a cell): on kodim01 / kodim07 at 0.5 bpp, +0.07 / +0.06 dB and
    #: then +0.09 / +0.14 dB (docs/experiments.md; not measured at the default effort).
    sizing = {"best": {"bits_per_weight": 5.5, "hparams": {"overlap": 1 / 32}}}
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
        out = torch.zeros(len(ys), len(xs), self.channels)
        self.field.render_into(out, ys, xs)
        return out

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

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

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import ImageModel, SineLayers, SirenStack
from .siren import DEPTH, SINE_LAYERS, W0, W0_FIRST, WIDTH, TiledSiren
from .tiling import Tiling

ROWS = Field("rows", "B", 1, 64, "grid rows")
COLS = Field("cols", "B", 1, 64, "grid columns")
OVERLAP = Field("overlap", "e", 0, 0.5, "band shared with each neighbour, as a fraction of the "
                "cell size")


@register
class Gridded(ImageModel):
    name = "gridded"
    family_id = 1
    schema = Schema(ROWS, COLS, OVERLAP, WIDTH, DEPTH, W0_FIRST, W0, *SINE_LAYERS)
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
                                hp["w0_first"], hp["w0"], generator, SineLayers.of(hp))

    @classmethod
    def validate_for_image(cls, hparams, height, width, channels):
        if hparams["rows"] > height or hparams["cols"] > width:
            raise ValueError(f"a {hparams['rows']}x{hparams['cols']} grid does not fit a "
                             f"{width}x{height} image")

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        return SirenStack.shapes(hparams["rows"] * hparams["cols"], encoding_dim,
                                 hparams["width"], hparams["depth"], channels,
                                 SineLayers.of(hparams))

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return self.field.band(ys, xs)

"""The residual family: a base SIREN for the whole image plus residual SIRENs where it errs.

Fitting runs in two stages. The base network (``base_width`` x ``base_depth``) is fitted to the
whole image and quantised. The image is then cut into a ``rows`` x ``cols`` grid, the squared
error of the *decoded* base is summed per cell, and the ``cells`` cells with the largest error
each get a residual network (``res_width`` x ``res_depth``, all trained as one batched model) that
learns the difference between the image and the base on its cell, extended by ``overlap`` times
the cell size. The decoder sums the base and the residual networks, each blended with the same
partition-of-unity windows as the gridded family; next to a cell without a residual network the
correction fades out smoothly across the band.

Bit budget (its sizing, :class:`inrcodec.training.residual.ResidualFit`): the base gets half
of the weights; the residual networks share the rest, on a quarter of the cells (the hardest).
The file records which cells were chosen as a bitmap.
"""

from __future__ import annotations

import math

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..errors import InrFormatError
from ..fields import Field, Reader, Schema
from . import register
from .base import ImageModel, SineLayers, SirenStack
from .gridded import COLS, OVERLAP, ROWS
from .siren import SINE_LAYERS, W0, W0_FIRST, TiledSiren
from .tiling import Tiling

@register
class Residual(ImageModel):
    name = "residual"
    family_id = 2
    schema = Schema(
        Field("base_width", "H", 1, 2048, "hidden units per layer of the base network"),
        Field("base_depth", "B", 1, 32, "hidden layers of the base network"),
        ROWS, COLS,
        Field("cells", "H", 0, 4096, "number of cells with a residual network"),
        Field("res_width", "H", 1, 2048, "hidden units per layer of each residual network"),
        Field("res_depth", "B", 1, 32, "hidden layers of each residual network"),
        OVERLAP, W0_FIRST, W0, *SINE_LAYERS,  # the sine layers of both networks
    )
    #: As the gridded family: five octaves and a first-layer factor of 20 (+0.6 / +0.5 dB at
    #: 0.25 / 0.5 bpp over 4 octaves and 30 on kodim01+07, docs/experiments.md).
    default_encoding = ("positional", {"levels": 5})

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        layers = SineLayers.of(hp)
        self.base = TiledSiren(Tiling(height, width), encoding, hp["base_width"], hp["base_depth"],
                               self.channels, hp["w0_first"], hp["w0"], generator, layers)
        cells = list(self.extra.get("cells", range(hp["cells"])))
        self.residual = TiledSiren(self._tiling(cells), encoding, hp["res_width"],
                                   hp["res_depth"], self.channels, hp["w0_first"], hp["w0"],
                                   generator, layers)
        self.use_cells(cells)

    def _tiling(self, cells: list[int]) -> Tiling:
        hp = self.hparams
        return Tiling(self.height, self.width, hp["rows"], hp["cols"], hp["overlap"], cells)

    def use_cells(self, cells: list[int]) -> None:
        """Place the residual networks on ``cells`` (grid indices, ascending): what the file
        stores as its cell bitmap. Fitting chooses them once the base network is fitted."""
        self.extra = {"cells": list(cells)}
        self.residual.tiling = self._tiling(cells)

    # -- what is stored -------------------------------------------------------------------
    @classmethod
    def validate_for_image(cls, hparams, height, width, channels):
        if hparams["rows"] > height or hparams["cols"] > width:
            raise ValueError(f"a {hparams['rows']}x{hparams['cols']} grid does not fit a "
                             f"{width}x{height} image")
        if hparams["cells"] > hparams["rows"] * hparams["cols"]:
            raise ValueError(f"{hparams['cells']} residual cells on a "
                             f"{hparams['rows']}x{hparams['cols']} grid")

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        layers = SineLayers.of(hparams)
        base = SirenStack.shapes(1, encoding_dim, hparams["base_width"], hparams["base_depth"],
                                 channels, layers)
        residual = SirenStack.shapes(hparams["cells"], encoding_dim, hparams["res_width"],
                                     hparams["res_depth"], channels, layers)
        return base + residual

    @classmethod
    def pack_extra(cls, extra, hparams, height, width) -> bytes:
        """The chosen cells as a bitmap, row-major, least significant bit first."""
        n = hparams["rows"] * hparams["cols"]
        bits = bytearray(math.ceil(n / 8))
        for cell in extra.get("cells", range(hparams["cells"])):
            bits[cell // 8] |= 1 << (cell % 8)
        return bytes(bits)

    @classmethod
    def read_extra(cls, reader: Reader, hparams, height, width) -> dict:
        n = hparams["rows"] * hparams["cols"]
        bitmap = reader.take(math.ceil(n / 8), "residual cell bitmap")
        cells = [i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1]
        if cells and cells[-1] >= n:
            raise InrFormatError("residual cell bitmap marks cells beyond the grid")
        if len(cells) != hparams["cells"]:
            raise InrFormatError(f"residual cell bitmap marks {len(cells)} cells, the header "
                                 f"says {hparams['cells']}")
        return {"cells": cells}

    # -- rendering ------------------------------------------------------------------------
    def base_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The base network alone at sample positions ys x xs."""
        return self.base.band(ys, xs)

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        out = self.base.band(ys, xs)
        if self.hparams["cells"]:
            self.residual.render_into(out, ys, xs)
        return out

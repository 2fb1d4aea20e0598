"""The plain SIREN family, and the tiled SIREN component the other pixel families build on.

A :class:`TiledSiren` is one SIREN per cell of a :class:`~.tiling.Tiling`, evaluated as a batch;
the plain family is the tiling with a single cell covering the whole image, so its network sees
coordinates in [-1, 1] across the image on both axes.
"""

from __future__ import annotations

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import RENDER_CHUNK, ImageModel, SineLayers, SirenStack
from .tiling import Tiling

WIDTH = Field("width", "H", 1, 2048, "hidden units per layer")
DEPTH = Field("depth", "B", 1, 32, "hidden (sine) layers; the network has depth + 1 linear layers")
W0_FIRST = Field("w0_first", "e", 0.1, 1000, "frequency factor of the first sine layer")
W0 = Field("w0", "e", 0.1, 1000, "frequency factor of the other sine layers")
#: The sine layers' layout beyond width and depth (:class:`~.base.SineLayers`), format version 2;
#: every SIREN family has them after its own fields, and version 1's files mean the defaults.
PHASES = Field("phases", "B", 0, 1, "1: the hidden layers store no biases, each neuron's phase "
               "derived", since=2, default=0)
SPREAD = Field("spread", "e", 0, 0.9, "each layer's frequency factors spread from w0 (1 - "
               "spread) to w0 (1 + spread) over its neurons", since=2, default=0.0)
RATIO = Field("ratio", "e", 1, 64, "first hidden layer's width over the last's (width)",
              since=2, default=1.0)
TAPER = Field("taper", "e", 0.1, 16, "exponent of the widths' fall from the first hidden layer "
              "to the last", since=2, default=1.0)
SINE_LAYERS = (PHASES, SPREAD, RATIO, TAPER)


class TiledSiren(torch.nn.Module):
    """One SIREN per kept cell of ``tiling``, all of one shape, with a shared input encoding."""

    def __init__(self, tiling: Tiling, encoding: Encoding, width: int, depth: int, out_dim: int,
                 w0_first: float, w0: float, generator: torch.Generator | None = None,
                 layers: SineLayers = SineLayers()):
        super().__init__()
        self.tiling = tiling
        self.encoding = encoding
        self.out_dim = out_dim
        self.net = SirenStack(tiling.groups, encoding.out_dim, width, depth, out_dim,
                              w0_first, w0, generator, layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Local coordinates (G, B, 2) -> values (G, B, out_dim)."""
        return self.net(self.encoding(coords))

    @torch.no_grad()
    def render_into(self, out: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> None:
        """Add the blended networks' values on the grid ys x xs (pixel units) into ``out``."""
        tiling = self.tiling
        for group in range(tiling.groups):
            sy, sx = tiling.span(group, ys, xs)
            yy, xx = ys[sy], xs[sx]
            if len(yy) == 0 or len(xx) == 0:
                continue
            weight = tiling.window(group, yy, xx)
            rows_per_chunk = max(1, RENDER_CHUNK // len(xx))
            for r0 in range(0, len(yy), rows_per_chunk):
                ry = yy[r0:r0 + rows_per_chunk]
                gy, gx = torch.meshgrid(ry, xx, indexing="ij")
                coords = tiling.local(gy.reshape(-1), gx.reshape(-1), group)
                device = self.net.weights[0].device
                values = self.net(self.encoding(coords.to(device)), group=group)[0].cpu()
                values = values.reshape(len(ry), len(xx), self.out_dim)
                w = weight[r0:r0 + rows_per_chunk, :, None]
                out[sy.start + r0:sy.start + r0 + len(ry), sx] += w * values

    def band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The blended networks' values (len ys, len xs, out_dim) on the grid ys x xs."""
        out = torch.zeros(len(ys), len(xs), self.out_dim)
        self.render_into(out, ys, xs)
        return out


@register
class Siren(ImageModel):
    """Plain SIREN: one network maps (x, y) in [-1, 1]^2 to colour."""

    name = "siren"
    family_id = 0
    schema = Schema(WIDTH, DEPTH, W0_FIRST, W0, *SINE_LAYERS)

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        self.field = TiledSiren(Tiling(height, width), encoding, hp["width"], hp["depth"],
                                self.channels, hp["w0_first"], hp["w0"], generator,
                                SineLayers.of(hp))

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        return SirenStack.shapes(1, encoding_dim, hparams["width"], hparams["depth"], channels,
                                 SineLayers.of(hparams))

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return self.field.band(ys, xs)

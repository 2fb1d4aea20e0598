"""The plain SIREN family, and the tiled SIREN component the other pixel families build on.

A :class:`TiledSiren` is one SIREN per cell of a :class:`~.tiling.Tiling`, evaluated as a batch;
the plain family is the tiling with a single cell covering the whole image, so its network sees
coordinates in [-1, 1] across the image on both axes.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import RENDER_CHUNK, FitTask, ImageModel, SirenStack, rgb_mse_loss
from .tiling import Tiling

WIDTH = Field("width", "H", 1, 2048, "hidden units per layer")
DEPTH = Field("depth", "B", 1, 32, "hidden (sine) layers; the network has depth + 1 linear layers")
W0_FIRST = Field("w0_first", "e", 0.1, 1000, "frequency factor of the first sine layer")
W0 = Field("w0", "e", 0.1, 1000, "frequency factor of the other sine layers")


class TiledSiren(torch.nn.Module):
    """One SIREN per kept cell of ``tiling``, all of one shape, with a shared input encoding."""

    def __init__(self, tiling: Tiling, encoding: Encoding, width: int, depth: int, out_dim: int,
                 w0_first: float, w0: float, generator: torch.Generator | None = None):
        super().__init__()
        self.tiling = tiling
        self.encoding = encoding
        self.out_dim = out_dim
        self.net = SirenStack(tiling.groups, encoding.out_dim, width, depth, out_dim,
                              w0_first, w0, generator)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Local coordinates (G, B, 2) -> values (G, B, out_dim)."""
        return self.net(self.encoding(coords))

    def fit_task(self, target: torch.Tensor, color: ColorTransform, evaluate, name: str,
                 share: float = 1.0, error_map: Callable | None = None) -> FitTask:
        """Training batches of random pixels per cell against ``target`` (H, W, C).

        ``evaluate()`` is the whole image's MSE; ``error_map()``, if given, its per-pixel error
        as :meth:`~.base.ImageModel.error_map` returns it, from which each cell's error is
        measured so that the trainer keeps every cell's best weights: a cell whose training
        goes astray late falls back on its earlier weights (measured: one cell in 15 did on 2 of
        24 Kodak images at 0.5 bpp, and took 0.75-2.3 dB off them; docs/experiments.md).

        With overlapping cells, each sample carries its cell's blend weight as an extra target
        channel: the loss ``sum_g w_g (f_g - y)^2`` bounds the blended error
        ``(sum_g w_g f_g - y)^2`` from above (Jensen; the weights sum to one), so the networks
        are fitted for what the decoder shows, without spending capacity far into a band.
        """
        tiling = self.tiling
        weighted = tiling.overlap > 0 and tiling.groups > 1

        def assemble(data: dict[str, torch.Tensor], draws: torch.Tensor):
            iy, ix, coords, weights = tiling.assemble(data, draws)
            values = data["target"][iy, ix]
            if weighted:
                values = torch.cat([values, weights[..., None]], dim=-1)
            return coords, values

        def evaluate_groups() -> tuple[float, torch.Tensor]:
            ys, xs, error = error_map()
            return float(error.mean()), tiling.group_means(ys, xs, error)

        per_group = error_map is not None and tiling.groups > 1
        return FitTask(module=self, draw=tiling.draw, assemble=assemble,
                       data=tiling.training_data(target), loss=rgb_mse_loss(color),
                       evaluate=evaluate, samples=tiling.pixels_per_group(),
                       groups=tiling.groups, name=name, share=share, weighted=weighted,
                       evaluate_groups=evaluate_groups if per_group else None,
                       initialise=self.net.initialise)

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
    schema = Schema(WIDTH, DEPTH, W0_FIRST, W0)

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        self.field = TiledSiren(Tiling(height, width), encoding, hp["width"], hp["depth"],
                                self.channels, hp["w0_first"], hp["w0"], generator)

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        return SirenStack.shapes(1, encoding_dim, hparams["width"], hparams["depth"], channels)

    def fit_tasks(self, target: torch.Tensor) -> Iterator[FitTask]:
        yield self.field.fit_task(target, self.color, partial(self.mse_against, target), "siren")

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return self.field.band(ys, xs)

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        # A first-layer factor of 60, not SIREN's usual 30: one network spans the whole image
        # from raw coordinates, and more frequency at the input pays (+0.3 / +0.6 dB at 0.25 /
        # 0.5 bpp on kodim01+07, docs/experiments.md).
        hp = {"depth": 4, "w0_first": 60.0, "w0": 30.0, **fixed}
        hp.setdefault("width", largest_width(n_params, lambda w: SirenStack.count(
            1, encoding_dim, w, hp["depth"], channels)))
        return hp


def largest_width(n_params: int, count, lo: int = 2, hi: int = 2048) -> int:
    """The largest width whose parameter count ``count(width)`` is at most ``n_params``
    (at least ``lo``)."""
    best = lo
    while lo <= hi:
        mid = (lo + hi) // 2
        if count(mid) <= n_params:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best

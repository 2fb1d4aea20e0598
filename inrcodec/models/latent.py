"""The latent-grid family: a pyramid of integer latent grids read by a small synthesis network.

After Cool-chic and C3 (docs/models.md): most of the image is stored as ``levels`` grids of
``channels`` latent values each, the finest at full resolution and each next one half the size
of the one before (level l is ceil(H / 2^l) x ceil(W / 2^l)). A pixel's colour is a small
network (the synthesis: ``depth`` hidden layers of ``width``, ReLU) applied to the latents of
every level interpolated at the pixel's position. The latents are stored as integers (step 1),
entropy-coded by the family's coder, ``context`` (:mod:`..context`: each latent around a mean
predicted from its decoded neighbours, with a two-sided geometric table, the integer form of a
Laplace, chosen by their activity), so their cost is what training trades against distortion.

Any output size: the grids are continuous functions of position (bilinear or bicubic
interpolation of their values, whose sample l, (i, j) sits at ((i + 1/2) 2^l, (j + 1/2) 2^l)
in pixel units, clamped at the borders; with ``upsampling=2`` of their values through each
channel's learned filter first), so a decode at any scale samples the same function.

This module is the decode side (layout and rendering); the fitting, with its rate term and
lambda's control, is :mod:`inrcodec.training.latent`.
"""

from __future__ import annotations

import math

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import ImageModel

LEVELS = Field("levels", "B", 1, 12, "latent grids, from full resolution down by halves")
CHANNELS = Field("channels", "B", 1, 8, "latent channels per grid")
WIDTH = Field("width", "B", 1, 128, "hidden width of the synthesis network")
DEPTH = Field("depth", "B", 0, 4, "hidden layers of the synthesis network")
UPSAMPLING = Field("upsampling", "B", 0, 2, "interpolation of the grids: 0 bilinear, "
                   "1 bicubic, 2 after each grid's learned filter (grid 0 bicubic, the others "
                   "bilinear)")
#: Learned upsampling (``upsampling=2``): each channel of each grid is filtered along each axis
#: by its own symmetric filter of 2 FILTER_TAPS + 1 taps that sum to one,
#: (c2, c1, 1 - 2 c1 - 2 c2, c1, c2), before it is interpolated: an interpolation kernel learned
#: per grid channel (on the full-resolution grid, at the pixel centres, a learned 5x5 separable
#: filter of the latents), still a continuous function of position. The coarse grids are
#: interpolated bilinearly, the full-resolution grid bicubically: training reads it only at
#: pixel centres, where both give its samples, and between them (a decode at another scale)
#: bicubic is the sharper.
FILTER_TAPS = 2


def learned_filter(grid: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """A grid (C, h, w) filtered along its rows, then its columns, by each channel's symmetric
    filter (``coefficients`` (C, FILTER_TAPS): c1, c2, ...; the centre tap 1 - 2 (c1 + c2 + ...)),
    the border samples repeated."""
    k = coefficients.shape[1]
    centre = (1 - 2 * coefficients.sum(1))[:, None, None]
    side = coefficients[:, :, None, None]
    for dim in (1, 2):
        n = grid.shape[dim]
        # The border samples repeated by concatenation: compiled, a third of the time of
        # torch.nn.functional.pad's replicate mode for a training step's filter and gradient.
        padded = torch.cat([grid.narrow(dim, 0, 1)] * k + [grid]
                           + [grid.narrow(dim, n - 1, 1)] * k, dim)
        out = centre * grid
        for t in range(1, k + 1):
            out = out + side[:, t - 1] * (padded.narrow(dim, k - t, n)
                                          + padded.narrow(dim, k + t, n))
        grid = out
    return grid


class GridFilters(torch.nn.Module):
    """The learned filters of ``upsampling=2``: FILTER_TAPS coefficients per channel of each
    grid (zero: no filtering), stored after the synthesis."""

    def __init__(self, levels: int, channels: int):
        super().__init__()
        self.channels = channels
        self.coefficients = torch.nn.Parameter(torch.zeros(levels * channels, FILTER_TAPS))

    def forward(self, grid: torch.Tensor, level: int) -> torch.Tensor:
        c = self.channels
        return learned_filter(grid, self.coefficients[level * c:(level + 1) * c])


def interpolation_taps(positions: torch.Tensor, size: int, cell: int, bicubic: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, T) into a grid axis of ``size`` samples ``cell`` pixels apart and their
    weights (N, T) for values at ``positions`` (pixel units): T = 2 (bilinear) or 4 (Keys'
    bicubic, a = -1/2), indices clamped to the grid."""
    u = positions.double() / cell - 0.5
    base = torch.floor(u)
    t = (u - base).float()
    base = base.long()
    if bicubic:
        offsets = torch.arange(-1, 3)
        t2, t3 = t * t, t * t * t
        weights = torch.stack([(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2,
                               (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2], dim=-1)
    else:
        offsets = torch.arange(0, 2)
        weights = torch.stack([1 - t, t], dim=-1)
    index = (base[:, None] + offsets).clamp_(0, size - 1)
    return index, weights


def grid_size(height: int, width: int, level: int) -> tuple[int, int]:
    return -(-height // (1 << level)), -(-width // (1 << level))


class Synthesis(torch.nn.Module):
    """The per-pixel network: ``depth`` hidden ReLU layers of ``width``, then linear to the
    output; channels last, so that every layer is one matrix product."""

    def __init__(self, in_dim: int, width: int, depth: int, out_dim: int,
                 generator: torch.Generator | None):
        super().__init__()
        dims = [in_dim] + [width] * depth + [out_dim]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(fan_in)
            w = (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(fan_out)))

    @staticmethod
    def shapes(in_dim: int, width: int, depth: int, out_dim: int) -> list[tuple[int, ...]]:
        dims = [in_dim] + [width] * depth + [out_dim]
        pairs = list(zip(dims[:-1], dims[1:]))
        return [(a, b) for a, b in pairs] + [(b,) for _, b in pairs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.addmm(b, x, w) if x.dim() == 2 else x @ w + b
            if i < last:
                x = torch.relu(x)
        return x


@register
class Latent(ImageModel):
    name = "latent"
    family_id = 4
    default_coder = "context"
    schema = Schema(LEVELS, CHANNELS, WIDTH, DEPTH, UPSAMPLING)

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        self.levels, self.latent_channels = hp["levels"], hp["channels"]
        self.bicubic = hp["upsampling"] == 1
        self.latents = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(self.latent_channels, *grid_size(height, width, level)))
            for level in range(self.levels))
        self.synthesis = Synthesis(self.levels * self.latent_channels, hp["width"], hp["depth"],
                                   self.channels, generator)
        self.filters = (GridFilters(self.levels, self.latent_channels)
                        if hp["upsampling"] == 2 else None)

    # -- what is stored -------------------------------------------------------------------
    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        grids = [(hparams["channels"], *grid_size(height, width, level))
                 for level in range(hparams["levels"])]
        filters = ([(hparams["levels"] * hparams["channels"], FILTER_TAPS)]
                   if hparams["upsampling"] == 2 else [])  # GridFilters, after the synthesis
        return grids + Synthesis.shapes(hparams["levels"] * hparams["channels"], hparams["width"],
                                        hparams["depth"], channels) + filters

    @classmethod
    def macs_per_pixel(cls, hparams, shapes):
        levels, upsampling = hparams["levels"], hparams["upsampling"]
        # Interpolation taps: 4 a grid bilinear, 16 bicubic (upsampling 2: grid 0 alone).
        taps = {0: 4 * levels, 1: 16 * levels, 2: 16 + 4 * (levels - 1)}[upsampling]
        networks = shapes[levels:len(shapes) - (upsampling == 2)]
        synthesis = sum(s[0] * s[1] for s in networks if len(s) == 2)
        return float(synthesis + taps * hparams["channels"])

    @classmethod
    def macs_per_decode(cls, hparams, shapes):
        """The learned filters, once per decode: 2 (2 FILTER_TAPS + 1) per latent."""
        if hparams["upsampling"] != 2:
            return 0.0
        latents = sum(math.prod(s) for s in shapes[:hparams["levels"]])
        return float(2 * (2 * FILTER_TAPS + 1) * latents)

    # -- rendering --------------------------------------------------------------------------
    def _features_band(self, ys: torch.Tensor, xs: torch.Tensor,
                       grids: list[torch.Tensor]) -> torch.Tensor:
        """Every grid interpolated on ys x xs: (len ys, len xs, levels * channels)."""
        out = []
        for level, grid in enumerate(grids):
            c, h, w = grid.shape
            cubic = self.bicubic or (self.filters is not None and level == 0)
            iy, wy = interpolation_taps(ys, h, 1 << level, cubic)
            ix, wx = interpolation_taps(xs, w, 1 << level, cubic)
            # Rows first, over only the columns the band reads (at most T per output column),
            # so that memory follows the band's pixels, not the grid's width.
            columns, ix = torch.unique(ix, return_inverse=True)
            narrow = len(columns) < w
            rows = sum((grid[:, iy[:, a, None], columns] if narrow else grid[:, iy[:, a], :])
                       * wy[:, a, None] for a in range(iy.shape[1]))
            out.append(sum(rows[:, :, ix[:, b]] * wx[:, b] for b in range(ix.shape[1])))
        return torch.cat(out).permute(1, 2, 0)

    def grids(self) -> list[torch.Tensor]:
        """The grids as they are interpolated: the latents rounded (integers, as stored), then
        through their learned filters (upsampling 2)."""
        grids = [torch.round(g) for g in self.latents]
        if self.filters is None:
            return grids
        return [self.filters(g, level) for level, g in enumerate(grids)]

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self._features_band(ys, xs, self.grids()))

    @torch.no_grad()
    def render_bands(self, out_h, out_w, render_band=None):
        """As every family's, with the grids made once for all the bands."""
        if render_band is None:
            grids = self.grids()

            def render_band(ys, xs):
                return self.synthesis(self._features_band(ys, xs, grids))
        yield from super().render_bands(out_h, out_w, render_band)

"""The latents' rate models: each coder's entropy model as the latent family trains against it.

One object gives the training's likelihoods and the coder's integer tables, as CompressAI's
entropy models do. :meth:`RateModel.code` fits the coder's model to a grid of integers with the
coder's own function and gives a :class:`GridCode`: what the coder spends on the grid in those
tables (its model's bytes included), per latent the mean it is coded around and its class, and
per class the table's code lengths. The latent family (:mod:`.latent`) makes of it

- its **rate term**: each latent's distance from its mean times its class's slope, the bits a
  unit away from the mean costs in the table (-log2 of the class's ratio; between two integers
  the code length is linear at that slope, at the integers the table's up to the rounding of its
  frequencies);
- **lambda's control**: the code length of the rounded latents, told to rate control's
  controller as it is;
- the **rounding that meets the plan** (:meth:`.latent.LatentFit.round_to_plan`): the latents
  whose step towards their mean costs least distortion per bit that the tables save.

Coder 2 (``context``, the family's): four mean weights and four classes' tables a grid
(:func:`inrcodec.context.fit_model`), the code length the coder's to the few bytes that end its
rANS stream and frame its payload. Coder 1 (``rans``): one geometric table a grid
(:func:`inrcodec.entropy.geometric_ratio`), the same; coder 0 (``zstd``) has no model of
symbols, and coder 1's is its estimate. Coder 3 (``arm``): its network is fitted to the latents
when they are coded (:mod:`.arm`), in 300 Adam steps, too slow to follow every measurement; the
latents train against coder 2's tables (training them against the network's likelihood lost
0.4-2.4 dB: docs/experiments.md), and what coder 3 spends per bit of them is measured whenever
its network is fitted (:attr:`RateModel.scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import arm, context, entropy, rans
from ..quantize import with_step
from .arm import ArmFit, coded_bits

#: The most bits per unit of distance that a rate term charges (a class whose every residual
#: is 0: a ratio of 0).
MAX_UNIT_BITS = 12.0
#: Adam steps of coder 3's network on the latents each time it is fitted to them.
ARM_STEPS = 300
#: The latents that read a latent as a neighbour in coder 2's model: (rows down, columns
#: right, which of their neighbours L, U, UL, UR it is).
DEPENDANTS = ((0, 1, 0), (1, 0, 1), (1, 1, 2), (1, -1, 3))


@dataclass(frozen=True)
class GridCode:
    """A grid of integers (C, H, W) in its coder's model: the code length in bits (the model's
    bytes included); per latent the mean it is coded around (float32, integers) and its class
    (uint8); per class the code length of each residual r = y - mean (float64, index r +
    :attr:`reach`) and the bits a unit of distance costs (:attr:`slopes`); the context model's
    mean weights (None for the other coders)."""

    bits: float
    mean: np.ndarray
    classes: np.ndarray
    lengths: np.ndarray
    slopes: np.ndarray
    weights: tuple[int, ...] | None

    @property
    def reach(self) -> int:
        """The largest residual magnitude of the tables."""
        return (self.lengths.shape[1] - 1) // 2


def slope(ratio: int) -> float:
    """The bits a unit of distance costs in a two-sided geometric table of this u16 ratio."""
    return min(-math.log2(ratio / rans.RATIO_ONE), MAX_UNIT_BITS) if ratio else MAX_UNIT_BITS


def grid_qmax(grid: np.ndarray) -> int:
    """The largest magnitude that the file's quantiser of this integer grid allows (step 1)."""
    return with_step(torch.from_numpy(grid), 1.0).qmax


class RateModel:
    """The entropy model of coders 0 and 1: one geometric table a grid, around 0."""

    #: The coder's bits per bit of :meth:`code`: 1 where the tables are the coder's.
    scale = 1.0

    def __init__(self, coder: str):
        self.coder = coder

    def code(self, grid: np.ndarray, weights: tuple[int, ...] | None = None) -> GridCode:
        """``grid`` (integers, C x H x W) in the coder's model, fitted to it (``weights``, the
        context model's, kept where given)."""
        qmax = grid_qmax(grid)
        ratio = entropy.geometric_ratio(grid)
        table = rans.Table.geometric(qmax, ratio)
        return GridCode(16.0 + table.bits(grid), np.zeros(grid.shape, np.float32),
                        np.zeros(grid.shape, np.uint8), table.lengths[None],
                        np.array([slope(ratio)], np.float32), None)

    def step_savings(self, grid: np.ndarray, code: GridCode, at: np.ndarray,
                     toward: np.ndarray) -> np.ndarray:
        """The bits that a step of ``toward`` (+-1) of each latent at flat index ``at`` of the
        integer ``grid`` saves in ``code``'s tables, the others as they are."""
        classes = code.classes.reshape(-1)[at].astype(np.int64)
        residual = (grid.reshape(-1)[at] - code.mean.reshape(-1)[at]).astype(np.int64)
        return code.lengths[classes, residual + code.reach] \
            - code.lengths[classes, residual + toward + code.reach]

    def refit(self, grids: list[np.ndarray], qmaxes: list[int]) -> None:
        """The coder's model fitted to these integer grids as it will code them (coder 3's
        network; nothing to do for the others, whose models are fitted by :meth:`code`)."""


class ContextRate(RateModel):
    """Coder 2's model: a mean from four neighbours, a table by their activity."""

    def code(self, grid, weights=None):
        qmax = grid_qmax(grid)
        weights, ratios, residual, classes = context.fit_model(grid, qmax, weights)
        tables = context.residual_tables(qmax, ratios)
        lengths = np.stack([t.lengths for t in tables])
        reach = 2 * qmax
        counts = np.bincount((classes.astype(np.int64) * lengths.shape[1] + residual + reach)
                             .ravel(), minlength=lengths.size)
        bits = 8.0 * context.MODEL_BYTES + float(np.sum(counts * lengths.ravel()))
        mean = np.subtract(grid, residual, dtype=np.float32)  # integers, exact
        return GridCode(bits, mean, classes.view(np.uint8), lengths,
                        np.array([slope(r) for r in ratios], np.float32), weights)


    def step_savings(self, grid, code, at, toward):
        """As the others', and the latents that read the latent as a neighbour (right of it,
        below, below right and below left) in their means and classes: a step towards a mean
        moves the means predicted from it."""
        saved = super().step_savings(grid, code, at, toward)
        c, h, w = grid.shape
        qmax = code.reach // 2  # the residuals' tables reach twice the grid's largest value
        padded = np.zeros((c, h + 1, w + 2), np.int32)  # (i, j) at (i + 1, j + 1)
        padded[:, 1:, 1:-1] = grid
        plane, row, col = np.unravel_index(at, grid.shape)
        for down, right, role in DEPENDANTS:
            i, j = row + down, col + right
            sel = np.flatnonzero((i < h) & (j >= 0) & (j < w))
            p, i, j = plane[sel], i[sel] + 1, j[sel] + 1
            near = [padded[p, i, j - 1], padded[p, i - 1, j], padded[p, i - 1, j - 1],
                    padded[p, i - 1, j + 1]]  # its L, U, UL, UR
            moved = list(near)
            moved[role] = near[role] + toward[sel].astype(np.int32)
            y = padded[p, i, j].astype(np.int64)
            lengths = []
            for n in (near, moved):
                k = context.activity_class(tuple(n)).astype(np.int64)
                mean = context.predict(tuple(n), code.weights, qmax).astype(np.int64)
                lengths.append(code.lengths[k, y - mean + code.reach])
            saved[sel] -= lengths[1] - lengths[0]
        return saved


class ArmRate(ContextRate):
    """Coder 3's model: coder 2's tables train the latents; the network, fitted to them when
    they are coded (:meth:`refit`), spends :attr:`scale` bits per bit of those tables."""

    def __init__(self, coder: str):
        super().__init__(coder)
        self.fit = ArmFit()
        self._network: tuple[bytes, arm.Network] | None = None

    def network(self, grids: list[np.ndarray], qmaxes: list[int]) -> arm.Network:
        """Coder 3's network for these integer grids: fitted further to them (ARM_STEPS), in the
        stored form that codes them in fewest bits; made once for the same grids."""
        key = b"".join(g.tobytes() for g in grids)
        if self._network is None or self._network[0] != key:
            self.fit.fit([torch.from_numpy(g).float() for g in grids], ARM_STEPS)
            self._network = (key, self.fit.best_integer(grids, qmaxes))
        return self._network[1]

    def refit(self, grids, qmaxes):
        spent = coded_bits(self.network(grids, qmaxes), grids, qmaxes)
        tables = sum(self.code(g).bits for g in grids)
        if tables > 0:
            self.scale = min(max(spent / tables, 0.5), 1.5)


def rate_model(coder: str) -> RateModel:
    """The rate model of the coder named ``coder``."""
    return {"context": ContextRate, "arm": ArmRate}.get(coder, RateModel)(coder)

"""The learned entropy model of latent grids, encode side: the float network that training fits
to the latents, and its integer form that coder 3 stores (:mod:`inrcodec.arm`).

One object gives the likelihoods and the coder's model (as CompressAI's entropy models do): its
float network the code length that fits it (a discretised Laplace per latent, whose mean and
scale it computes from the latent's causal neighbours; :meth:`ArmFit.code`),
:meth:`ArmFit.integer` the integer network whose tables the coder uses, and :func:`coded_bits`
what those tables spend. The latent family fits it to its latents when they are coded; they
train against coder 2's tables (:mod:`.rate`; docs/experiments.md says why).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import arm, entropy, rans

#: The network the latent family fits: the first CONTEXT neighbours (and their magnitudes),
#: DEPTH hidden layers of WIDTH (176 multiply-adds a latent, 186 stored values;
#: docs/experiments.md compares others).
CONTEXT, WIDTH, DEPTH = 8, 8, 1
#: Adam on the network: its learning rate, and the latents drawn for each of its steps.
LR, SAMPLE = 0.01, 16384
#: The fractional bits tried for the stored network (the fewest bits in all wins).
SHIFTS = (4, 5, 6)
LOG_SCALE_MAX = arm.LOG_SCALE_MIN + (arm.SCALES - 1) / arm.MEAN_STEPS
LN2 = math.log(2)


def contexts(grid: torch.Tensor, context: int) -> torch.Tensor:
    """Each latent's first ``context`` causal neighbours (C * H * W, K), zero outside its plane,
    in the grid's raster order."""
    c, h, w = grid.shape
    padded = torch.nn.functional.pad(grid, (arm.REACH_LEFT, arm.REACH_RIGHT, arm.REACH_UP, 0))
    return torch.stack([padded[:, arm.REACH_UP + dy:arm.REACH_UP + dy + h,
                               arm.REACH_LEFT + dx:arm.REACH_LEFT + dx + w].reshape(-1)
                        for dy, dx in arm.OFFSETS[:context]], dim=1)


def laplace_bits(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The code length of integers ``y`` under discretised Laplaces (each over [y - 1/2,
    y + 1/2]), at most the coder's 24 bits."""
    d = (y - mean).abs()
    inner = -torch.log1p(-0.5 * (torch.exp(-(0.5 - d).clamp_min(0) / scale)
                                 + torch.exp(-(0.5 + d) / scale)))
    tail = math.log(2) + (d - 0.5).clamp_min(0) / scale - torch.log(-torch.expm1(-1 / scale))
    nats = torch.where(d < 0.5, inner, tail)
    return (nats / LN2).clamp(max=float(24))


class ArmFit(torch.nn.Module):
    """The float network of coder 3's model (:class:`inrcodec.arm.Network`'s shape)."""

    def __init__(self, context: int = CONTEXT, width: int = WIDTH, depth: int = DEPTH,
                 seed: int = 0):
        super().__init__()
        arm.check_shape(context, width, depth, arm.MAX_SHIFT)
        self.context, self.width, self.depth = context, width, depth
        generator = torch.Generator().manual_seed(seed)
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in arm.Network.shapes(context, width, depth):
            bound = 1 / math.sqrt(fan_in)
            last = fan_out == 2 and len(self.weights) == depth
            w = torch.zeros(fan_in, fan_out) if last else \
                (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(fan_out)))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=LR)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def forward(self, near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the scale of latents with neighbours ``near`` (N, K)."""
        x = torch.cat([near, near.abs()], dim=1)
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = torch.relu(h @ w + b)
        w = self.weights[-1]
        out = (h @ w[:-x.shape[1]] + x @ w[-x.shape[1]:] if self.depth else x @ w) \
            + self.biases[-1]
        return out[:, 0], torch.exp(out[:, 1].clamp(arm.LOG_SCALE_MIN, LOG_SCALE_MAX))

    def fit(self, grids: list[torch.Tensor], steps: int) -> None:
        """``steps`` of Adam on the code length of the integer ``grids``, SAMPLE latents a step."""
        near = torch.cat([contexts(g, self.context) for g in grids])
        y = torch.cat([g.reshape(-1) for g in grids])
        with torch.enable_grad():
            self._steps(near, y, steps)

    def _steps(self, near: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        for _ in range(steps):
            pick = torch.randint(0, y.numel(), (min(SAMPLE, y.numel()),),
                                 generator=self.generator)
            mean, scale = self(near[pick])
            loss = laplace_bits(y[pick], mean, scale).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def code(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per latent of an integer grid, its mean and scale (the grid's shape), and the grid's
        code length in bits under them."""
        mean, scale = self(contexts(grid, self.context))
        bits = float(laplace_bits(grid.reshape(-1), mean, scale).sum())
        return mean.view_as(grid), scale.view_as(grid), bits

    @torch.no_grad()
    def integer(self, shift: int) -> arm.Network:
        """The stored form with ``shift`` fractional bits (each value rounded to its nearest)."""
        one = float(1 << shift)
        limit = (1 << (arm.WEIGHT_BITS_MAX - 1)) - 1
        values = np.concatenate([torch.round(t.detach() * one).clamp(-limit, limit)
                                 .reshape(-1).numpy()
                                 for w, b in zip(self.weights, self.biases) for t in (w, b)])
        return arm.Network.from_values(self.context, self.width, self.depth, shift,
                                       values.astype(np.int64))

    def best_integer(self, grids: list[np.ndarray], qmaxes: list[int]) -> arm.Network:
        """The stored form (of :data:`SHIFTS`) whose values and grids cost fewest bits."""
        return min((self.integer(s) for s in SHIFTS),
                   key=lambda net: coded_bits(net, grids, qmaxes))


def coded_bits(net: arm.Network, grids: list[np.ndarray], qmaxes: list[int]) -> float:
    """The ideal code length of integer ``grids`` under the integer network's tables, and of the
    network's values under their geometric table (what coder 3 spends, to a few bytes)."""
    values = net.values()
    bits = rans.Table.geometric(entropy.qmax(arm.value_bits(net)),
                                entropy.geometric_ratio(values)).bits(values)
    for grid, qmax in zip(grids, qmaxes):
        freq, _ = arm.frequencies(grid, qmax, net)
        bits += float(np.sum(rans.PRECISION - np.log2(freq)))
    return bits

"""Screening for a learned entropy model of the latents (issue 35): how many bits would a small
network over each latent's causal neighbourhood save on latents the codec already made?

    python benchmarks/screen_entropy_model.py ../shared/datasets/kodak/kodim05.png --bpp 0.5

The image is encoded with the defaults (or an existing ``.inr`` file is read), and its rounded
latents are coded three ways: by coder 2 (``context``: four integer weights and four classes of
geometric tables per grid, its model bytes included), by coder 1 (one table per grid), and by
the ideal code length under a Laplace whose mean and scale a small network (two hidden ReLU
layers of 16, one per image, fitted to these latents by Adam) computes from the latent's
``--neighbours`` nearest causal neighbours in its plane, optionally with the channels before it
at the same place and the next coarser grid's value there (nearest). The network's own bytes
are not counted and its arithmetic is float: an optimistic bound of what a learned model saves
on these latents, before any training moves them (a codec trained against it sees more).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import inrcodec
from inrcodec import entropy
from inrcodec.bitstream import build, read
from inrcodec.quantize import to_symbols

#: Causal neighbours in a plane, nearest first: (row offset, column offset).
CAUSAL = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-1, 2), (-2, -1),
          (-2, 1), (0, -3), (-3, 0), (-2, -2), (-2, 2), (-3, -1), (-3, 1))
REACH = 3  # the farthest offset above, to the left and to the right


def contexts(grids: list[torch.Tensor], neighbours: int, wider: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per latent: its context features, its value and its grid's index."""
    features, values, levels = [], [], []
    for level, grid in enumerate(grids):
        c, h, w = grid.shape
        padded = torch.nn.functional.pad(grid, (REACH, REACH, REACH, 0))
        coarser = (grids[level + 1].repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
                   if level + 1 < len(grids) else torch.zeros(c, h, w))
        for channel in range(c):
            columns = [padded[channel, REACH + dy:REACH + dy + h, REACH + dx:REACH + dx + w]
                       for dy, dx in CAUSAL[:neighbours]]
            if wider:
                columns += [grid[k] if k < channel else torch.zeros(h, w) for k in range(c)]
                columns += [coarser[k] for k in range(c)]
            features.append(torch.stack(columns, -1).reshape(h * w, -1))
            values.append(grid[channel].reshape(-1))
            levels.append(torch.full((h * w,), level))
    return torch.cat(features), torch.cat(values), torch.cat(levels)


def laplace_bits(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 of the probability of integers y under a Laplace's mass on [y - 1/2, y + 1/2]."""
    def cdf(x):
        z = (x - mean) / scale
        return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)),
                           1 - 0.5 * torch.exp(-z.clamp(min=0)))
    return -torch.log2((cdf(y + 0.5) - cdf(y - 0.5)).clamp_min(1e-9))


def fitted_bits(features: torch.Tensor, values: torch.Tensor, levels: torch.Tensor,
                n_levels: int, hidden: int = 16, steps: int = 600) -> float:
    """The latents' ideal code length under the network fitted to them (full batches)."""
    torch.manual_seed(0)
    inputs = torch.cat([features, torch.nn.functional.one_hot(levels, n_levels).float()], 1)
    net = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)

    def bits() -> torch.Tensor:
        out = net(inputs)
        return laplace_bits(values, out[:, 0], torch.exp(out[:, 1].clamp(-5, 5))).sum()

    for step in range(steps):
        if step == steps // 2:
            optimiser.param_groups[0]["lr"] = 3e-3
        optimiser.zero_grad()
        (bits() / len(values)).backward()
        optimiser.step()
    with torch.no_grad():
        return float(bits())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an image to encode, or an .inr file")
    parser.add_argument("--bpp", type=float, default=0.5)
    parser.add_argument("--neighbours", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    data = (args.source.read_bytes() if args.source.suffix == ".inr"
            else inrcodec.encode(str(args.source), bpp=args.bpp))
    f = read(data)
    grids = [g.detach().clone() for g in build(f).latents]
    quants = f.quants[:len(grids)]
    symbols = [to_symbols(g, q) for g, q in zip(grids, quants)]
    bits = [q.bits for q in quants]
    coded = {c: len(entropy.encode(symbols, bits, c)) for c in ("context", "rans")}
    print(f"{args.source.name}: file {len(data)} bytes, {sum(g.numel() for g in grids)} "
          f"latents; coder 2 {coded['context']} bytes, coder 1 {coded['rans']}")
    for neighbours in args.neighbours:
        for wider in (False, True):
            start = time.perf_counter()
            features, values, levels = contexts(grids, neighbours, wider)
            ideal = fitted_bits(features, values, levels, len(grids)) / 8
            print(f"  learned Laplace, {neighbours} neighbours"
                  f"{' + channels before + coarser grid' if wider else ''}: {ideal:.0f} bytes "
                  f"({ideal / coded['context'] - 1:+.1%} against coder 2), "
                  f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

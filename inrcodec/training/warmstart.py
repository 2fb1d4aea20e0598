"""Warm starts: initial weights of the SIREN families' networks learned once on a training set
and shipped as package data (Struempler et al.'s meta-learned initialisation; issue 36).

One network's weights per shape, learned by Reptile (``benchmarks/learn_warm_start.py``: short
fits of the family on public photos, never the images the codec is measured on, the shared
start moved towards where they ended), stored as ``warmstart/<key>.npy``: float32, the
parameters of one network flat in ``SirenStack``'s order, read without unpickling. An encode
whose schedule asks for it (``warm_start``) starts every network of a stage whose shape has
weights here from them (all cells of a grid from the same ones); a shape without them starts
as before, from the seed. The file still holds its own weights: a warm start changes where
training begins, not the format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.base import SirenStack

#: Where the learned starts live (package data).
FOLDER = Path(__file__).with_name("warmstart")


def key(family: str, stack: SirenStack) -> str:
    """The name of a network shape's start: the family, the layers' widths from input to
    output, the frequency factors and the sine layers' derived parts, e.g.
    ``gridded-22-26-22-17-13-3-w20-30``."""
    dims = [stack.weights[0].shape[1]] + [w.shape[2] for w in stack.weights]
    layers = stack.layers
    flags = ("-phases" if layers.phases else "") + (f"-spread{layers.spread:g}"
                                                    if layers.spread else "")
    return f"{family}-{'-'.join(map(str, dims))}-w{stack.w0_first:g}-{stack.w0:g}{flags}"


def size(stack: SirenStack) -> int:
    """The weights of one of the stack's networks."""
    return sum(p[0].numel() for p in stack.parameters())


def load(family: str, stack: SirenStack, folder: Path | None = None) -> np.ndarray | None:
    """The learned start of ``stack``'s shape (flat float32) in ``folder`` (default FOLDER),
    or None where none was learned."""
    path = (folder or FOLDER) / f"{key(family, stack)}.npy"
    if not path.is_file():
        return None
    start = np.load(path, allow_pickle=False)
    if start.dtype != np.float32 or start.shape != (size(stack),):
        raise ValueError(f"{path.name} holds {start.shape} {start.dtype}, not the "
                         f"{size(stack)} float32 weights of its shape")
    return start


@torch.no_grad()
def apply(stack: SirenStack, start: np.ndarray) -> None:
    """Every network of the stack starts from the one network's weights ``start`` (flat)."""
    offset = 0
    for p in stack.parameters():
        n = p[0].numel()
        one = torch.from_numpy(start[offset:offset + n]).reshape(p.shape[1:])
        p.copy_(one.expand_as(p).to(p.device))
        offset += n


@torch.no_grad()
def mean_network(stack: SirenStack) -> np.ndarray:
    """The mean of the stack's networks, flat (where Reptile moves the start towards)."""
    return torch.cat([p.mean(dim=0).flatten().cpu() for p in stack.parameters()]).numpy()


def warm(family: str, stack: SirenStack) -> bool:
    """Start ``stack`` from its shape's learned weights; whether there were any."""
    start = load(family, stack)
    if start is not None:
        apply(stack, start)
    return start is not None

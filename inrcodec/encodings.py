"""Input encodings: how a coordinate is presented to a network's first layer.

- ``none``: the raw coordinates, in [-1, 1].
- ``positional``: the coordinates plus sin and cos of them at L octave frequencies
  (pi, 2 pi, ..., 2^(L-1) pi): 2 + 4L features for a 2-D input.
- ``fourier``: sin and cos of 2 pi B x for a Gaussian random matrix B (n x 2, entries N(0, s^2)):
  2n features. The file stores n, s and the seed; B is regenerated from the seed by
  :func:`gaussian_matrix`, a generator of our own, so a file decodes the same with any library
  version.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .fields import Field, Schema

#: Encodings by the id stored in the `.inr` header, with their stored parameters.
SCHEMAS = {
    "none": Schema(),
    "positional": Schema(Field("levels", "B", 1, 16, "number of octave frequencies L")),
    "fourier": Schema(
        Field("features", "H", 1, 1024, "number of random frequencies n"),
        Field("scale", "f", 1e-3, 1e3, "standard deviation s of the frequencies (cycles per unit)"),
        Field("seed", "I", 0, 2**32 - 1, "seed of the frequency matrix"),
    ),
}
ENCODING_IDS = {"none": 0, "positional": 1, "fourier": 2}
ENCODING_NAMES = {v: k for k, v in ENCODING_IDS.items()}


def out_dim(kind: str, params: dict, in_dim: int = 2) -> int:
    """Features an encoding of ``kind`` with ``params`` gives for ``in_dim`` coordinates."""
    if kind == "positional":
        return in_dim * (1 + 2 * params["levels"])
    if kind == "fourier":
        return 2 * params["features"]
    return in_dim


def _splitmix64(state: np.ndarray) -> np.ndarray:
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def gaussian_matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    """A (rows, cols) matrix of standard normal numbers, fixed forever by ``seed``.

    SplitMix64 of ``seed * 2^32 + i`` gives uniform numbers; Box-Muller turns pairs into normals.
    """
    n = rows * cols
    pairs = (n + 1) // 2
    with np.errstate(over="ignore"):
        counter = np.arange(2 * pairs, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)
        bits = _splitmix64(counter * np.uint64(0x9E3779B97F4A7C15))
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = uniform[0::2], uniform[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return normal[:n].reshape(rows, cols)


class Encoding(torch.nn.Module):
    """Maps (..., in_dim) coordinates to (..., out_dim) features. Has no trainable parameters."""

    def __init__(self, kind: str = "none", in_dim: int = 2, **params):
        super().__init__()
        if kind not in SCHEMAS:
            raise ValueError(f"unknown encoding {kind!r}; choose from {', '.join(SCHEMAS)}")
        self.kind = kind
        self.params = SCHEMAS[kind].validate(params)
        self.in_dim = in_dim
        if kind == "positional":
            levels = self.params["levels"]
            self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(levels, dtype=torch.float32))
        elif kind == "fourier":
            matrix = gaussian_matrix(self.params["features"], in_dim, self.params["seed"])
            matrix = 2 * math.pi * self.params["scale"] * matrix
            self.register_buffer("matrix", torch.tensor(matrix.T, dtype=torch.float32))
        self.out_dim = out_dim(kind, self.params, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "positional":
            angles = (x[..., :, None] * self.freqs).flatten(-2)
            return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)
        if self.kind == "fourier":
            angles = x @ self.matrix
            return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        return x

    def describe(self) -> str:
        if self.kind == "none":
            return "none"
        return self.kind + "(" + ", ".join(f"{k}={v:g}" for k, v in self.params.items()) + ")"


def parse_encoding(text: str) -> tuple[str, dict]:
    """Parse a CLI spelling: ``none``, ``positional:L``, ``fourier:N:SCALE[:SEED]``."""
    parts = text.split(":")
    kind = parts[0]
    if kind == "none" and len(parts) == 1:
        return "none", {}
    if kind == "positional" and len(parts) <= 2:
        return "positional", {"levels": int(parts[1]) if len(parts) == 2 else 6}
    if kind == "fourier" and len(parts) <= 4:
        features = int(parts[1]) if len(parts) > 1 else 64
        scale = float(parts[2]) if len(parts) > 2 else 10.0
        seed = int(parts[3]) if len(parts) > 3 else 0
        return "fourier", {"features": features, "scale": scale, "seed": seed}
    raise ValueError(f"bad encoding {text!r}: use none, positional:L or fourier:N:SCALE[:SEED]")

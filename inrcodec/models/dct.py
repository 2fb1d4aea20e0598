"""The DCT-head family: a SIREN maps a block's position to that block's DCT coefficients.

The image is cut into ``block`` x ``block`` blocks. The network takes the centre of a block (in
the [-1, 1] image frame) and predicts, per channel, the first coefficients of the block's
orthonormal 2-D DCT-II in JPEG's zig-zag order: ``coeffs`` for the first channel (luma, in the
default YCbCr space) and ``chroma_coeffs`` for the other two. The other coefficients are zero.

The network runs once per block instead of once per pixel, which makes a training step much
cheaper than the plain SIREN's at the same parameter count (docs/experiments.md measures it).
Training compares coefficients directly: the DCT is orthonormal, so a squared error on
coefficients is the same squared error on pixels, and mixing channels through the inverse colour
matrix makes it the RGB error that PSNR measures.

Rendering evaluates the continuous cosine basis, ``alpha_k cos(pi k u / block)`` at local position
u in [0, block] (pixel j of a block sits at u = j + 1/2, where this is exactly the inverse DCT),
so any output size is a true resampling of the same blocks.
"""

from __future__ import annotations

import math

import torch

from ..color import ColorTransform
from ..encodings import Encoding
from ..fields import Field, Schema
from . import register
from .base import ImageModel, SineLayers, SirenStack
from .siren import DEPTH, SINE_LAYERS, W0, W0_FIRST, WIDTH

BLOCK = Field("block", "B", 2, 32, "block side in pixels")
COEFFS = Field("coeffs", "H", 1, 1024, "zig-zag coefficients of the first channel")
CHROMA = Field("chroma_coeffs", "H", 0, 1024, "zig-zag coefficients of each other channel (0 "
               "for grey images)")

#: Blocks whose coefficients rendering evaluates at once (bounds its memory).
BLOCKS_PER_CHUNK = 1 << 14


def zigzag(n: int) -> list[tuple[int, int]]:
    """JPEG's zig-zag order of the (row, column) frequencies of an n x n block."""
    order = []
    for d in range(2 * n - 1):
        cells = [(i, d - i) for i in range(n) if 0 <= d - i < n]
        order += cells if d % 2 else cells[::-1]
    return order


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n x n): coefficients = D x, x = D^T coefficients."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * j + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


@register
class DctHead(ImageModel):
    name = "dct"
    family_id = 3
    schema = Schema(BLOCK, COEFFS, CHROMA, WIDTH, DEPTH, W0_FIRST, W0, *SINE_LAYERS)
    default_color = "ycbcr"
    default_encoding = ("positional", {"levels": 6})

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(height, width, color, hparams, encoding, extra)
        hp = self.hparams
        self.block = hp["block"]
        self.n_rows = math.ceil(height / self.block)
        self.n_cols = math.ceil(width / self.block)
        self.counts = [hp["coeffs"]] + [hp["chroma_coeffs"]] * (self.channels - 1)
        positions = zigzag(self.block)[:hp["coeffs"]]
        # A plain attribute, not a buffer: it indexes CPU tensors even when the net is on a GPU.
        self.flat_index = torch.tensor([r * self.block + c for r, c in positions])
        self.net = SirenStack(1, encoding.out_dim, hp["width"], hp["depth"], sum(self.counts),
                              hp["w0_first"], hp["w0"], generator, SineLayers.of(hp))

    @classmethod
    def validate_for_image(cls, hparams, height, width, channels):
        b = hparams["block"]
        if hparams["coeffs"] > b * b:
            raise ValueError(f"coeffs {hparams['coeffs']} exceeds the {b * b} of a {b}x{b} block")
        if hparams["chroma_coeffs"] > hparams["coeffs"]:
            raise ValueError("chroma_coeffs exceeds coeffs")
        if channels == 1 and hparams["chroma_coeffs"] != 0:
            raise ValueError("a grey image has no chroma: chroma_coeffs must be 0")

    @classmethod
    def shapes(cls, hparams, height, width, channels, encoding_dim, extra):
        outputs = hparams["coeffs"] + (channels - 1) * hparams["chroma_coeffs"]
        return SirenStack.shapes(1, encoding_dim, hparams["width"], hparams["depth"], outputs,
                                 SineLayers.of(hparams))

    @classmethod
    def macs_per_pixel(cls, hparams, shapes):
        # A block's network at most once per output pixel (when downscaling), and the cosine
        # synthesis of up to three channels of block x block coefficients.
        return super().macs_per_pixel(hparams, shapes) + 3 * hparams["block"] ** 2

    # -- the network, block by block ------------------------------------------------------
    def block_coords(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Centres of the blocks (rows x cols grid) in the [-1, 1] image frame: (N, 2) as (x, y)."""
        y = (rows.float() + 0.5) * (2.0 * self.block / self.height) - 1.0
        x = (cols.float() + 0.5) * (2.0 * self.block / self.width) - 1.0
        gy, gx = torch.meshgrid(y, x, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Block centres (1, B, 2) -> stored coefficients (1, B, coeffs + 2 chroma_coeffs)."""
        return self.net(self.encoding(coords))

    def spread(self, stored: torch.Tensor) -> torch.Tensor:
        """(..., coeffs + 2 chroma) -> (..., C, coeffs): each channel's list, zero-padded."""
        k = self.counts[0]
        parts, start = [], 0
        for count in self.counts:
            part = stored[..., start:start + count]
            parts.append(torch.nn.functional.pad(part, (0, k - count)))
            start += count
        return torch.stack(parts, dim=-2)

    # -- rendering ----------------------------------------------------------------------------
    def _basis(self, positions: torch.Tensor, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block index and cosine basis values (N, block) at pixel-unit ``positions``."""
        b = self.block
        index = torch.div(positions, b, rounding_mode="floor").long().clamp(0, n_blocks - 1)
        u = positions - index * b
        k = torch.arange(b, dtype=torch.float32)
        alpha = torch.full((b,), math.sqrt(2.0 / b))
        alpha[0] = math.sqrt(1.0 / b)
        return index, alpha * torch.cos(math.pi * k * u[:, None] / b)

    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Evaluates the network only on the blocks the band touches, BLOCKS_PER_CHUNK at a
        time, so memory is bounded whatever the image claims to be (a 16384-wide header and an
        8-pixel-wide output touch 8 block columns, not 2048)."""
        b, channels = self.block, self.channels
        row_index, row_basis = self._basis(ys, self.n_rows)
        col_index, col_basis = self._basis(xs, self.n_cols)
        cols, col_slot = torch.unique(col_index, return_inverse=True)
        rows = torch.unique(row_index)
        out = torch.empty(len(ys), len(xs), channels)
        per_chunk = max(1, BLOCKS_PER_CHUNK // len(cols))
        for r0 in range(0, len(rows), per_chunk):
            chunk = rows[r0:r0 + per_chunk]
            coords = self.block_coords(chunk, cols)[None]
            stored = self.forward(coords.to(self.net.weights[0].device))[0].cpu()
            dense = torch.zeros(len(chunk) * len(cols), channels, b * b)
            dense[..., self.flat_index] = self.spread(stored)
            dense = dense.reshape(len(chunk), len(cols), channels, b, b)
            for i, row in enumerate(chunk.tolist()):
                sel = (row_index == row).nonzero().squeeze(1)
                vertical = torch.einsum("yk,nckl->yncl", row_basis[sel], dense[i])
                out[sel] = torch.einsum("yxcl,xl->yxc", vertical[:, col_slot], col_basis)
        return out

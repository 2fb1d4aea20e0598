"""Regions of the image plane with their own networks, blended without seams.

A :class:`Tiling` cuts the image into ``rows x cols`` equal cells and keeps some of them (all, for
the gridded family; those with the largest error, for the residual family; the single whole-image
cell, for the plain SIREN). Each kept cell has a network that sees *local* coordinates: the cell's
core maps to [-1, 1], and the cell is extended by ``overlap`` times its size on every side that
has a neighbour, so neighbouring networks are both trained on a shared band.

Rendering blends the networks with a partition of unity: across each band the left (or upper)
cell's weight falls from 1 to 0 as cos^2 while its neighbour's rises as sin^2, and the 2-D weight
is the product of the two 1-D weights. Outside bands a cell's weight is exactly 1, so every pixel
is a convex combination of networks that were trained on it, and there is no seam to see at any
sampling scale. With ``overlap = 0`` cells meet edge to edge.

Coordinates: the image spans [0, W] x [0, H] in pixel units (pixel j has its centre at j + 1/2),
the same frame at every output size.
"""

from __future__ import annotations

import math

import torch


class Tiling:
    def __init__(self, height: int, width: int, rows: int = 1, cols: int = 1,
                 overlap: float = 0.0, cells: list[int] | None = None):
        self.height, self.width = height, width
        self.rows, self.cols, self.overlap = rows, cols, overlap
        self.cells = list(range(rows * cols)) if cells is None else list(cells)
        self.cell_h, self.cell_w = height / rows, width / cols
        margin_y, margin_x = overlap * self.cell_h, overlap * self.cell_w
        self.margin = (margin_y, margin_x)
        # Per kept cell: core and extended intervals in pixel units, [lo, hi).
        ext = []
        for cell in self.cells:
            r, c = divmod(cell, cols)
            y0, y1 = r * self.cell_h, (r + 1) * self.cell_h
            x0, x1 = c * self.cell_w, (c + 1) * self.cell_w
            ext.append((max(0.0, y0 - margin_y), min(float(height), y1 + margin_y),
                        max(0.0, x0 - margin_x), min(float(width), x1 + margin_x)))
        self.extended = ext
        # Pixel index ranges (centres inside the extended interval) for training samples.
        self.pixel_ranges = torch.tensor(
            [[math.ceil(a - 0.5), math.floor(b - 0.5 - 1e-9) + 1, math.ceil(c - 0.5),
              math.floor(d - 0.5 - 1e-9) + 1] for a, b, c, d in ext], dtype=torch.long)
        rc = torch.tensor([divmod(cell, cols) for cell in self.cells], dtype=torch.float32)
        rc = rc.reshape(-1, 2)
        self.cell_row, self.cell_col = rc[:, 0:1], rc[:, 1:2]  # (G, 1), for per-sample weights
        self.centre_y = (rc[:, 0] + 0.5) * self.cell_h  # (G,)
        self.centre_x = (rc[:, 1] + 0.5) * self.cell_w

    @property
    def groups(self) -> int:
        return len(self.cells)

    def pixels_per_group(self) -> int:
        """The most training pixels any one group has (their counts differ by rounding)."""
        r = self.pixel_ranges
        return int(((r[:, 1] - r[:, 0]) * (r[:, 3] - r[:, 2])).max())

    def local(self, y: torch.Tensor, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """Pixel-unit positions -> local coordinates as (x, y), the core of a cell in [-1, 1].

        With ``group`` None, ``y`` and ``x`` are (G, N), one row per group, and the result is
        (G, N, 2); with a group index they are (N,) and the result is (1, N, 2).
        """
        if group is None:
            cy, cx = self.centre_y[:, None], self.centre_x[:, None]
        else:
            cy, cx = self.centre_y[group], self.centre_x[group]
        lx = (x - cx) * (2.0 / self.cell_w)
        ly = (y - cy) * (2.0 / self.cell_h)
        out = torch.stack([lx, ly], dim=-1)
        return out if group is None else out[None]

    def _tables(self) -> tuple[torch.Tensor, ...]:
        """Per group, along each axis of its pixel range: local coordinate and blend weight of
        every pixel centre, padded to the longest range: (G, L) tables."""
        if not hasattr(self, "_cached_tables"):
            r = self.pixel_ranges
            ly = int((r[:, 1] - r[:, 0]).max())
            lx = int((r[:, 3] - r[:, 2]).max())
            py = r[:, 0:1].float() + 0.5 + torch.arange(ly, dtype=torch.float32)  # (G, Ly)
            px = r[:, 2:3].float() + 0.5 + torch.arange(lx, dtype=torch.float32)
            self._cached_tables = (
                (py - self.centre_y[:, None]) * (2.0 / self.cell_h),
                (px - self.centre_x[:, None]) * (2.0 / self.cell_w),
                self._weight_1d(py, self.cell_row, self.rows, self.cell_h, self.margin[0]),
                self._weight_1d(px, self.cell_col, self.cols, self.cell_w, self.margin[1]),
            )
        return self._cached_tables

    def training_data(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The constant tensors :meth:`assemble` reads: the target image and, per group along
        each axis of its pixel range, the local coordinate and blend weight of every pixel."""
        local_y, local_x, weight_y, weight_x = self._tables()
        return {"target": target, "ranges": self.pixel_ranges, "local_y": local_y,
                "local_x": local_x, "weight_y": weight_y, "weight_x": weight_x}

    def draw(self, generator: torch.Generator, batch: int) -> torch.Tensor:
        """The random numbers of ``batch`` samples per group: (2, G, B) in [0, 1)."""
        return torch.rand(2, self.groups, batch, generator=generator)

    @staticmethod
    def assemble(data: dict[str, torch.Tensor], draws: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples from draws: pixel indices iy, ix (G, B), local coordinates (G, B, 2) and
        blend weights (G, B). Pure tensor code, traced into the training step."""
        r = data["ranges"]
        oy = (draws[0] * (r[:, 1:2] - r[:, 0:1])).long()
        ox = (draws[1] * (r[:, 3:4] - r[:, 2:3])).long()
        coords = torch.stack([data["local_x"].gather(1, ox), data["local_y"].gather(1, oy)],
                             dim=-1)
        weights = data["weight_y"].gather(1, oy) * data["weight_x"].gather(1, ox)
        return r[:, 0:1] + oy, r[:, 2:3] + ox, coords, weights

    def sample_batch(self, generator: torch.Generator, batch: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch`` random samples from each group's extended region: :meth:`assemble` of
        fresh draws."""
        return self.assemble(self.training_data(torch.empty(0)), self.draw(generator, batch))

    @staticmethod
    def _weight_1d(pos: torch.Tensor, index, count: int, size: float, margin: float
                   ) -> torch.Tensor:
        """Blend weight of cell ``index`` (of ``count`` along one axis) at positions ``pos``;
        ``index`` may be a tensor that broadcasts against ``pos`` (one cell per row)."""
        index = torch.as_tensor(index, dtype=pos.dtype)
        lo, hi = index * size, (index + 1) * size
        has_lo, has_hi = index > 0, index < count - 1
        one = torch.ones((), dtype=pos.dtype)
        if margin <= 0:  # edge to edge: a position belongs to the cell whose [lo, hi) holds it
            inside = ~(has_lo & (pos < lo)) & ~(has_hi & (pos >= hi))
            return inside.to(pos.dtype)
        rise = torch.sin(0.5 * math.pi * ((pos - (lo - margin)) / (2 * margin)).clamp(0, 1))
        fall = torch.cos(0.5 * math.pi * ((pos - (hi - margin)) / (2 * margin)).clamp(0, 1))
        return torch.where(has_lo, rise.square(), one) * torch.where(has_hi, fall.square(), one)

    def group_means(self, ys: torch.Tensor, xs: torch.Tensor, values: torch.Tensor
                    ) -> torch.Tensor:
        """The mean of ``values`` on the grid ``ys`` x ``xs`` (pixel centres) over each kept
        cell's core, (G,); NaN for a cell that the grid does not sample."""
        row = (ys / self.cell_h).long().clamp(0, self.rows - 1)
        col = (xs / self.cell_w).long().clamp(0, self.cols - 1)
        cell = (row[:, None] * self.cols + col[None, :]).reshape(-1)
        n = self.rows * self.cols
        sums = torch.bincount(cell, weights=values.reshape(-1).double(), minlength=n)
        counts = torch.bincount(cell, minlength=n)
        kept = torch.tensor(self.cells, dtype=torch.long)
        return (sums[kept] / counts[kept]).float()  # 0 / 0: NaN

    def window(self, group: int, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Blend weights of ``group`` on the grid ``y`` (rows) x ``x`` (cols): shape (len y, len x)."""
        r, c = divmod(self.cells[group], self.cols)
        wy = self._weight_1d(y, r, self.rows, self.cell_h, self.margin[0])
        wx = self._weight_1d(x, c, self.cols, self.cell_w, self.margin[1])
        return wy[:, None] * wx[None, :]

    def weights(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Blend weights of every group at its own sample positions y, x of shape (G, B)."""
        return (self._weight_1d(y, self.cell_row, self.rows, self.cell_h, self.margin[0])
                * self._weight_1d(x, self.cell_col, self.cols, self.cell_w, self.margin[1]))

    def span(self, group: int, y: torch.Tensor, x: torch.Tensor) -> tuple[slice, slice]:
        """The index ranges of the sorted sample positions ``y``, ``x`` that fall in ``group``'s
        extended region (where its blend weight can be non-zero)."""
        y0, y1, x0, x1 = self.extended[group]
        ys = slice(int(torch.searchsorted(y, torch.tensor(y0))),
                   int(torch.searchsorted(y, torch.tensor(y1))))
        xs = slice(int(torch.searchsorted(x, torch.tensor(x0))),
                   int(torch.searchsorted(x, torch.tensor(x1))))
        return ys, xs


"""The residual family's encode side: the base network fitted first, then the residual
networks placed on the cells where the decoded base errs most, and the split of the budget."""

from __future__ import annotations

import dataclasses

from functools import partial
from typing import Iterator

import torch

from ..models.base import SineLayers, SirenStack
from ..models.residual import Residual
from ..models.tiling import Tiling
from ..presets import Schedule
from . import trainable
from .base import FitTask, Trainable
from .gridded import grid_for
from .siren import largest_width, tapered, tiled_fit_task

#: Shares of the weights for the base network and of the cells with a residual network.
BASE_SHARE = 0.5
CELL_SHARE = 0.25
#: Training steps given to the base stage; the residual stage gets the rest.
BASE_STEPS = 0.5


@trainable
class ResidualFit(Trainable, Residual):
    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        yield tiled_fit_task(self.base, target, self.color,
                             partial(self.mse_against, target, render_band=self.base_band),
                             "base", share=BASE_STEPS, schedule=schedule)
        if self.hparams["cells"] == 0:
            return
        residual = target - self.render(render_band=self.base_band)
        error = self.color.rgb_error(residual).square().sum(-1)
        self.use_cells(self.choose_cells(error))
        yield tiled_fit_task(self.residual, residual, self.color,
                             partial(self.mse_against, target), "residual",
                             share=1 - BASE_STEPS, error_map=partial(self.error_map, target),
                             schedule=dataclasses.replace(schedule, mean_start=False))

    def choose_cells(self, error: torch.Tensor) -> list[int]:
        """The ``cells`` cells of the grid with the largest summed squared error, in order."""
        hp = self.hparams
        tiling = Tiling(self.height, self.width, hp["rows"], hp["cols"])
        totals = []
        for cell in range(hp["rows"] * hp["cols"]):
            r, c = divmod(cell, hp["cols"])
            y0, y1 = round(r * tiling.cell_h), round((r + 1) * tiling.cell_h)
            x0, x1 = round(c * tiling.cell_w), round((c + 1) * tiling.cell_w)
            totals.append(float(error[y0:y1, x0:x1].sum()))
        ranked = sorted(range(len(totals)), key=lambda i: (-totals[i], i))
        return sorted(ranked[:hp["cells"]])

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        rows, cols = grid_for(height, width, cell_side=96)
        hp = {"base_depth": 4, "res_depth": 3, "overlap": 0.0625, "w0_first": 20.0, "w0": 30.0,
              "rows": rows, "cols": cols, **fixed}
        hp.setdefault("cells", max(1, round(CELL_SHARE * hp["rows"] * hp["cols"])))

        def size(hp: dict) -> dict:
            layers = SineLayers.of(hp)
            hp = dict(hp)
            hp.setdefault("base_width", largest_width(int(BASE_SHARE * n_params), lambda w:
                                                      SirenStack.count(1, encoding_dim, w,
                                                                       hp["base_depth"],
                                                                       channels, layers)))
            rest = n_params - SirenStack.count(1, encoding_dim, hp["base_width"],
                                               hp["base_depth"], channels, layers)
            hp.setdefault("res_width", largest_width(rest, lambda w: SirenStack.count(
                max(1, hp["cells"]), encoding_dim, w, hp["res_depth"], channels, layers)))
            return hp

        return tapered(size, hp, "base_width")

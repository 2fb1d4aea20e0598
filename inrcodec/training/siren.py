"""The plain SIREN family's encode side, and the training stage of a tiled SIREN that the
other SIREN families share (:func:`tiled_fit_task`)."""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

import torch

from ..color import ColorTransform
from ..models.base import SineLayers, SirenStack
from ..models.siren import Siren, TiledSiren
from ..presets import Schedule
from . import trainable, warmstart
from .base import FitTask, Trainable, rgb_mse_loss


def tiled_fit_task(field: TiledSiren, target: torch.Tensor, color: ColorTransform, evaluate,
                   name: str, share: float = 1.0, error_map: Callable | None = None,
                   schedule: Schedule | None = None) -> FitTask:
    """Training batches of random pixels per cell against ``target`` (H, W, C).

    ``evaluate()`` is the whole image's MSE; ``error_map()``, if given, its per-pixel error
    as :meth:`~.base.Trainable.error_map` returns it, from which each cell's error is
    measured so that the trainer keeps every cell's best weights: a cell whose training
    goes astray late falls back on its earlier weights (measured: one cell in 15 did on 2 of
    24 Kodak images at 0.5 bpp, and took 0.75-2.3 dB off them; docs/experiments.md).

    With overlapping cells, each sample carries its cell's blend weight as an extra target
    channel: the loss ``sum_g w_g (f_g - y)^2`` bounds the blended error
    ``(sum_g w_g f_g - y)^2`` from above (Jensen; the weights sum to one), so the networks
    are fitted for what the decoder shows, without spending capacity far into a band.

    The ``schedule`` (default: none of these) may weigh the loss's chroma
    (``chroma_weight``), start the networks from their shape's learned weights where there are
    any (``warm_start``, :mod:`.warmstart`; ``name`` is the family's, which the weights are
    learned for) and start each network's output bias at its cell's mean (``mean_start``),
    NIF25's output normalised around the image mean.
    """
    tiling = field.tiling
    weighted = tiling.overlap > 0 and tiling.groups > 1
    schedule = schedule or Schedule()

    def assemble(data: dict[str, torch.Tensor], draws: torch.Tensor):
        iy, ix, coords, weights = tiling.assemble(data, draws)
        values = data["target"][iy, ix]
        if weighted:
            values = torch.cat([values, weights[..., None]], dim=-1)
        return coords, values

    def evaluate_groups() -> tuple[float, torch.Tensor]:
        ys, xs, error = error_map()
        return float(error.mean()), tiling.group_means(ys, xs, error)

    def initialise(generator: torch.Generator) -> None:
        field.net.initialise(generator)
        if schedule.mean_start:
            start_at_mean()

    @torch.no_grad()
    def start_at_mean() -> None:
        ys = torch.arange(target.shape[0], dtype=torch.float32) + 0.5
        xs = torch.arange(target.shape[1], dtype=torch.float32) + 0.5
        means = torch.stack([tiling.group_means(ys, xs, target[..., c].cpu())
                             for c in range(target.shape[-1])], dim=-1)  # (G, C)
        bias = field.net.biases[-1]
        bias.copy_(means.nan_to_num(0.0)[:, None, :].to(bias.device))

    if schedule.warm_start:
        warmstart.warm(name, field.net)
    if schedule.mean_start:
        start_at_mean()
    per_group = error_map is not None and tiling.groups > 1
    return FitTask(module=field, draw=tiling.draw, assemble=assemble,
                   data=tiling.training_data(target),
                   loss=rgb_mse_loss(color, schedule.chroma_weight),
                   evaluate=evaluate, samples=tiling.pixels_per_group(),
                   groups=tiling.groups, name=name, share=share, weighted=weighted,
                   evaluate_groups=evaluate_groups if per_group else None,
                   initialise=initialise)


@trainable
class SirenFit(Trainable, Siren):
    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        yield tiled_fit_task(self.field, target, self.color, partial(self.mse_against, target),
                             "siren", schedule=schedule)

    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        # A first-layer factor of 60, not SIREN's usual 30: one network spans the whole image
        # from raw coordinates, and more frequency at the input pays (+0.3 / +0.6 dB at 0.25 /
        # 0.5 bpp on kodim01+07, docs/experiments.md).
        hp = {"depth": 4, "w0_first": 60.0, "w0": 30.0, **fixed}

        def size(hp: dict) -> dict:
            return {"width": largest_width(n_params, lambda w: SirenStack.count(
                1, encoding_dim, w, hp["depth"], channels, SineLayers.of(hp))), **hp}

        return tapered(size, hp, "width")


#: Tapered widths (NIF25's; issue 36) that the SIREN families' sizing gives unless told a
#: ``ratio`` (the DCT head's aside: it was screened, not measured on Kodak): the first hidden
#: layer ``TAPER`` times as wide as the last, where the networks that span the image (the plain
#: SIREN, a grid's cells, the residual family's base) keep at least ``TAPER_MIN_WIDTH`` units in
#: their last layer. On all of Kodak -7.2, -3.7 and -5.2 points of BD-rate vs JPEG for the plain
#: SIREN, the gridded and the residual families, every such network there 12 or more wide
#: (docs/results/kodak-layers.md); narrower, on small crops, the taper lost: a 48x64 crop's
#: SIREN of 10 (15 untapered) -5.3 dB in 3,000 steps, a 64x80 crop's one cell of 7 (12
#: untapered) -0.26 dB in 2,000 (docs/experiments.md, "The SIREN families with NIF25's
#: levers").
TAPER = 2.0
TAPER_MIN_WIDTH = 12


def tapered(size: Callable[[dict], dict], hp: dict, width_key: str,
            keep: tuple[str, ...] = ()) -> dict:
    """The hyper-parameters that ``size`` gives ``hp`` with tapered widths, where their
    ``width_key`` keeps TAPER_MIN_WIDTH units; else with equal widths. The ``keep`` keys are
    those of the equal widths' sizing (a grid). A ``ratio`` in ``hp`` (the caller's) stands, as
    does a given width."""
    plain = size(hp)
    if "ratio" in hp or width_key in hp:
        return plain
    taper = size({**hp, "ratio": TAPER, **{k: plain[k] for k in keep}})
    return taper if taper[width_key] >= TAPER_MIN_WIDTH else plain


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

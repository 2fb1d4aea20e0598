"""The latent family's encode side: its training, rate term, lambda's control and sizing.

Training (``fit_tasks``): random pixels, the loss ``MSE + lambda * bits per pixel``, where the
bits of the latents are those of the file's coder, its entropy model fitted to them
(:mod:`.rate`: one object gives the rate term and the coder's tables): each latent's distance
from the mean the model predicts for it, at the bits a unit costs in its table. ``lambda`` is
steered during the fit so that the rounded latents land on the rate that rate control gives the
family (:meth:`plan_rate`); latents that still cost more than planned at the end are rounded
towards their means where that costs least distortion per bit saved (:meth:`round_to_plan`).
The latents see uniform noise in place of rounding for most of the fit, and rounding with a
straight-through gradient at the end (the schedule's ``rounding``).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from .. import arm, context, entropy
from ..models.latent import Latent, Synthesis, interpolation_taps
from ..presets import Schedule
from ..quantize import TensorQuant, cheapest_moves, rounding_offset, to_symbols, with_step
from . import trainable
from .base import FitTask, Trainable, rgb_mse_loss
from .rate import GridCode, RateModel, rate_model

#: Latent channels per grid that sizing picks (two rather than one: +0.08 / -0.1 dB on kodim05,
#: +0.58 / +0.71 dB on kodim23 at 0.25 / 0.5 bpp, for 20% more time; docs/experiments.md).
CHANNELS_PER_GRID = 2
#: lambda is corrected (by rate control's LambdaController) every CONTROL_EVERY steps, or as
#: often as every step where the latents are few (a correction measures the rate of all of
#: them: about 40 ms for a Kodak image's million, against 20 ms for a step), at most one
#: correction per LATENTS_PER_CONTROL latents a step.
CONTROL_EVERY = 10
LATENTS_PER_CONTROL = 100_000
#: The context model's mean weights are refitted to the latents every this many steps (the
#: rate term's means and classes follow the latents every CONTROL_EVERY steps).
REFIT_EVERY = 50
#: The rounding to the plan is made again from the latents it left at most ROUNDING_TRIES
#: times, while they cost more than planned (each time a latent moves at most one step); and
#: again from what the coder spends at most CODER_TRIES times (coder 3's network is fitted to
#: the latents it codes).
ROUNDING_TRIES = 6
CODER_TRIES = 3
#: When (fractions of the steps) the coder's own model is fitted to the latents as they train
#: (coder 3's network, :meth:`.rate.RateModel.refit`; the other coders' are fitted at every
#: measurement).
REFIT_CODER_AT = (0.5, 0.8)
#: Bits per weight that the synthesis network is expected to cost (its steps are searched),
#: its widest hidden layers, and the largest share of the budget's weights it is sized for.
SYNTHESIS_BITS = 8.0
SYNTHESIS_WIDTH = 24
SYNTHESIS_SHARE = 0.15
#: The learned filters' learning rate (upsampling 2) as a share of the synthesis's: at the
#: synthesis's own, they swung the fit (kodim16 at 0.25 bpp -0.19 dB, docs/experiments.md).
FILTER_LR = 0.1


@trainable
class LatentFit(Trainable, Latent):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Training state (not stored): lambda, and the blend of noise (0) and straight-through
        # rounding (1) the latents are seen through; the per-latent state of the rate term is
        # made when a fit starts (:meth:`_start_rate_term`), a decode never needs it.
        self.register_buffer("rate_lambda", torch.tensor(1e-3), persistent=False)
        self.register_buffer("hard", torch.tensor(0.0), persistent=False)
        # The latents' learning rate, as a multiple of the schedule's: the controller's growth.
        self.register_buffer("latent_lr", torch.tensor(1.0), persistent=False)
        self.latent_bits_target: float | None = None
        self.code_weights: list[tuple[int, ...] | None] = [None] * self.levels
        self.controller = None  # rate control's LambdaController (plan_rate)
        self.kept_quantisers = frozenset(f"latents.{level}" for level in range(self.levels))
        self.rate_model: RateModel = rate_model(self.default_coder)
        self.rounding = 0.0  # the schedule's share of rounded steps (:meth:`fit_tasks`)

    @property
    def coder(self) -> str:
        return self.rate_model.coder

    @coder.setter
    def coder(self, name: str) -> None:
        if name != self.rate_model.coder:
            self.rate_model = rate_model(name)

    @torch.no_grad()
    def fixed_quants(self) -> dict[str, TensorQuant]:
        """The latents' quantisers: step 1, what training rounded them to. Latents whose rate
        overshoots the plan are brought within it first (:meth:`round_to_plan`), and while the
        coder would still spend more than planned on them (coder 3, its network fitted to them
        anew), rounded again, at most CODER_TRIES times."""
        if self.latent_bits_target is not None:
            for _ in range(CODER_TRIES):
                self.round_to_plan(self.latent_bits_target / self.rate_model.scale)
                if self.coded_bits() <= self.latent_bits_target:
                    break
        return {f"latents.{level}": q for level, q in enumerate(self._latent_quants())}

    @torch.no_grad()
    def round_to_plan(self, planned: float) -> None:
        """Rate-distortion-optimised rounding: while the rounded latents cost more than
        ``planned`` bits in the rate model's tables, latents step by one towards their predicted
        means or zero, the steps of least distortion per bit saved first
        (:meth:`_cheapest_steps`), just enough of them to save the excess; measured again, at
        most ROUNDING_TRIES times, the excess scaled by what the tables said the last steps would
        save over what they saved (the tables are fitted to the moved latents anew: two thirds
        of it on a 64x48 image)."""
        sensitivity = None
        scale, said, before = 1.0, 0.0, 0.0  # the last steps': what the tables said, bits then
        for _ in range(ROUNDING_TRIES):
            rounded = [torch.round(g).numpy() for g in self.latents]
            codes = [self.rate_model.code(q) for q in rounded]
            bits = sum(c.bits for c in codes)
            if said > 0 and before > bits:
                scale = min(max(scale * said / (before - bits), 1.0), 4.0)
            if bits <= planned:
                return
            if sensitivity is None:
                sensitivity = self.latent_sensitivity()
            said = self._cheapest_steps(rounded, codes, sensitivity, scale * (bits - planned))
            before = bits

    def _cheapest_steps(self, rounded: list[np.ndarray], codes: list[GridCode],
                        sensitivity: list[torch.Tensor], need: float) -> float:
        """Moves the latents (rounded, in these codes) by the steps of least distortion per bit
        saved whose savings reach ``need``; returns what the tables said they save. A latent's
        candidate is a step of one towards its predicted mean or towards zero, whichever costs
        less distortion per bit; a step saves what the rate model's tables say
        (:meth:`.rate.RateModel.step_savings`: its residual's bits and those of the latents whose
        context it is) and adds s ((q' - y)^2 - (q - y)^2) of distortion, y the latent, q its
        rounding, q' the step's, s the distortion a unit of its grid and channel causes
        (:meth:`latent_sensitivity`)."""
        steps = []  # per grid: each step's latent (flat index), direction, distortion, saving
        for grid, q, code, s in zip(self.latents, rounded, codes, sensitivity):
            flat, mean = q.reshape(-1), code.mean.reshape(-1)
            movable = np.flatnonzero((flat != 0) | (mean != flat))  # few of a fine grid's
            value = flat[movable].astype(np.float64)
            y = grid.detach().reshape(-1)[torch.from_numpy(movable)].numpy().astype(np.float64)
            weight = s.numpy().astype(np.float64)[movable // (q.shape[1] * q.shape[2])]
            cost = np.full(movable.size, np.inf)  # per latent, its better step's cost per bit
            way = np.zeros(movable.size, np.int64)
            added, saved = np.zeros(movable.size), np.zeros(movable.size)
            for toward in (np.sign(mean[movable] - value), -np.sign(value)):
                at = np.flatnonzero(toward)
                step = toward[at].astype(np.int64)
                bits = self.rate_model.step_savings(q, code, movable[at], step)
                more = weight[at] * ((value[at] + step - y[at]) ** 2 - (value[at] - y[at]) ** 2)
                per_bit = np.where(bits > 0, more / np.where(bits > 0, bits, 1.0), np.inf)
                better = per_bit < cost[at]
                at = at[better]
                cost[at], way[at], added[at], saved[at] = \
                    per_bit[better], step[better], more[better], bits[better]
            keep = np.isfinite(cost)
            steps.append((movable[keep], way[keep], added[keep], saved[keep]))
        savings = np.concatenate([m[3] for m in steps])
        chosen = cheapest_moves(np.concatenate([m[2] for m in steps]), savings, need)
        bounds = np.cumsum([0] + [len(m[0]) for m in steps])
        for grid, q, (at, toward, _, _), lo, hi in zip(self.latents, rounded, steps,
                                                       bounds[:-1], bounds[1:]):
            picked = chosen[(chosen >= lo) & (chosen < hi)] - lo
            q.reshape(-1)[at[picked]] += toward[picked]
            grid.copy_(torch.from_numpy(q))
        return float(savings[chosen].sum())

    @torch.no_grad()
    def latent_sensitivity(self, rows: int = 16) -> list[torch.Tensor]:
        """Per grid, per channel, the squared colour error that a unit change of one of its
        latents causes: the synthesis' mean squared gradient with respect to that input over
        ``rows`` rows of pixels (drawn with a fixed seed), times the 4^l pixels' worth of area
        that a latent of grid l spreads over."""
        chosen = torch.randperm(self.height, generator=torch.Generator().manual_seed(0))[:rows]
        ys = torch.sort(chosen).values.float() + 0.5
        xs = torch.arange(self.width, dtype=torch.float32) + 0.5
        features = self._features_band(ys, xs, self.grids()).flatten(0, 1)
        with torch.enable_grad():
            features.requires_grad_(True)
            out = self.synthesis(features)
            squared = torch.zeros_like(features)
            for k in range(out.shape[1]):
                (grad,) = torch.autograd.grad(out[:, k].sum(), features, retain_graph=True)
                squared += grad * grad
        per_input = squared.mean(0).view(self.levels, self.latent_channels)
        area = torch.tensor([4.0 ** level for level in range(self.levels)])[:, None]
        return list((per_input * area).clamp_min(1e-12))

    def _latent_quants(self) -> list[TensorQuant]:
        """Step 1 and just enough bits for each grid as it is (at most coder 3's 8 bits)."""
        quants = [with_step(g.detach(), 1.0) for g in self.latents]
        if self.coder != "arm":
            return quants
        return [q if q.bits <= arm.MAX_GRID_BITS else TensorQuant(arm.MAX_GRID_BITS, 1.0)
                for q in quants]

    def entropy_coder(self, coder: str) -> str | entropy.Coder:
        """Coder 3 with the network fitted to the latents (its rate model's: the family's
        rate model becomes coder 3's, if a fit without a rate target did not make it so)."""
        if coder != "arm":
            return coder
        self.coder = coder
        return entropy.ArmCoder(self.coder_prior)

    def _symbols(self) -> tuple[list[np.ndarray], list[int]]:
        """The latents as the file stores them: their integer grids and their largest
        magnitudes."""
        quants = self._latent_quants()
        return [to_symbols(g, q) for g, q in zip(self.latents, quants)], [q.qmax for q in quants]

    def coder_prior(self) -> arm.Network:
        """Coder 3's network for the latents as they are (:meth:`.rate.ArmRate.network`)."""
        return self.rate_model.network(*self._symbols())

    def plan_rate(self, payload_bytes: float, coder: str, controller) -> None:
        synthesis = SYNTHESIS_BITS * sum(p.numel() for n, p in self.named_parameters()
                                         if not n.startswith("latents."))
        self.latent_bits_target = max(8.0 * payload_bytes - synthesis, 0.01 * self.pixels)
        self.coder = coder
        self.controller = controller
        controller.target = self.latent_bits_target
        self.rate_lambda.fill_(controller.value)

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def _upsampled(self, grid: torch.Tensor, level: int) -> torch.Tensor:
        """A grid (C, h, w) at every pixel of the image (C, H, W): the same function as
        :meth:`_features_band` (bilinear: PyTorch's, whose sample positions and border clamping
        are the grid's)."""
        if level == 0:
            return grid
        if self.bicubic:
            c, h, w = grid.shape
            iy, wy = interpolation_taps(torch.arange(self.height) + 0.5, h, 1 << level, True)
            ix, wx = interpolation_taps(torch.arange(self.width) + 0.5, w, 1 << level, True)
            rows = sum(grid[:, iy[:, a], :] * wy[:, a, None] for a in range(4))
            return sum(rows[:, :, ix[:, b]] * wx[:, b] for b in range(4))
        up = torch.nn.functional.interpolate(grid[None], scale_factor=1 << level,
                                             mode="bilinear", align_corners=False)[0]
        return up[:, :self.height, :self.width]

    # -- fitting ------------------------------------------------------------------------------
    def forward(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: the colour at the batch's pixels (given as their interpolation taps; None
        for every pixel of the image in rows, the step of an image no larger than the batch),
        with the grids seen through ``noise`` (one uniform draw per latent) or rounding; and the
        rate term of the loss (computed here, so that the trainer's functional call
        differentiates it)."""
        taps_y, weights_y, taps_x, weights_x, noise = batch
        features, offset = [], 0
        for level, grid in enumerate(self.latents):
            n = grid.numel()
            seen = grid + (1 - self.hard) * noise[offset:offset + n].view_as(grid) \
                + self.hard * rounding_offset(grid)
            offset += n
            if self.filters is not None:
                seen = self.filters(seen, level)
            if taps_y is None:  # every pixel
                features.append(self._upsampled(seen, level).flatten(1))
                continue
            iy, wy, ix, wx = taps_y[level], weights_y[level], taps_x[level], weights_x[level]
            value = 0
            for a in range(iy.shape[1]):
                for b in range(ix.shape[1]):
                    value = value + seen[:, iy[:, a], ix[:, b]] * (wy[:, a] * wx[:, b])
            features.append(value)
        return self.synthesis(torch.cat(features).T), self.rate_penalty()

    def rate_penalty(self) -> torch.Tensor:
        """lambda times the latents' bits per pixel in the rate model: each latent's distance
        from the mean its coder predicts, times the bits a unit of it costs in its table (both
        as the latents were when last measured: :meth:`measure_code`)."""
        bits = sum((self.unit_bits(level) * (g - getattr(self, f"code_mean{level}")).abs()).sum()
                   for level, g in enumerate(self.latents))
        return self.rate_lambda * bits / self.pixels

    def unit_bits(self, level: int) -> torch.Tensor:
        """The bits a unit away from its mean costs, per latent of grid ``level``: its class's
        (a class a byte, as the latents were when last measured)."""
        return getattr(self, f"unit_table{level}")[getattr(self, f"code_class{level}").long()]

    @torch.no_grad()
    def latent_bits(self) -> float:
        """The code length of the rounded latents in the rate model's tables."""
        return sum(self.rate_model.code(torch.round(g).numpy()).bits for g in self.latents)

    @torch.no_grad()
    def coded_bits(self) -> float:
        """What the file's coder spends on the latents as the file stores them: their code
        length in the rate model's tables, times its scale measured anew (coder 3's network
        fitted to them)."""
        symbols, qmaxes = self._symbols()
        self.rate_model.refit(symbols, qmaxes)
        return self.rate_model.scale * sum(self.rate_model.code(g).bits for g in symbols)

    @torch.no_grad()
    def measure_code(self, refit: bool = True) -> float:
        """The rounded latents' code length in the rate model's tables; the rate term's means
        and unit costs set to those of their code (the context model's weights refitted, or as
        last fitted)."""
        self._start_rate_term()
        total = 0.0
        for level, g in enumerate(self.latents):
            code = self.rate_model.code(torch.round(g).numpy(),
                                        None if refit else self.code_weights[level])
            self.code_weights[level] = code.weights
            total += code.bits
            getattr(self, f"code_mean{level}").copy_(torch.from_numpy(code.mean))
            getattr(self, f"code_class{level}").copy_(torch.from_numpy(code.classes))
            getattr(self, f"unit_table{level}").copy_(
                torch.from_numpy(np.resize(code.slopes, context.CLASSES)))
        return total

    @torch.no_grad()
    def control(self, step: int, total: int) -> None:
        """Between training steps: steer lambda towards the planned rate (its controller told
        the coder's bits of the rounded latents), and switch from noise to rounding for the
        schedule's last ``rounding`` share of the steps."""
        self.hard.fill_(1.0 if step >= (1 - self.rounding) * total else 0.0)
        latents = sum(g.numel() for g in self.latents)
        every = max(1, min(CONTROL_EVERY, math.ceil(latents / LATENTS_PER_CONTROL)))
        if step % every or self.controller is None:
            return
        if step in {round(f * total) // every * every for f in REFIT_CODER_AT}:
            self.rate_model.refit(*self._symbols())
        bits = self.measure_code(refit=step % (REFIT_EVERY * every // CONTROL_EVERY) == 0)
        self.rate_lambda.fill_(self.controller.correct(bits * self.rate_model.scale,
                                                       step / total, total // every))
        self.latent_lr.fill_(self.controller.growth)

    def _start_rate_term(self) -> None:
        """The rate term's state, per latent: the mean its coder predicts and its class, and
        per class the bits a unit away from the mean costs (:meth:`measure_code` sets them; a
        unit a bit until then), on the latents' device."""
        for level, grid in enumerate(self.latents):
            if not hasattr(self, f"code_mean{level}"):
                grid = grid.detach()
                self.register_buffer(f"code_mean{level}", torch.zeros_like(grid),
                                     persistent=False)
                self.register_buffer(f"code_class{level}",
                                     torch.zeros_like(grid, dtype=torch.uint8), persistent=False)
                self.register_buffer(f"unit_table{level}",
                                     torch.ones(context.CLASSES, device=grid.device),
                                     persistent=False)

    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        self._start_rate_term()
        self.rounding = schedule.rounding
        h, w = self.height, self.width
        rows = torch.arange(h, dtype=torch.float32) + 0.5
        cols = torch.arange(w, dtype=torch.float32) + 0.5
        data = {"target": target.reshape(h * w, -1)}
        for level, grid in enumerate(self.latents):
            iy, wy = interpolation_taps(rows, grid.shape[1], 1 << level, self.bicubic)
            ix, wx = interpolation_taps(cols, grid.shape[2], 1 << level, self.bicubic)
            data.update({f"iy{level}": iy, f"wy{level}": wy, f"ix{level}": ix, f"wx{level}": wx})
        n_latents = sum(g.numel() for g in self.latents)
        levels = self.levels

        def draw(generator: torch.Generator, batch: int) -> torch.Tensor:
            """Rows, columns (exact in float32: sides are at most 16384) and the noise; only
            the noise when a step takes every pixel."""
            batch = 0 if batch >= h * w else batch
            # Made in place, one tensor of the latents' size (128 MB at 12 MP), not two.
            draws = torch.empty(2 * batch + n_latents)
            if batch:
                draws[:batch] = torch.randint(0, h, (batch,), generator=generator)
                draws[batch:2 * batch] = torch.randint(0, w, (batch,), generator=generator)
            draws[2 * batch:].uniform_(generator=generator).sub_(0.5)
            return draws

        def assemble(data, draws):
            batch = (draws.numel() - n_latents) // 2
            if batch == 0:
                return (None, None, None, None, draws), data["target"]
            y, x = draws[:batch].long(), draws[batch:2 * batch].long()
            index = y * w + x
            taps = ([data[f"iy{level}"][y] for level in range(levels)],
                    [data[f"wy{level}"][y] for level in range(levels)],
                    [data[f"ix{level}"][x] for level in range(levels)],
                    [data[f"wx{level}"][x] for level in range(levels)], draws[2 * batch:])
            return taps, data["target"][index]

        mse = rgb_mse_loss(self.color)
        yield FitTask(module=self, draw=draw, assemble=assemble, data=data,
                      loss=lambda out, y: mse(out[0], y) + out[1],
                      evaluate=lambda max_pixels=0: self.mse_against(target, max_pixels),
                      samples=h * w, name="latent", control=self.control, keep_best=False,
                      fixed_quants=self.fixed_quants, collapse_ratio=math.inf,
                      lr_scales={n: self.latent_lr if n.startswith("latents.")
                                 else schedule.network_lr * FILTER_LR if n.startswith("filters.")
                                 else schedule.network_lr for n, _ in self.named_parameters()},
                      networks=frozenset(n for n, _ in self.named_parameters()
                                         if n.startswith("synthesis.")))

    # -- sizing -----------------------------------------------------------------------------
    @classmethod
    def hparams_for_params(cls, n_params, height, width, channels, encoding_dim, /, *,
                           samples=None, **fixed):
        """Seven levels (fewer on a small image); the synthesis two hidden layers of up to
        SYNTHESIS_WIDTH, narrower (and then shallower) where it would cost more than
        SYNTHESIS_SHARE of the budget (``n_params`` weights at sizing's bits per weight)."""
        levels = fixed.get("levels", max(1, min(7, math.ceil(math.log2(max(height, width))))))
        latent_channels = fixed.get("channels", CHANNELS_PER_GRID)
        inputs = levels * latent_channels
        allowed = SYNTHESIS_SHARE * n_params
        depth, hidden = fixed.get("depth", 2), fixed.get("width")

        def count(w: int, d: int) -> int:
            return sum(math.prod(s) for s in Synthesis.shapes(inputs, w, d, channels))

        if hidden is None:
            while True:
                hidden = max((w for w in range(2, SYNTHESIS_WIDTH + 1) if count(w, depth)
                              <= allowed), default=2)
                if hidden >= 8 or depth == 1 or "depth" in fixed:
                    break
                depth -= 1
        return {"levels": levels, "channels": latent_channels, "width": hidden, "depth": depth,
                "upsampling": fixed.get("upsampling", 0)}

"""The latent family's encode side: its training, rate term, lambda's control and sizing.

Training (``fit_tasks``): random pixels, the loss ``MSE + lambda * bits per pixel``, where the
bits of the latents are estimated in the coder's model (each latent's distance from its
predicted mean, weighted by the bits per unit magnitude of its class's current code;
:func:`grid_code`) and ``lambda`` is steered during the fit
so that the rounded latents land on the rate that rate control gives the family
(:meth:`plan_rate`). The latents see uniform noise in place of rounding for most of the fit, and
rounding with a straight-through gradient at the end (the schedule's ``rounding``).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from .. import arm, context, entropy
from ..models.latent import Latent, Synthesis, interpolation_taps
from ..presets import Schedule
from ..quantize import TensorQuant, to_symbols, with_step
from . import trainable
from .arm import ArmFit
from .base import FitTask, Trainable, rgb_mse_loss

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
#: The dead zone's threshold grows by this factor until the latents meet their plan, at most
#: this many times.
DEAD_ZONE_GROWTH = 1.15
DEAD_ZONE_TRIES = 200
#: The dead zone is planned again with the calibration of the latents it left at most this
#: many times, while they cost more in the coder than planned.
TRIM_TRIES = 3
#: When (fractions of the steps) the coder's real cost of the latents is measured.
CALIBRATE_AT = (0.5, 0.8)
#: Bits per weight that the synthesis network is expected to cost (its steps are searched),
#: its widest hidden layers, and the largest share of the budget's weights it is sized for.
SYNTHESIS_BITS = 8.0
SYNTHESIS_WIDTH = 24
SYNTHESIS_SHARE = 0.15
#: The most bits per unit magnitude that a grid's rate term charges (a grid of zeros).
MAX_UNIT_BITS = 12.0
#: The learned filters' learning rate (upsampling 2) as a share of the synthesis's: at the
#: synthesis's own, they swung the fit (kodim16 at 0.25 bpp -0.19 dB, docs/experiments.md).
FILTER_LR = 0.1
#: Adam steps of coder 3's entropy model (:mod:`.arm`) on the latents each time the coder is
#: asked to code new ones (at the calibrations and at the end).
ARM_STEPS = 300


def geometric_code(count: int, total: float) -> tuple[float, float]:
    """The code length of ``count`` integers whose magnitudes sum to ``total`` under their best
    two-sided geometric distribution, and the bits that a unit of magnitude costs in it (-log2
    of its ratio, at most MAX_UNIT_BITS)."""
    m = total / count if count else 0.0
    r = entropy.ratio_of_mean(m)
    if r <= 0:
        return 0.0, MAX_UNIT_BITS
    return (count * (math.log2((1 + r) / (1 - r)) - m * math.log2(r)),
            min(-math.log2(r), MAX_UNIT_BITS))


def grid_code(grid: np.ndarray, coder: str, weights: tuple[int, ...] | None = None
              ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """What ``coder`` spends on a grid of integers (C, H, W), estimated: its bits; per latent
    the mean it is coded around and its class (uint8); per class the bits a unit away from the
    mean costs (float32, context.CLASSES); and the context model's mean weights. The
    ``context`` coder's means and classes come from each latent's neighbours
    (:mod:`..context`; its model's bytes counted; the weights fitted unless given), the other
    coders' from the whole grid (one class)."""
    if coder != "context":
        bits, unit = geometric_code(grid.size, float(np.abs(grid).sum()))
        return (bits, np.zeros(grid.shape, np.float32), np.zeros(grid.shape, np.uint8),
                np.full(context.CLASSES, unit, np.float32), None)
    if not grid.any():  # the common finest grid at low rates: every value 0, class 0, mean 0
        return (8.0 * context.MODEL_BYTES, np.zeros(grid.shape, np.float32),
                np.zeros(grid.shape, np.uint8), np.full(context.CLASSES, MAX_UNIT_BITS, np.float32),
                (0, 0, 0, 0))
    qmax = with_step(torch.from_numpy(grid), 1.0).qmax  # as the file will store the grid
    weights, residual, classes = context.analyse(grid, qmax, weights)
    codes = [geometric_code(n, float(t)) for n, t in zip(*context.class_totals(residual, classes))]
    units = np.array([u for _, u in codes], dtype=np.float32)
    bits = 8.0 * context.MODEL_BYTES + sum(b for b, _ in codes)
    mean = np.subtract(grid, residual, dtype=np.float32)  # integers, exact
    return bits, mean, classes.view(np.uint8), units, weights


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
        self.coder = self.default_coder
        #: The coder's bits per estimated bit (:meth:`calibrate`).
        self.calibration = 1.0
        self.rounding = 0.0  # the schedule's share of rounded steps (:meth:`fit_tasks`)
        self._prior: tuple[bytes, arm.Network] | None = None  # coder 3's (coder_prior)

    @torch.no_grad()
    def fixed_quants(self) -> dict[str, TensorQuant]:
        """The latents' quantisers: step 1, what training rounded them to. Latents whose rate
        overshoots the plan are brought within it first by a dead zone (:meth:`_dead_zone`),
        planned in the estimate's bits over their calibration; the coder then codes them, and
        while they still cost more than planned (the calibration was measured before the last
        steps moved them), the calibration is measured again and the dead zone tried again, at
        most TRIM_TRIES times (the file lands at most 0.5% over its target on Kodak)."""
        if self.latent_bits_target is not None:
            for _ in range(TRIM_TRIES):
                self._dead_zone(self.latent_bits_target / self.calibration)
                if self.calibrate() <= self.latent_bits_target:
                    break
        return {f"latents.{level}": q for level, q in enumerate(self._latent_quants())}

    @torch.no_grad()
    def _dead_zone(self, planned: float) -> None:
        """Zero the latents whose zeroing costs least distortion per bit saved until their
        estimated bits are at most ``planned``: a latent y of grid l, channel c is zeroed when
        s y^2 < t u |y|, with s the distortion a unit of it causes (:meth:`latent_sensitivity`)
        and u the bits a unit costs where it is; t grows by DEAD_ZONE_GROWTH from where the
        first latents would go."""
        if self.measure_code() <= planned:
            return
        sensitivity = self.latent_sensitivity()
        # Zeroing y saves about u |y| bits and costs s y^2: it goes when |y| < t u / s.
        reach = [self.unit_bits(level) / sensitivity[level][:, None, None]
                 for level in range(self.levels)]
        magnitudes = [g.abs() for g in self.latents]
        t = 0.5 / max(float(r.max()) for r in reach)
        for _ in range(DEAD_ZONE_TRIES):
            t *= DEAD_ZONE_GROWTH
            kept = [torch.where(m < t * r, 0.0, torch.round(g))
                    for g, m, r in zip(self.latents, magnitudes, reach)]
            if self.latent_bits([k.numpy() for k in kept]) <= planned:
                break
        for g, m, r in zip(self.latents, magnitudes, reach):
            g.masked_fill_(m < t * r, 0.0)

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
        return entropy.ArmCoder(self.coder_prior) if coder == "arm" else coder

    @property
    def entropy_model(self) -> ArmFit:
        """Coder 3's entropy model, fitted to the latents whenever they are coded; made when
        first asked for. Not a submodule: its weights are the coder's, stored in the payload,
        not the model's tensors."""
        if "_entropy_model" not in self.__dict__:
            self.__dict__["_entropy_model"] = ArmFit()
        return self.__dict__["_entropy_model"]

    def coder_prior(self) -> arm.Network:
        """Coder 3's network for the latents as they are: the entropy model fitted further to
        them (ARM_STEPS), in the stored form that codes them in fewest bits; made once for the
        same latents."""
        quants = self._latent_quants()
        grids = [to_symbols(g, q) for g, q in zip(self.latents, quants)]
        key = b"".join(g.tobytes() for g in grids)
        if self._prior is None or self._prior[0] != key:
            self.entropy_model.fit([torch.from_numpy(g).float() for g in grids],
                                   ARM_STEPS)
            net = self.entropy_model.best_integer(grids, [q.qmax for q in quants])
            self._prior = (key, net)
        return self._prior[1]

    @property
    def estimated_coder(self) -> str:
        """The coder whose model the rate term and the controller's estimate use: coder 2's
        for coder 3 too (its fixed context model trains the latents; the learned one, fitted
        to them when they are coded, spends what :meth:`calibrate` measures)."""
        return "context" if self.coder == "arm" else self.coder

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
                + self.hard * (torch.round(grid) - grid).detach()
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
        """lambda times the latents' estimated bits per pixel: each latent's distance from the
        mean its coder predicts, times the bits a unit of it costs there (both as the latents
        were when last measured: :meth:`measure_code`)."""
        bits = sum((self.unit_bits(level) * (g - getattr(self, f"code_mean{level}")).abs()).sum()
                   for level, g in enumerate(self.latents))
        return self.rate_lambda * bits / self.pixels

    def unit_bits(self, level: int) -> torch.Tensor:
        """The bits a unit away from its mean costs, per latent of grid ``level``: its class's
        (a class a byte, as the latents were when last measured)."""
        return getattr(self, f"unit_table{level}")[getattr(self, f"code_class{level}").long()]

    @torch.no_grad()
    def latent_bits(self, grids: list[np.ndarray] | None = None) -> float:
        """The estimated code length of the rounded latents (or of these integer grids) in the
        file's coder (:func:`grid_code`)."""
        grids = [torch.round(g).numpy() for g in self.latents] if grids is None else grids
        return sum(grid_code(g, self.estimated_coder)[0] for g in grids)

    @torch.no_grad()
    def measure_code(self, refit: bool = True) -> float:
        """The rounded latents' estimated code length; the rate term's means and unit costs set
        to those of their code (the context model's weights refitted, or as last fitted)."""
        self._start_rate_term()
        total = 0.0
        for level, g in enumerate(self.latents):
            weights = None if refit else self.code_weights[level]
            bits, mean, classes, units, self.code_weights[level] = grid_code(
                torch.round(g).numpy(), self.estimated_coder, weights)
            total += bits
            getattr(self, f"code_mean{level}").copy_(torch.from_numpy(mean))
            getattr(self, f"code_class{level}").copy_(torch.from_numpy(classes))
            getattr(self, f"unit_table{level}").copy_(torch.from_numpy(units))
        return total

    @torch.no_grad()
    def calibrate(self) -> float:
        """Measure what the file's coder spends on the rounded latents against the estimate of
        :meth:`latent_bits` (the coder's container compresses runs of zeros that the per-grid
        model does not see: 9% less on kodim05), so that the plan is met in coded bits; returns
        the coded bits."""
        quants = self._latent_quants()
        symbols = [to_symbols(g, q) for g, q in zip(self.latents, quants)]
        coded = 8 * len(entropy.encode(symbols, [q.bits for q in quants],
                                       self.entropy_coder(self.coder)))
        estimate = self.latent_bits()
        if estimate > 0:
            self.calibration = min(max(coded / estimate, 0.5), 1.5)
        return coded

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
        if step in {round(f * total) // every * every for f in CALIBRATE_AT}:
            self.calibrate()
        bits = self.measure_code(refit=step % (REFIT_EVERY * every // CONTROL_EVERY) == 0)
        self.rate_lambda.fill_(self.controller.correct(bits * self.calibration, step / total,
                                                       total // every))
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

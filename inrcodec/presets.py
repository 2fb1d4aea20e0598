"""Efforts: for each model family, the training schedule and sizing that ``--effort`` selects.

Data only (no torch), so that the command line knows the families and efforts at once. A family
is known to users by its row here; its network lives in ``models/<name>.py``. Every family's
default effort encodes a Kodak image in under a minute on two CPU cores (docs/results/kodak.md),
and the steps are set per family so that an effort costs about the same time in every family.

The numbers come from measurements in docs/experiments.md:

- gridded, best: the default's training four times over, as warm restarts (each cycle from the
  best weights of the one before, at half its peak learning rate; one long cosine of 100,000
  steps went astray at depth 4); the first cycle from two starts, each cell going on from the
  better (kodim09 at 0.5 bpp +1.43 dB); the weights then rounded one tensor at a time, the rest
  training on for 9,000 steps (kodim01 / kodim07 at 0.5 bpp +0.09 / +0.29 dB); a network sized
  for 5.5 bits a weight (18% more weights) with half the overlap between cells (+0.07 / +0.06,
  then +0.09 / +0.14 dB).
- siren, best: eight cycles of the default's training, each from the best weights of those
  before at 0.75 times the peak before; the first cycle is the default's own run, so the best
  effort is the default's result or better (kodim21 at 0.5 bpp: 25.95 dB default, 27.94 in
  cycles, where one cosine of 12,000 steps gave 27.01 and one of 20,000 steps 21.60: a long run
  at the peak rate drifts away and never comes back).
- the residual and DCT best efforts are longer single cosines (see docs/models.md for where
  they fall short), kept from collapsing by the trainer's collapse guard.

Whatever the family, the best effort is never worse than the default at the same rate: the
encoder runs the default's encode too and keeps the better file (``encoder._compress``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

#: The efforts, from quickest to best.
EFFORTS = ("fast", "default", "best")
#: The family ``inr encode`` uses unless told otherwise: the latent grids since they lead on
#: Kodak (BD-rate vs JPEG, 4 rates, docs/results/kodak.md) and on held-out photos
#: (docs/experiments.md); before them the gridded SIREN.
DEFAULT_FAMILY = "latent"
#: Expected entropy-coded bits per weight when sizing a network for a budget (measured on Kodak
#: with 8-bit-range quantisers; the step search after fitting corrects the rest).
BITS_PER_WEIGHT = 6.5


@dataclass(frozen=True)
class Schedule:
    """How a model is trained: every field can be overridden per encode (``+key=value``,
    ``--hparam key=value``, ``inrcodec.encode(..., key=value)``)."""

    #: Training steps (Adam updates), over all of a model's stages.
    steps: int = 2000
    #: Samples per step, over all of a stage's networks.
    batch: int = 4096
    #: Beyond this many pixels the batch grows in proportion to the image, so that every pixel
    #: is drawn as often over a fit on a 12 MP photo as on a Kodak image (0: the same batch
    #: for any image).
    batch_pixels: int = 0
    #: Peak learning rate; the rate warms up linearly over ``warmup`` of a cycle, then follows a
    #: cosine down to ``lr * lr_floor`` (1% rather than 5%: +0.06 to +0.15 dB).
    lr: float = 1e-3
    lr_floor: float = 0.01
    warmup: float = 0.02
    #: Adam's decay rates of its first and second moments (PyTorch's defaults).
    beta1: float = 0.9
    beta2: float = 0.999
    #: ``adam``, or ``soap``: a stage's networks among other parameters (the latent family's
    #: synthesis) trained with SOAP (Adam in the eigenbasis of Shampoo's preconditioner), the
    #: rest with Adam.
    optimizer: str = "adam"
    #: Cosine cycles of equal length (warm restarts): each later cycle starts from the best
    #: weights so far with fresh Adam moments, its peak ``cycle_decay`` times the previous one's.
    cycles: int = 1
    cycle_decay: float = 0.5
    #: The first cycle is trained from this many initialisations, each network going on from its
    #: best (costs ``starts - 1`` more cycles of steps).
    starts: int = 1
    #: Steps between evaluations of the whole image; 0: eight evaluations per cycle.
    eval_every: int = 0
    #: Quantisation-aware fine-tuning through the chosen quantisers after training (off: on
    #: Kodak it gained nothing measurable at our quantiser steps, for more time than training).
    qat_steps: int = 0
    qat_lr: float = 1e-3
    #: The share of ``qat_steps`` through soft rounding of rising sharpness before the rest
    #: through rounding (0: all of them through rounding, straight-through).
    qat_soft: float = 0.0
    #: Rounding one tensor at a time after training, the tensors not yet rounded training on for
    #: an equal share of these steps at ``progressive_lr`` after each; 0: all rounded at once.
    progressive_steps: int = 0
    progressive_lr: float = 1e-4
    #: Rate-distortion-optimised rounding of the weights after training (``fit``'s
    #: ``RateDistortionRounding``; needs the sensitivities of ``allocation="sensitivity"``).
    rdo_rounding: bool = False
    #: Quantiser steps shaped by each tensor's measured sensitivity, or ``uniform``.
    allocation: str = "sensitivity"
    #: Overlapping cells' samples weighted by their blend weight (False: all weigh the same).
    window_weights: bool = True
    #: Keep each cell's best weights rather than the best whole set.
    best_per_group: bool = True
    #: The SIREN families' loss: the weight of the chroma (BT.601 Cb, Cr) part of the squared
    #: error (1: the RGB squared error, what PSNR measures), and each network's output bias
    #: started at its cell's mean colour (NIF25's output normalised around the image mean).
    chroma_weight: float = 1.0
    mean_start: bool = False
    #: The SIREN families' networks started from weights learned for their shape on a training
    #: set, where the package has them (``training/warmstart.py``); further starts of a best
    #: effort draw from the seed as before.
    warm_start: bool = False
    #: The phases of a family whose latents train with its networks (``latent``): the latents
    #: seen through uniform noise, then rounded (straight-through) for this last share of the
    #: steps; the networks at ``network_lr`` times ``lr`` throughout.
    rounding: float = 0.0
    network_lr: float = 1.0
    #: How many times its learning rate a latent family's latents may train at while lambda is
    #: at its floor and their rate still under its target (rate control's LambdaController;
    #: 1: never raised).
    growth: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("adam", "soap"):
            raise ValueError(f"optimizer must be adam or soap, not {self.optimizer!r}")
        if self.allocation not in ("sensitivity", "uniform"):
            raise ValueError(f"allocation must be sensitivity or uniform, not {self.allocation!r}")
        for name in ("steps", "batch", "cycles", "starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("eval_every", "qat_steps", "progressive_steps", "batch_pixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("lr", "qat_lr", "progressive_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not (0 <= self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ValueError("beta1 must be in [0, 1), beta2 in (0, 1)")
        if not (0 <= self.lr_floor <= 1 and 0 <= self.warmup < 1 and 0 < self.cycle_decay <= 1):
            raise ValueError("lr_floor and cycle_decay must be in (0, 1], warmup in [0, 1)")
        if not 0 <= self.rounding <= 1:
            raise ValueError("rounding must be in [0, 1]")
        if not 0 <= self.qat_soft <= 1:
            raise ValueError("qat_soft must be in [0, 1]")
        if not 0 < self.chroma_weight <= 100:
            raise ValueError("chroma_weight must be in (0, 100]")
        if not self.network_lr > 0:
            raise ValueError("network_lr must be positive")
        if not self.growth >= 1:
            raise ValueError("growth must be at least 1")

    def with_steps(self, steps: int) -> Schedule:
        """The schedule at another step count; rounding one tensor at a time keeps its share."""
        if steps < 1:
            raise ValueError("steps must be at least 1")
        progressive = round(self.progressive_steps * steps / self.steps)
        return dataclasses.replace(self, steps=steps, progressive_steps=progressive)


#: The keys of :class:`Schedule`, with their types, as an override may name them.
SCHEDULE_KEYS: Mapping[str, type] = MappingProxyType(
    {f.name: type(f.default) for f in dataclasses.fields(Schedule)})


@dataclass(frozen=True)
class Preset:
    """One family at one effort: its training schedule and how its network is sized."""

    schedule: Schedule
    #: The rate the network is sized for; lower means a bigger network with coarser quantisers.
    bits_per_weight: float = BITS_PER_WEIGHT
    #: Hyper-parameters fixed before sizing (the caller's own win).
    hparams: Mapping[str, float] = field(default_factory=dict)


#: The latent family's schedule: its latents at a learning rate of 0.1, its synthesis at 0.3
#: of it, their noise replaced by rounding for the last 20% of the steps (docs/experiments.md,
#: "The latent-grid family"); Adam's second moment over about 100 steps rather than 1,000
#: (a latent of the finest grid sees a pixel's gradient in a few steps in a hundred: +0.19 /
#: +0.17 dB at the default / fast effort), the synthesis trained with SOAP (+0.11 dB more at
#: the default effort; docs/experiments.md, "The training recipe, lever by lever"). On an image
#: larger than a Kodak image the batch grows with it (a 12 MP photo drew each pixel twice in a
#: fit and fell 2.9 dB further behind WebP than its crop), and the latents' learning rate may
#: grow 8-fold at every effort while lambda is at its floor (the fast effort's smooth crop of a
#: photo: +4.3 dB at 0.5 bpp, its Kodak files as before; docs/experiments.md, "A camera photo").
LATENT = Schedule(steps=1500, batch=16384, batch_pixels=768 * 512, lr=0.1, rounding=0.2,
                  network_lr=0.3, beta2=0.99, optimizer="soap", growth=8.0)

#: The latent family's grids through learned filters before their bilinear interpolation
#: (``upsampling=2``): +0.27 dB for 35% more time at the default effort, where 33% more steps
#: give +0.12; at the fast effort, whose steps are not compiled, the filters cost half its time
#: and give +0.35 dB where 50% more steps give +0.78, so it keeps plain bilinear grids
#: (docs/experiments.md, "Learned upsampling").
LEARNED_UPSAMPLING = {"upsampling": 2}

PRESETS: Mapping[str, Mapping[str, Preset]] = {
    "siren": {
        "fast":    Preset(Schedule(steps=300)),
        "default": Preset(Schedule(steps=1500)),
        "best":    Preset(Schedule(steps=12000, cycles=8, cycle_decay=0.75)),
    },
    "gridded": {
        "fast":    Preset(Schedule(steps=2000)),
        "default": Preset(Schedule(steps=17000)),
        "best":    Preset(Schedule(steps=68000, cycles=4, starts=2, progressive_steps=9000),
                          bits_per_weight=5.5, hparams={"overlap": 1 / 32}),
    },
    "residual": {
        "fast":    Preset(Schedule(steps=800)),
        "default": Preset(Schedule(steps=4000)),
        "best":    Preset(Schedule(steps=50000)),
    },
    "dct": {
        "fast":    Preset(Schedule(steps=1000)),
        "default": Preset(Schedule(steps=6000)),
        "best":    Preset(Schedule(steps=80000)),
    },
    "latent": {
        "fast":    Preset(LATENT.with_steps(300)),
        "default": Preset(LATENT, hparams=LEARNED_UPSAMPLING),
        "best":    Preset(LATENT.with_steps(12000), hparams=LEARNED_UPSAMPLING),
    },
}

#: The family names, in the order ``inr encode --model`` lists them (and their ids in files).
FAMILY_NAMES = tuple(PRESETS)


def preset(family: str, effort: str) -> Preset:
    """The preset of ``family`` at ``effort``; raises KeyError naming the choices."""
    if family not in PRESETS:
        raise KeyError(f"unknown model {family!r}; choose from {', '.join(PRESETS)}")
    if effort not in EFFORTS:
        raise KeyError(f"unknown effort {effort!r}; choose from {', '.join(EFFORTS)}")
    return PRESETS[family][effort]

"""Rate control: from a rate target to a model shape and the quantisers that meet it.

A rate target (bits per pixel, or ``quality`` through :func:`quality_to_bpp`) is a byte budget
for the whole file. Three steps meet it:

1. **Sizing** (:func:`size_model`): the network gets about ``budget * 8 / bits_per_weight``
   weights after the header; the family's ``hparams_for_params`` turns that count into a
   shape (its own rules: grid, depth, widths).
2. **Step search** (:func:`budget_quantiser`): after fitting, every tensor t gets a step size
   ``s * c_t`` and one multiplier s is bisected so the entropy-coded payload is the largest that
   fits. The shape c_t comes from rate-distortion theory: with squared-error sensitivity S_t
   (MSE increase per unit variance of noise added to the tensor's n_t weights), uniform
   quantisation adds ``S_t * step^2 / 12`` to the MSE and costs about ``-n_t log2 step`` bits,
   and the Lagrangian optimum is ``step_t ~ sqrt(n_t / S_t)``. Without sensitivities every
   tensor gets the same number of bits over its range (``uniform``).
3. **Final check** (:func:`fit_to_budget`): quantisation-aware fine-tuning and rounding one
   tensor at a time move weights, so the file is coarsened in small steps until it is at most
   RATE_TOLERANCE over budget.

:class:`RatePlan` ties them together for an encode.

A family that trades rate against distortion while it trains (the latent grids: loss ``D +
lambda R``) is told its budget before the fit and steered to it by a :class:`LambdaController`,
which starts from :func:`first_lambda`, the slope of a typical photograph's curve at the rate.

A quality target (``psnr``) is met by encoding at several rates: :class:`PsnrSearch` proposes
each next rate from the ones tried, and the encoder keeps the smallest file that reaches it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from . import bitstream, entropy, limits
from .color import ColorTransform
from .container import InrFile
from .encodings import Encoding
from .errors import InrInputError, RateTooLow
from .models.base import ImageModel
from .options import EncodeOptions
from .quantize import Quantiser, TensorQuant, choose, to_symbols, with_step

#: The file never exceeds its budget by more than this factor.
RATE_TOLERANCE = 1.005
#: How far (as a factor either way) sensitivity may move a tensor's step from the median.
MAX_SPREAD = 16.0


@dataclass
class RatePlan:
    """An encode's rate control: the sized model, the byte budget and, for the trainer, the
    quantiser of each stage's tensors; :meth:`finish` writes the file within the budget."""

    model: ImageModel
    budget: float
    coder: str | entropy.Coder
    bits: int | None
    quantiser: Quantiser

    @classmethod
    def make(cls, family: type[ImageModel], options: EncodeOptions, height: int, width: int,
             transform: ColorTransform, enc: Encoding) -> RatePlan:
        bpp = target_bpp(options)
        budget = bpp * height * width / 8
        hparams, bits_per_weight = options.sizing()
        schedule = options.schedule()
        samples = schedule.steps * schedule.batch / schedule.cycles
        model = size_model(family, height, width, transform, enc, hparams, budget,
                           options.seed, bits_per_weight, samples)
        coder = options.coder or family.default_coder
        largest = budget * RATE_TOLERANCE if options.bits is None \
            else model.n_params() * options.bits / 8
        check_decodable(bitstream.header_file(model, coder), largest, options.max_pixels,
                        options.max_work)
        if options.bits is not None:
            return cls(model, budget, model.entropy_coder(coder), options.bits,
                       fixed_bits(options.bits))
        header = bitstream.header_size(model)
        payload_budget = budget - header
        if payload_budget <= 16:
            least = 8 * (header + 17) / (height * width)
            raise RateTooLow(f"{bpp:g} bpp is {budget:.0f} bytes for this {width}x{height} "
                             f"image, too few for the {header}-byte header of a "
                             f"{family.name} model: it needs at least {least:.3g} bpp", least)
        payload_bpp = 8 * payload_budget / (height * width)
        model.plan_rate(payload_budget, coder,
                        LambdaController(first_lambda(payload_bpp), growth=schedule.growth))
        coder = model.entropy_coder(coder)
        return cls(model, budget, coder, None,
                   shared_budget_quantiser(payload_budget, model.n_params(), coder))

    def finish(self, quants: dict[str, TensorQuant]) -> bytes:
        """The file of the fitted model: with a bit depth, as it comes; with a rate target,
        coarsened until it fits, the model's weights then set to what the file stores."""
        write = partial(bitstream.write, self.model, coder=self.coder)
        if self.bits is not None:
            return write(quants)
        tensors = {n: p.detach() for n, p in self.model.tensors()}
        try:
            data, quants = fit_to_budget(tensors, quants, write, self.budget,
                                         self.model.kept_quantisers)
        except ValueError as exc:
            bpp = 8 * self.budget / (self.model.height * self.model.width)
            raise RateTooLow(str(exc), bpp) from None
        bitstream.round_to_stored(self.model, quants)
        return data


#: The typical photograph of :func:`first_lambda` (a Kodak image): PSNR at 0.5 bpp and dB per
#: doubling of the rate.
TYPICAL_PSNR, TYPICAL_SLOPE = 29.5, 2.0


def lambda_at(psnr_db: float, slope: float, bpp: float) -> float:
    """lambda = -dD/dR of a curve at ``bpp`` where it is at ``psnr_db`` and gains ``slope`` dB
    per doubling of the rate (D the MSE of [0, 1] colours: D = 10^(-PSNR / 10), so
    dD/dR = -D slope ln 10 / (10 R ln 2))."""
    bpp = max(bpp, 1e-3)
    return 10 ** (-psnr_db / 10) * slope * math.log(10) / (10 * bpp * math.log(2))


def first_lambda(bpp: float) -> float:
    """lambda's first guess for an encode at ``bpp``: the slope of a typical photograph's curve
    there (a Kodak image: TYPICAL_PSNR at 0.5 bpp, TYPICAL_SLOPE dB more per doubling).

    A guess from the image's own WebP curve (its PSNR and slope at the rate, six WebP encodes)
    lands within 1.3x of the lambda the controller settles on where this one is off by up to 3x,
    but the files were worse (kodim05 at 0.25 / 1.0 bpp: -0.41 / -0.40 dB; docs/experiments.md,
    "Rate control"): the latents do better growing under a low lambda first and being pruned
    by a rising one than held near their rate from the start."""
    return lambda_at(TYPICAL_PSNR + TYPICAL_SLOPE * math.log2(max(bpp, 1e-3) / 0.5),
                     TYPICAL_SLOPE, bpp)


class LambdaController:
    """Steers lambda during a fit so that the rate lands on a target: every few steps
    (:meth:`correct`), log(lambda) moves by GAIN times the log of measured / target rate (at
    most STEP), within RANGE of its first guess either way; while the rate is still growing from
    nothing (the first FROM of the steps) it is only raised.

    Under its floor, lambda no longer holds the rate back: what the latents miss then is how far
    they can move in the steps left (a smooth photo at 1 bpp stayed at 66% of its plan with
    lambda at its floor, 68% with lambda at zero). The corrections that would take lambda
    below its floor raise the latents' learning rate instead (``growth``, up to the schedule's
    ``growth`` times; 1: never), and a rate over its target takes all of it back at once.

    The gains are small because the rate answers lambda late (about a hundred steps of Adam on
    the latents) and not smoothly (latents cross a rounding threshold together): a controller
    twice as quick oscillated on kodim16 at 0.25 bpp and ended at 82% of its rate."""

    GAIN = 0.5
    STEP = 0.05
    FROM = 0.1
    RANGE = 30.0
    #: A fit with fewer corrections than this may move lambda as far in all: each correction's
    #: largest step is STEP times CORRECTIONS over their number (a fast encode's 30: 0.25).
    CORRECTIONS = 150

    def __init__(self, guess: float, target: float = 1.0, growth: float = 1.0):
        #: lambda's first guess and its present value; the rate to meet, in the family's unit
        #: (the family sets it when it plans its rate).
        self.guess, self.value, self.target = guess, guess, target
        #: The multiple of their learning rate the latents train at (1 while lambda is above
        #: its floor), and its largest.
        self.growth, self.max_growth = 1.0, growth

    def correct(self, measured: float, fraction: float, corrections: int = CORRECTIONS
                ) -> float:
        """lambda after a measurement of the rate ``fraction`` of the way through a fit of
        ``corrections`` corrections."""
        error = math.log(max(measured, 1e-9) / self.target)
        if error < 0 and fraction < self.FROM:
            return self.value  # still growing from zero: lowering lambda would only wind it
        largest = self.STEP * max(1.0, self.CORRECTIONS / max(corrections, 1))
        change = max(-largest, min(largest, self.GAIN * error))
        if self.growth > 1.0:  # lambda is at its floor: the latents' learning rate moves
            self.growth = 1.0 if error > 0 else min(self.growth / math.exp(change),
                                                    self.max_growth)
            return self.value
        floor = self.guess / self.RANGE
        value = self.value * math.exp(change)
        self.growth = min(max(1.0, floor / value), self.max_growth)
        self.value = min(max(value, floor), self.guess * self.RANGE)
        return self.value


def check_decodable(header: InrFile, largest: float, max_pixels: int | None = None,
                    max_work: float | None = None) -> None:
    """Refuse, before any training, an encode whose file (its ``header``, without payload) a
    decoder would refuse under the same limits (:mod:`.limits`): more stored values than the
    format holds, a file that may be ``largest`` bytes where the format holds fewer, or a decode
    at the image's own size above the pixel or work limit (:func:`.decoder.check_cost`'s
    measure)."""
    from .decoder import decode_cost
    h, w = header.height, header.width
    what = f"a {header.family} file of this {w}x{h} image"
    cost = decode_cost(header, w, h)
    if cost.values > limits.MAX_PARAMS:
        raise InrInputError(f"{what} would store {cost.values} values; the format holds at "
                            f"most {limits.MAX_PARAMS}: ask for a lower rate or a smaller image")
    if largest > limits.MAX_FILE_BYTES:
        raise InrInputError(f"{what} may be {largest:.0f} bytes; the format holds at most "
                            f"{limits.MAX_FILE_BYTES}: ask for a lower rate")
    if cost.pixels > limits.pixel_limit(max_pixels):
        raise InrInputError(f"{what} is {cost.pixels} pixels, more than the limit of "
                            f"{limits.pixel_limit(max_pixels)}; allow it with --max-pixels "
                            "(max_pixels=) here and when decoding")
    if cost.work > limits.work_limit(max_work):
        raise InrInputError(f"{what} would cost {cost.describe()} to decode, more than the "
                            f"decoder's limit of {limits.work_limit(max_work):.2g}; ask for a "
                            "smaller image or model, or allow it with --max-work (max_work=) "
                            "here and when decoding")


def quality_to_bpp(quality: float) -> float:
    """The bits per pixel that ``--quality Q`` asks for: 0.05 bpp at Q = 1, 2 bpp at Q = 100,
    evenly spaced in log-rate between (Q = 50 is about 0.31 bpp, Q = 75 about 0.78)."""
    if not 1 <= quality <= 100:
        raise InrInputError(f"quality must be in 1..100, not {quality}")
    return 0.05 * 40 ** ((quality - 1) / 99)


def target_bpp(options: EncodeOptions) -> float:
    """The rate an encode aims for: ``bpp``, else ``quality`` (50 if neither is given)."""
    if options.bpp is not None:
        return options.bpp
    return quality_to_bpp(50 if options.quality is None else options.quality)


#: dB per doubling of the rate that a PSNR search assumes until two fits measure it (the
#: gridded default on Kodak gains about 1.9 from 0.25 to 0.5 bpp and 2.1 from 0.5 to 1), and
#: the range a measured slope is trusted in.
PSNR_PER_DOUBLING = 2.0
SLOPE_RANGE = (0.5, 8.0)
#: Fits a PSNR search makes at most, and how close (as a ratio of rates) the smallest rate
#: that reaches the target must be to the largest that does not before it stops.
PSNR_SEARCH_FITS = 6
PSNR_SEARCH_CLOSE = 1.06
#: What a proposal aims above the target (dB), so that a fit lands on the right side of it,
#: and the excess over the target of a fit that ends the search (0.15 dB is about 5% of rate
#: at the usual slope: less than a further fit can be expected to save).
PSNR_MARGIN = 0.05
PSNR_DONE = 0.15
#: The rates a search proposes (bits per pixel), and the largest factor between a proposal and
#: the fit it extrapolates from (a slope measured far from the target is a poor guide).
SEARCH_BPP = (0.02, 16.0)
MAX_JUMP = 4.0


@dataclass
class PsnrSearch:
    """The rates to encode at for the smallest file whose PSNR reaches ``target`` dB: a secant
    search in log-rate, the slope measured by the fits nearest the target, each proposal
    kept inside the bracket of rates known to fall short and to reach it. The first guess
    goes from the gridded default's Kodak point (29.5 dB at 0.5 bpp) at the usual slope."""

    target: float
    tried: list[tuple[float, float]] = field(default_factory=list)  # (bpp, PSNR)
    #: The least rate the image can be encoded at (raised when a proposal proves too low),
    #: and the proposals that did.
    floor: float = SEARCH_BPP[0]
    too_low: int = 0

    def record(self, bpp: float, psnr: float) -> None:
        self.tried.append((bpp, psnr))

    def record_too_low(self, bpp: float, least_bpp: float) -> None:
        """``bpp`` could not be met (the image needs at least ``least_bpp``): a floor above
        both."""
        self.floor = max(self.floor, least_bpp * 1.01, bpp * 1.25)
        self.too_low += 1

    def bracket(self) -> tuple[float | None, float | None]:
        """The largest rate tried that fell short, and the smallest that reached the target."""
        short = [b for b, p in self.tried if p < self.target]
        reached = [b for b, p in self.tried if p >= self.target]
        return (max(short) if short else None), (min(reached) if reached else None)

    def slope(self) -> float:
        """dB per doubling between the two fits nearest the target (if they rise with the
        rate), else the usual one."""
        near = sorted(self.tried, key=lambda t: abs(t[1] - self.target))[:2]
        if len(near) == 2 and near[0][0] != near[1][0]:
            (b1, p1), (b2, p2) = near
            measured = (p2 - p1) / math.log2(b2 / b1)
            if measured > 0:
                return min(max(measured, SLOPE_RANGE[0]), SLOPE_RANGE[1])
        return PSNR_PER_DOUBLING

    def propose(self) -> float | None:
        """The next rate to encode at; None when the search is done."""
        lo, hi = self.bracket()
        fits = len(self.tried) + self.too_low
        if fits >= PSNR_SEARCH_FITS or (lo and hi and hi / lo <= PSNR_SEARCH_CLOSE):
            return None
        if any(self.target <= p < self.target + PSNR_DONE for _, p in self.tried):
            return None
        if self.tried:
            bpp, psnr = min(self.tried, key=lambda t: abs(t[1] - self.target))
        else:
            bpp, psnr = 0.5, 29.5  # the gridded default's Kodak point, a start
        guess = bpp * 2 ** ((self.target + PSNR_MARGIN - psnr) / self.slope())
        guess = min(max(guess, bpp / MAX_JUMP), bpp * MAX_JUMP)
        # At least one step of PSNR_SEARCH_CLOSE from the bracket's ends, so that every fit
        # narrows it; the middle when the bracket is too narrow for that.
        floor = max(lo * PSNR_SEARCH_CLOSE if lo is not None else 0.0, self.floor)
        ceiling = hi / PSNR_SEARCH_CLOSE if hi is not None else SEARCH_BPP[1]
        if floor > ceiling:
            return math.sqrt(lo * hi) if lo is not None and hi is not None else None
        guess = min(max(guess, floor), ceiling)
        if any(math.isclose(guess, b) for b, _ in self.tried):
            return None  # against a bound of the search already tried
        return guess


def size_model(family: type[ImageModel], height: int, width: int, transform: ColorTransform,
               enc: Encoding, hparams: dict, budget: float, seed: int,
               bits_per_weight: float, samples: float) -> ImageModel:
    """The network to fit: ``hparams`` as given, the rest sized so the weights fill ``budget``
    bytes at about ``bits_per_weight`` bits each after the header (whose size depends only on the
    number of tensors, so one correction settles it), for a fit that draws ``samples``
    in each cosine cycle."""
    header = 64
    for _ in range(2):
        chosen = dict(hparams)
        if set(family.schema.names()) - set(chosen):
            n_weights = int(max(0.0, budget - header) * 8 / bits_per_weight)
            chosen = family.hparams_for_params(n_weights, height, width, transform.channels,
                                               enc.out_dim, samples=samples, **hparams)
        try:
            net = family(height, width, transform, chosen, enc,
                         generator=torch.Generator().manual_seed(seed))
        except ValueError as exc:
            raise InrInputError(f"bad {family.name} hyper-parameters: {exc}") from None
        actual = bitstream.header_size(net)
        if actual <= header:
            break
        header = actual
    return net


def step_shape(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None
               ) -> dict[str, float]:
    """Relative step sizes c_t: sqrt(n_t / S_t) with sensitivities, else the 8-bit range steps."""
    uniform = {n: choose(t, 8).step for n, t in tensors.items()}
    if not sensitivity:
        return uniform
    shape = {n: math.sqrt(t.numel() / max(sensitivity[n], 1e-30)) for n, t in tensors.items()}
    # Scale so the median tensor keeps its 8-bit step (the step search then starts near the
    # answer), and keep every tensor within MAX_SPREAD of that: the high-rate model behind
    # sqrt(n/S) fails for tensors whose noise barely registers.
    ratios = {n: shape[n] / uniform[n] for n in tensors}
    middle = statistics.median(ratios.values())
    return {n: uniform[n] * min(max(ratios[n] / middle, 1 / MAX_SPREAD), MAX_SPREAD)
            for n in tensors}


def payload_size(tensors: dict[str, torch.Tensor], quants: dict[str, TensorQuant],
                 coder: str | entropy.Coder = entropy.DEFAULT_CODER) -> int:
    symbols = [to_symbols(t, quants[n]) for n, t in tensors.items()]
    return len(entropy.encode(symbols, [quants[n].bits for n in tensors], coder))


#: Tensors whose quantisers are fixed already: {stored name: (tensor, quantiser)}.
Fixed = dict[str, tuple[torch.Tensor, TensorQuant]]


def budget_quantiser(budget_bytes: float, coder: str | entropy.Coder = entropy.DEFAULT_CODER
                     ) -> Quantiser:
    """The quantisers, shaped by ``step_shape``, whose payload (with the ``fixed`` tensors', if
    any) is the largest within budget."""

    def choose_quants(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None,
                      fixed: Fixed | None = None) -> dict[str, TensorQuant]:
        fixed = fixed or {}
        shape = step_shape(tensors, sensitivity)
        everything = {**tensors, **{n: t for n, (t, _) in fixed.items()}}
        fixed_quants = {n: q for n, (_, q) in fixed.items()}

        def attempt(log_s: float) -> tuple[dict[str, TensorQuant], int]:
            quants = {n: with_step(t, shape[n] * math.exp(log_s)) for n, t in tensors.items()}
            return quants, payload_size(tensors, quants, coder) + fixed_cost

        lo, hi = math.log(1 / 256), math.log(256)
        # The fixed tensors (a latent family's grids: a million values) are coded once: each
        # attempt adds their cost, measured as what they add to the coarsest attempt's payload.
        fixed_cost = 0
        if fixed:
            coarsest = attempt(hi)[0]
            fixed_cost = (payload_size(everything, {**coarsest, **fixed_quants}, coder)
                          - payload_size(tensors, coarsest, coder))
        best = attempt(hi)[0]
        for _ in range(18):
            mid = 0.5 * (lo + hi)
            quants, size = attempt(mid)
            if size <= budget_bytes:
                best, hi = quants, mid
            else:
                lo = mid
        return best

    return choose_quants


def fixed_bits(bits: int) -> Quantiser:
    """Every tensor quantised to ``bits`` bits over its full range (fixed ones as they are)."""
    return lambda tensors, sensitivity=None, fixed=None: {n: choose(t, bits)
                                                          for n, t in tensors.items()}


def shared_budget_quantiser(payload_budget: float, total: int, coder: str | entropy.Coder
                            ) -> Quantiser:
    """A budget quantiser for one stage of a model of ``total`` weights: the stage's tensors
    (its fixed ones included) get the payload budget in proportion to their share of the
    weights."""

    def quantiser(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None,
                  fixed: Fixed | None = None) -> dict[str, TensorQuant]:
        stage = list(tensors.values()) + [t for t, _ in (fixed or {}).values()]
        share = sum(t.numel() for t in stage) / total
        return budget_quantiser(payload_budget * share, coder)(tensors, sensitivity, fixed)

    return quantiser


def fit_to_budget(tensors: dict[str, torch.Tensor], quants: dict[str, TensorQuant],
                  serialise: Callable[[dict[str, TensorQuant]], bytes], budget: float,
                  kept: frozenset[str] = frozenset()) -> tuple[bytes, dict[str, TensorQuant]]:
    """Coarsen the quantisers together, 3% at a time, until the file is within tolerance: all
    but ``kept`` (a latent family's integer grids), or all if that leaves none."""
    data = serialise(quants)
    coarsened = [n for n in quants if n not in kept] or list(quants)
    factor = 1.0
    while len(data) > budget * RATE_TOLERANCE:
        factor *= 1.03
        if factor > 1e4:
            raise ValueError("cannot meet the rate target with this model")
        quants = {**quants, **{n: with_step(tensors[n], quants[n].step * 1.03)
                               for n in coarsened}}
        data = serialise(quants)
    return data, quants

"""Pipeline stage 2: fitting a model to an image, as a sequence of explicit phases.

A model family's encode side yields one or more :class:`~.training.FitTask` stages (the residual family: its
base network, then its residual networks). Each stage goes through these phases, each a small
object, in order:

1. :class:`Training`: Adam (SOAP for a stage's networks, if the schedule says so) on random
   batches for the stage's share of ``Schedule.steps``, in float, under a learning rate that
   warms up linearly and then follows a cosine down to ``lr * lr_floor``, once or in
   ``cycles`` (warm restarts from the best weights so far), the first cycle from ``starts``
   initialisations. The whole image is evaluated every
   ``eval_every`` steps and the best weights are kept (each group's best, for a stage of
   independent networks such as the gridded family's cells).
2. Quantisers: each tensor's sensitivity is probed (:func:`measure_sensitivity`) and the
   caller's quantiser (rate control's step search) picks each tensor's step.
3. :class:`QuantisedFineTuning` (``qat_steps``): training on through the quantisers, keeping
   the best.
4. :class:`ProgressiveRounding` (``progressive_steps``): the tensors rounded one at a time, the
   ones not yet rounded training on after each.
5. Rounding: every tensor is set to exactly the values the decoder will rebuild, so the next
   stage (the residual family's) fits what the *decoded* earlier stage misses.

Every phase trains with one engine, :class:`SegmentTrainer`: a list of :class:`Segment` (each a
warm-up and cosine, starting from the current, fresh or best weights) run by one
:class:`AdamStep`, with :class:`BestWeights` kept along the way.

Training counts steps, never seconds: the same image, schedule and seed give the same weights.
Batches are drawn on the CPU (so both devices see the same batches) and moved to the model's
device, which may be a GPU. The step (forward, backward and Adam update) is compiled with
``torch.compile`` when a phase is long enough for the compilation to pay for itself.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch.func import functional_call, grad_and_value

from .metrics import psnr_of_mse
from .parallel import freed_memory_kept
from .models.base import ImageModel
from .training.base import COLLAPSE_RATIO, FitTask
from .presets import Schedule
from .entropy import magnitude_bits
from .quantize import Quantiser, TensorQuant, choose, fake_quantize

#: Phases with at least this many steps are compiled (measured: compiling costs 3-10 s here,
#: about 20 s in a fresh process), and phases whose steps times trained values reach
#: COMPILE_MIN_WORK: on a large image an eager step costs about 9 ns a value more than a
#: compiled one (0.30 against 0.15 s for a 6 MP latent fit's 17 M values), so compiling pays
#: from about 2e9 value-steps (the fast effort's 300 steps from about 3 MP), and the compiled
#: step keeps fewer of the latents' temporaries (3 MP, fast: a peak of 1,230 against 1,319 MiB).
COMPILE_MIN_STEPS = 1500
COMPILE_MIN_WORK = 2e9
#: Steps between progress reports (evaluations report too): every step, so that a bar's clock
#: and the time left move on large images too (a step of a 12 MP latent fit takes 0.6 s); a
#: report is a function call, and the command line redraws at most twice a second.
PROGRESS_EVERY = 1
#: Adam's epsilon (PyTorch's default; its moment decay rates are the schedule's).
ADAM_EPS = 1e-8
#: SOAP's moment decay rates and how often (steps) it renews its eigenbases, for a stage's
#: networks under ``Schedule.optimizer = "soap"`` (pytorch-optimizer's SOAP, no weight decay).
SOAP_BETAS = (0.9, 0.95)
SOAP_EVERY = 10
#: Graphs torch.compile may keep per function: one per model shape and quantiser set, and a
#: batch encode or a benchmark worker fits many (Dynamo's default of eight is then an error,
#: the step being compiled with ``fullgraph=True``).
RECOMPILE_LIMIT = 256
#: The sharpness of soft rounding at the start and the end of quantisation-aware training's soft
#: share (``Schedule.qat_soft``; :func:`~inrcodec.quantize.soft_round`): nearly the identity
#: at first (a slope of 1.08 at the midpoints), nearly rounding at last.
SOFT_SHARPNESS = (1.0, 16.0)
#: Noise draws per tensor when probing sensitivity, and the pixels each probe renders.
PROBES = 1
PROBE_PIXELS = 1 << 16
#: Rate-distortion-optimised rounding (``Schedule.rdo_rounding``): at most this many passes,
#: each moving at most a share of the weights (those that promise most: RDO_SHARE at first, a
#: quarter of it after each pass that does not pay), its gradient from RDO_SAMPLES samples.
RDO_PASSES = 12
RDO_SHARE = 0.005
RDO_SAMPLES = 1 << 18

#: Steps over which the collapse guard averages the training loss (the rise of that mean over
#: the lowest one so far that it takes for a collapse is ``FitTask.collapse_ratio``, by default
#: 6 dB): a network trained long at a high learning rate can diverge, and an evaluation an
#: eighth of a run later is too late (the DCT head's best effort lost 12 dB on kodim12 and
#: kodim20 that way; its smooth weight growth on other images, which no loss spike announces,
#: it does not catch).
GUARD_WINDOW = 25

#: Receives (steps done in this phase, best PSNR so far or None).
PhaseProgress = Callable[[int, float | None], None]


@dataclass
class Progress:
    """What a progress callback receives: the stage, the step so far of ``total``, the PSNR
    (dB) of the training's last evaluation (of the network before its weights are quantised;
    None before the first), and the encoder's estimate of the seconds the encode has left
    (``eta``, :class:`~inrcodec.pace.Pace`; None where nobody estimated it)."""

    stage: str
    step: int
    total: int
    psnr: float | None
    eta: float | None = None


@dataclass
class StageReport:
    name: str
    steps: int
    qat_steps: int
    psnr: float
    psnr_quantised: float
    seconds: float
    collapses: int = 0  # of the training, each undone (see CollapseGuard)


@dataclass
class FitReport:
    stages: list[StageReport] = field(default_factory=list)
    quants: dict[str, TensorQuant] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def learning_rate(step: int, total: int, schedule: Schedule, peak: float) -> float:
    """Linear warm-up over ``warmup`` of the ``total`` steps, then a cosine to the floor."""
    warm = max(1, int(schedule.warmup * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    floor = peak * schedule.lr_floor
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _prepare_dynamo() -> None:
    import torch._dynamo
    logging.getLogger("torch._logging._internal").setLevel(logging.ERROR)
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)


class AdamStep:
    """One training step of a stage's module, as one function: assemble the batch from the
    stage's random draws, compute the loss and its gradient (``torch.func``), and update the
    weights with Adam (written out here, so that the whole step traces as one graph). Compiled,
    it is one call per step with no Python in between, which matters on a CPU where a step of
    small networks is mostly overhead.

    ``quants``: the forward pass sees the weights through these quantisers (straight-through
    gradient; with ``soft``, softly rounded at the sharpness in ``self.sharpness``, which the
    caller sets before each step); ``frozen``: parameters that are not updated. Under the schedule's ``soap`` the
    stage's networks (``FitTask.networks``) leave the step as gradients and SOAP updates them
    after it (:class:`NetworkSoap`).
    """

    def __init__(self, task: FitTask, schedule: Schedule, compile: bool,
                 quants: dict[str, TensorQuant] | None = None,
                 frozen: frozenset[str] = frozenset(), soft: bool = False):
        module = task.module
        named = list(module.named_parameters())
        names = [n for n, _ in named]
        params = [p.detach() for _, p in named]  # the module's own storage
        self.device = params[0].device
        self.sharpness = torch.ones((), device=self.device)
        first = [torch.zeros_like(p) for p in params]
        second = [torch.zeros_like(p) for p in params]
        count = torch.zeros((), device=self.device)
        self.state = first + second + [count]
        data = {k: v.to(self.device) for k, v in task.data.items()}
        drop_weights = task.weighted and not schedule.window_weights
        scales = task.lr_scales
        beta1, beta2, eps = schedule.beta1, schedule.beta2, ADAM_EPS
        apart = task.networks - frozen if schedule.optimizer == "soap" else frozenset()
        self.soap = NetworkSoap([(n, p) for n, p in zip(names, params) if n in apart], scales) \
            if apart else None

        def loss_of(weights: list[torch.Tensor], draws: torch.Tensor, sharpness: torch.Tensor
                    ) -> torch.Tensor:
            x, y = task.assemble(data, draws)
            if drop_weights:
                y = y[..., :-1]
            if quants is not None:
                weights = [fake_quantize(w, quants[n], sharpness if soft else None)
                           for n, w in zip(names, weights)]
            return task.loss(functional_call(module, dict(zip(names, weights)), (x,)), y)

        def step(draws: torch.Tensor, lr: torch.Tensor, sharpness: torch.Tensor
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
            grads, loss = grad_and_value(loss_of)(params, draws, sharpness)
            count.add_(1)
            correction1 = 1 - beta1 ** count
            correction2 = 1 - beta2 ** count
            for n, p, g, m, v in zip(names, params, grads, first, second):
                if n in frozen or n in apart:
                    continue
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                rate = lr * scales[n] if n in scales else lr
                p.sub_(rate * (m / correction1) / ((v / correction2).sqrt() + eps))
            return loss, [g for n, g in zip(names, grads) if n in apart]

        if compile:
            _prepare_dynamo()
            step = torch.compile(step, fullgraph=True)
        self.step = step

    def __call__(self, draws: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        loss, network_grads = self.step(draws, lr, self.sharpness)
        if self.soap is not None:
            self.soap.step(network_grads, lr)
        return loss

    @property
    def count(self) -> int:
        """Adam's step count since the last reset."""
        return int(self.state[-1].item())

    @torch.no_grad()
    def reset(self) -> None:
        """Adam's moments and step count back to zero (and SOAP's state)."""
        for t in self.state:
            t.zero_()
        if self.soap is not None:
            self.soap.reset()


class NetworkSoap:
    """SOAP (Vyas et al. 2024; pytorch-optimizer's) for a stage's networks, stepped after the
    compiled step from the gradients it returns, at the step's learning rate times each
    parameter's scale (a number: ``FitTask.lr_scales``)."""

    def __init__(self, named: list[tuple[str, torch.Tensor]],
                 scales: dict[str, float | torch.Tensor]):
        self.params = [p for _, p in named]
        self.scales = [float(scales.get(n, 1.0)) for n, _ in named]
        self.reset()

    def reset(self) -> None:
        from pytorch_optimizer import SOAP
        groups = [{"params": [p], "scale": s} for p, s in zip(self.params, self.scales)]
        self.optimizer = SOAP(groups, lr=1.0, betas=SOAP_BETAS, weight_decay=0.0,
                              precondition_frequency=SOAP_EVERY)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr: torch.Tensor) -> None:
        rate = float(lr)
        for group, p, g in zip(self.optimizer.param_groups, self.params, grads):
            group["lr"] = rate * group["scale"]
            p.grad = g
        self.optimizer.step()
        for p in self.params:
            p.grad = None


class BestWeights:
    """The best weights seen so far: the whole set with the lowest MSE or, given each group's
    MSE (a stage of independent networks), each group's best (a NaN group takes the latest)."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], mse: float,
                 groups: torch.Tensor | None):
        self.params = [p for _, p in named]
        self.mse, self.groups = mse, groups
        self.weights = [p.detach().clone() for p in self.params]

    def offer(self, mse: float, groups: torch.Tensor | None) -> None:
        if groups is not None:
            better = ~(groups >= self.groups)
            for b, p in zip(self.weights, self.params):
                b[better] = p.detach()[better]
            self.groups = torch.where(better, groups, self.groups)
            self.mse = min(self.mse, mse)  # for progress; the set is measured when restored
        elif mse < self.mse:
            self.mse = mse
            self.weights = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        for p, b in zip(self.params, self.weights):
            p.copy_(b)


class CollapseGuard:
    """Watches the training loss, a window of ``GUARD_WINDOW`` steps at a time, and keeps the
    weights at the end of the window with the lowest mean loss so far. A window whose mean is
    ``ratio`` times that lowest (or not a number) is a collapse: those weights are put
    back and the rest of the segment runs at half the learning rate (halved again at each
    further collapse). A step only keeps its loss tensor; the window's are read together, so
    the guard adds no tensor operation to a step."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]],
                 ratio: float = COLLAPSE_RATIO):
        self.params = [p for _, p in named]
        self.weights = [p.detach().clone() for p in self.params]
        self.ratio = ratio
        self.lowest = math.inf
        self.losses: list[torch.Tensor] = []
        self.scale = 1.0  # of the learning rate, for the rest of the segment
        self.collapses = 0

    def begin_segment(self) -> None:
        """A segment starts from other weights (fresh, best): the loss history starts again."""
        self.lowest, self.losses, self.scale = math.inf, [], 1.0

    def watch(self, loss: torch.Tensor) -> bool:
        """Count one step's loss; True when the weights were just put back after a collapse."""
        self.losses.append(loss)
        if len(self.losses) < GUARD_WINDOW:
            return False
        return self._end_window()

    @torch.no_grad()
    def _end_window(self) -> bool:
        mean = float(torch.stack(self.losses).double().mean())
        self.losses = []
        if mean < self.lowest:
            self.lowest = mean
            for w, p in zip(self.weights, self.params):
                w.copy_(p)
            return False
        if mean <= self.ratio * self.lowest:
            return False
        for w, p in zip(self.weights, self.params):
            p.copy_(w)
        self.scale *= 0.5
        self.collapses += 1
        return True


@dataclass(frozen=True)
class Segment:
    """A run of steps under one warm-up and cosine, from the weights as they are, from fresh
    initial weights, or from the best weights so far (Adam's state reset for the last two);
    through soft rounding, its sharpness rising geometrically from the first of ``sharpness``
    to the second over the segment."""

    steps: int
    peak_lr: float
    start: Literal["current", "fresh", "best"] = "current"
    sharpness: tuple[float, float] | None = None


class SegmentTrainer:
    """Trains a stage's module through a list of segments with one step function, evaluating
    the image as the stage uses it (through ``quants``, when given) and keeping the best."""

    def __init__(self, task: FitTask, schedule: Schedule, generator: torch.Generator,
                 step: AdamStep, quants: dict[str, TensorQuant] | None = None,
                 progress: PhaseProgress | None = None):
        self.task, self.schedule, self.generator = task, schedule, generator
        self.step, self.quants = step, quants
        self.progress = progress or (lambda step, psnr: None)
        self.named = list(task.module.named_parameters())
        if task.evaluate_groups is not None and any(p.shape[0] != task.groups
                                                    for _, p in self.named):
            raise ValueError("per-group evaluation needs every parameter's first dimension "
                             "to be the group")
        batch = schedule.batch * task.batch_factor
        if schedule.batch_pixels:
            batch *= max(1.0, task.samples * task.groups / schedule.batch_pixels)
        per_group = round(batch / task.groups)
        self.batch = max(1, min(max(16, per_group), task.samples))
        self.lr = torch.tensor(0.0, device=step.device)
        self.first_step_seconds = self.eval_seconds = self.loop_seconds = 0.0

    def _measure(self, measure: Callable):
        """``measure()`` of the weights as the stage uses them (quantised, when it does)."""
        if self.quants is None:
            return measure()
        with torch.no_grad():
            saved = [p.detach().clone() for _, p in self.named]
            for n, p in self.named:
                p.copy_(fake_quantize(p, self.quants[n]))
            result = measure()
            for (_, p), s in zip(self.named, saved):
                p.copy_(s)
        return result

    def evaluate(self) -> float:
        return self._measure(self.task.evaluate)

    def assess(self) -> tuple[float, torch.Tensor | None]:
        """The whole image's MSE and, for a stage of independent groups, each group's."""
        if self.task.evaluate_groups is None or not self.schedule.best_per_group:
            return self.evaluate(), None
        return self._measure(self.task.evaluate_groups)

    @torch.no_grad()
    def _begin(self, segment: Segment, best: BestWeights) -> None:
        if segment.start == "current":
            return
        if segment.start == "fresh":
            self.task.initialise(self.generator)
        else:
            best.restore()
        self.step.reset()

    def run(self, segments: list[Segment]) -> float:
        """Train through ``segments``; leave the best weights in place; return their MSE.
        The image is evaluated every ``eval_every`` steps of a segment (by default an eighth of
        the first segment) and at the end of each."""
        best = BestWeights(self.named, *self.assess())
        guard = self.guard = CollapseGuard(self.named, self.task.collapse_ratio)
        every = self.schedule.eval_every or max(1, math.ceil(segments[0].steps / 8))
        shown = best.mse
        loop_start = time.perf_counter()
        i = 0
        for segment in segments:
            if i > 0:
                self._begin(segment, best)
                if segment.start != "current":
                    guard.begin_segment()
            for within in range(segment.steps):
                self.lr.fill_(guard.scale * learning_rate(within, segment.steps, self.schedule,
                                                          segment.peak_lr))
                if segment.sharpness is not None:
                    first, last = segment.sharpness
                    self.step.sharpness.fill_(
                        first * (last / first) ** (within / max(1, segment.steps - 1)))
                draws = self.task.draw(self.generator, self.batch)
                draws = draws.to(self.step.device, non_blocking=True)
                if i == 0:
                    start = time.perf_counter()
                    loss = self.step(draws, self.lr)  # compiles, when compiling
                    self.first_step_seconds = time.perf_counter() - start
                else:
                    loss = self.step(draws, self.lr)
                if guard.watch(loss):
                    self.step.reset()  # Adam's moments belong to the collapsed weights
                if self.task.control is not None:
                    self.task.control(within + 1, segment.steps)
                i += 1
                if (within + 1) % every == 0 or within + 1 == segment.steps:
                    start = time.perf_counter()
                    latest = self.assess()
                    best.offer(*latest)
                    self.eval_seconds += time.perf_counter() - start
                    # A stage that keeps its last weights shows their PSNR, not the best seen.
                    shown = best.mse if self.task.keep_best else latest[0]
                    self.progress(i, psnr_of_mse(shown))
                elif i % PROGRESS_EVERY == 0:
                    self.progress(i, psnr_of_mse(shown))
        self.loop_seconds = time.perf_counter() - loop_start - self.first_step_seconds
        if not self.task.keep_best:
            return self.evaluate()
        best.restore()
        return best.mse if best.groups is None else self.evaluate()


def compiles(compile: bool | None, steps: int, values: int = 0) -> bool:
    """Whether a phase of ``steps`` steps of a module of ``values`` trained values compiles its
    step (``compile``: the caller's say)."""
    if compile is not None:
        return compile
    return steps >= COMPILE_MIN_STEPS or steps * values >= COMPILE_MIN_WORK


@dataclass
class Stage:
    """What the phases of one stage share: the task, the schedule, the random generator (one
    for the whole fit), whether to compile, and progress reporting."""

    task: FitTask
    schedule: Schedule
    generator: torch.Generator
    compile: bool | None
    progress: Callable[[str], PhaseProgress] = lambda label: None  # label -> phase callback

    def trainer(self, steps: int, progress: PhaseProgress | None,
                quants: dict[str, TensorQuant] | None = None,
                frozen: frozenset[str] = frozenset(), soft: bool = False) -> SegmentTrainer:
        """The engine for a phase of ``steps`` steps (compiled when that pays)."""
        values = sum(p.numel() for p in self.task.module.parameters())
        step = AdamStep(self.task, self.schedule, compiles(self.compile, steps, values), quants,
                        frozen, soft)
        return SegmentTrainer(self.task, self.schedule, self.generator, step, quants, progress)


class Training:
    """Phase 1: the stage's share of the steps in float, in cosine cycles (warm restarts from
    the best weights, each at ``cycle_decay`` times the peak of the one before), the first
    cycle from ``starts`` initialisations (where the stage can draw fresh weights)."""

    def __init__(self, schedule: Schedule, task: FitTask):
        self.steps = max(1, round(schedule.steps * task.share))
        self.collapses = 0  # of the last run
        cycles = max(1, min(schedule.cycles, self.steps))
        length = math.ceil(self.steps / cycles)
        starts = max(1, schedule.starts) if task.initialise is not None else 1
        self.segments = [Segment(length, schedule.lr, "current" if s == 0 else "fresh")
                         for s in range(starts)]
        for cycle in range(1, cycles):
            steps = min(length, self.steps - cycle * length)
            if steps > 0:
                self.segments.append(Segment(steps, schedule.lr * schedule.cycle_decay ** cycle,
                                             "best"))

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.segments)

    def run(self, stage: Stage) -> float:
        trainer = stage.trainer(self.steps, stage.progress(stage.task.name))
        mse = trainer.run(self.segments)
        self.collapses = trainer.guard.collapses
        return mse


class QuantisedFineTuning:
    """Phase 3: ``qat_steps`` (the stage's share) through the quantisers: the schedule's
    ``qat_soft`` share of them in one cosine through soft rounding whose sharpness rises over it
    (SOFT_SHARPNESS), then the rest in another through rounding (straight-through); each keeps
    the best weights as rounded."""

    def __init__(self, schedule: Schedule, task: FitTask):
        self.steps = round(schedule.qat_steps * task.share)
        self.soft = round(self.steps * schedule.qat_soft)

    def run(self, stage: Stage, quants: dict[str, TensorQuant]) -> float | None:
        if not self.steps:
            return None
        progress = stage.progress(f"{stage.task.name} (quantised)")
        mse = None
        if self.soft:
            trainer = stage.trainer(self.soft, progress, quants, soft=True)
            mse = trainer.run([Segment(self.soft, stage.schedule.qat_lr,
                                       sharpness=SOFT_SHARPNESS)])
        hard = self.steps - self.soft
        if hard:
            later = None if progress is None else lambda s, v: progress(self.soft + s, v)
            trainer = stage.trainer(hard, later, quants)
            mse = trainer.run([Segment(hard, stage.schedule.qat_lr)])
        return mse


class ProgressiveRounding:
    """Phase 4: round the stage's tensors one at a time (in parameter order), training those
    not yet rounded for an equal share of ``progressive_steps`` after each."""

    def __init__(self, schedule: Schedule, task: FitTask):
        total = round(schedule.progressive_steps * task.share)
        rounds = len(list(task.module.parameters())) - 1
        # One tensor, or too few steps for a round each: every tensor rounded at once.
        self.steps = total if 1 <= rounds <= total else 0
        self.rounds = rounds

    def run(self, stage: Stage, quants: dict[str, TensorQuant]) -> None:
        if not self.steps:
            return
        named = list(stage.task.module.named_parameters())
        progress = stage.progress(f"{stage.task.name} (rounding)")
        frozen: set[str] = set()
        for i, (name, p) in enumerate(named[:-1]):
            with torch.no_grad():
                p.copy_(fake_quantize(p, quants[name]))
            frozen.add(name)
            before = i * self.steps // self.rounds
            steps = (i + 1) * self.steps // self.rounds - before
            trainer = stage.trainer(steps, lambda s, v, before=before: progress(before + s, v),
                                    frozen=frozenset(frozen))
            trainer.run([Segment(steps, stage.schedule.progressive_lr)])


class RateDistortionRounding:
    """Phase 5 (``rdo_rounding``), AdaRound's idea in a few greedy passes: each weight is stored
    as one of the two symbols around its trained value, not necessarily the nearer one. Each pass
    takes the loss's gradient g at the weights as rounded and, for every weight, the change of
    moving its symbol to the other side of its trained value: distortion ``g d + h d^2`` (d the
    move, h its tensor's measured sensitivity per weight) plus lambda times the bits it adds
    in the coder's model (:func:`~inrcodec.entropy.magnitude_bits` a unit of magnitude; lambda
    ``h s^2 ln 2 / 6``, the slope of a uniform quantiser of step s at high rate, so that a
    tensor's moves trade rate at the price its step trades it). The moves of most gain (a
    share of the weights, RDO_SHARE at first) are made; a pass that leaves the measured
    distortion plus the rate's price higher is undone, and the share of those after it
    quartered (the moves interact: together they may lose what each gains alone). The weights
    are left as stored."""

    def __init__(self, schedule: Schedule, task: FitTask):
        self.on = schedule.rdo_rounding

    @staticmethod
    def price(quant: TensorQuant, sensitivity: float, count: int) -> float:
        """Lambda of a tensor of ``count`` weights: the distortion one of its bits is worth."""
        return sensitivity / count * quant.step ** 2 * math.log(2) / 6

    def run(self, stage: Stage, quants: dict[str, TensorQuant],
            sensitivity: dict[str, float] | None) -> None:
        if not self.on or not sensitivity:
            return
        task = stage.task
        named = [(n, p) for n, p in task.module.named_parameters() if n in sensitivity]
        trained = {n: p.detach().clone() for n, p in named}
        steps = {n: quants[n].step for n, _ in named}
        with torch.no_grad():
            symbols = {n: torch.clamp(torch.round(p / steps[n]), -quants[n].qmax, quants[n].qmax)
                       for n, p in named}
        curvature = {n: sensitivity[n] / p.numel() for n, p in named}
        price = {n: self.price(quants[n], sensitivity[n], p.numel()) for n, p in named}
        cost = {n: magnitude_bits(symbols[n].cpu().numpy()) for n, _ in named}

        def place() -> None:
            with torch.no_grad():
                for n, p in named:
                    p.copy_(symbols[n] * steps[n])

        def rate_price() -> float:
            return sum(price[n] * cost[n] * float(symbols[n].abs().sum()) for n, _ in named)

        place()
        score = task.evaluate() + rate_price()
        device = named[0][1].device
        data = {k: v.to(device) for k, v in task.data.items()}
        samples = min(RDO_SAMPLES, task.samples * task.groups)
        total = sum(p.numel() for _, p in named)
        share = RDO_SHARE
        for _ in range(RDO_PASSES):
            x, y = task.assemble(data, task.draw(stage.generator, samples).to(device))
            if task.weighted and not stage.schedule.window_weights:
                y = y[..., :-1]
            task.module.zero_grad(set_to_none=True)
            task.loss(task.module(x), y).backward()
            moves, gains = {}, []
            for n, p in named:
                q = symbols[n]
                other = torch.clamp(q + torch.sign(trained[n] / steps[n] - q),
                                    -quants[n].qmax, quants[n].qmax)
                d = (other - q) * steps[n]
                change = p.grad * d + curvature[n] * d * d \
                    + price[n] * cost[n] * (other.abs() - q.abs())
                moves[n] = other
                gains.append(-change.flatten())
            gains = torch.cat(gains)
            taken = min(max(1, int(total * share)), int((gains > 0).sum()))
            if taken == 0:
                break
            threshold = torch.topk(gains, taken).values[-1]
            before = {n: q.clone() for n, q in symbols.items()}
            for (n, p), gain in zip(named, torch.split(gains, [p.numel() for _, p in named])):
                chosen = (gain >= threshold).view_as(p)
                symbols[n] = torch.where(chosen, moves[n], symbols[n])
            place()
            latest = task.evaluate() + rate_price()
            if latest < score:
                score = latest
            else:  # the moves together did not do what each promised alone: fewer of them
                symbols = before
                place()
                if taken == 1:
                    break
                share /= 4
        task.module.zero_grad(set_to_none=True)


@torch.no_grad()
def measure_sensitivity(task: FitTask, seed: int, skip: frozenset[str] = frozenset()
                        ) -> dict[str, float]:
    """Per tensor of the stage (but ``skip``): the MSE increase per unit variance of uniform
    noise added to its weights (noise about the size of 6-bit quantisation), averaged over
    PROBES draws."""
    generator = torch.Generator().manual_seed(seed)
    base = task.evaluate(PROBE_PIXELS)
    out = {}
    for name, p in task.module.named_parameters():
        if name in skip:
            continue
        amplitude = 2.0 * choose(p, 8).step
        saved = p.detach().clone()
        increase = 0.0
        for _ in range(PROBES):
            noise = (torch.rand(p.shape, generator=generator) * 2 - 1) * amplitude
            p.add_(noise.to(p.device))
            increase += task.evaluate(PROBE_PIXELS) - base
            p.copy_(saved)
        out[name] = max(increase / PROBES, 1e-12) / (amplitude ** 2 / 3)
    return out


def eight_bits(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None = None,
               fixed: object = None) -> dict[str, TensorQuant]:
    """The quantiser of a fit without a rate target: every tensor at 8 bits over its range."""
    return {n: choose(t, 8) for n, t in tensors.items()}


def _stored_names(model: ImageModel, module: torch.nn.Module) -> dict[str, str]:
    """A stage module's parameter names -> the names the model stores them under."""
    prefix = next(name for name, m in model.named_modules() if m is module)
    return {n: f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()}


class _Reporter:
    """Turns each phase's own step count into the fit's: one bar over all stages and phases."""

    def __init__(self, callback: Callable[[Progress], None] | None, total: int):
        self.callback, self.total, self.done = callback, total, 0

    def phase(self, label: str) -> PhaseProgress:
        offset = self.done

        def report(step: int, psnr: float | None) -> None:
            if self.callback is not None:
                self.callback(Progress(label, offset + step, self.total, psnr))
        return report


def planned_steps(schedule: Schedule) -> int:
    """The steps a fit under ``schedule`` reports as its total (every stage together)."""
    # Extra starts of the first cycle add steps (on stages that can draw fresh weights).
    first_cycle = math.ceil(schedule.steps / max(1, min(schedule.cycles, schedule.steps)))
    return (schedule.steps + (schedule.starts - 1) * first_cycle + schedule.qat_steps
            + schedule.progressive_steps)


def fit(model: ImageModel, target: torch.Tensor, schedule: Schedule, *, seed: int = 0,
        compile: bool | None = None, quantiser: Quantiser | None = None,
        progress: Callable[[Progress], None] | None = None) -> FitReport:
    """Fit ``model`` to ``target`` (H, W, C, model space) and quantise every stored tensor with
    ``quantiser`` (default: 8 bits each).

    On return the model's weights are the dequantised values and ``report.quants`` maps each
    stored tensor's name to its quantiser. The process's allocator keeps freed memory while it
    runs (:func:`~inrcodec.parallel.freed_memory_kept`: steadier and faster steps).
    """
    with freed_memory_kept():
        return _fit(model, target, schedule, seed, compile, quantiser, progress)


def _fit(model: ImageModel, target: torch.Tensor, schedule: Schedule, seed: int,
         compile: bool | None, quantiser: Quantiser | None,
         progress: Callable[[Progress], None] | None) -> FitReport:
    generator = torch.Generator().manual_seed(seed)
    report = FitReport()
    reporter = _Reporter(progress, planned_steps(schedule))
    for task in model.fit_tasks(target, schedule):
        start = time.perf_counter()
        stage = Stage(task, schedule, generator, compile, reporter.phase)
        training = Training(schedule, task)
        mse = training.run(stage)
        reporter.done += training.total_steps

        names = _stored_names(model, task.module)
        own = task.fixed_quants() if task.fixed_quants is not None else {}
        params = dict(task.module.named_parameters())
        fixed = {names[n]: (params[n].detach(), q) for n, q in own.items()}
        stored = {names[n]: p.detach() for n, p in params.items() if n not in own}
        sensitivity = None
        if schedule.allocation == "sensitivity" and quantiser is not None:
            probed = measure_sensitivity(task, seed, frozenset(own))
            sensitivity = {names[n]: v for n, v in probed.items()}
        chosen = (quantiser or eight_bits)(stored, sensitivity, fixed)
        chosen.update({n: q for n, (_, q) in fixed.items()})
        quants = {n: chosen[names[n]] for n in names}

        fine_tuning = QuantisedFineTuning(schedule, task)
        qat_mse = fine_tuning.run(stage, quants)
        reporter.done += fine_tuning.steps
        rounding = ProgressiveRounding(schedule, task)
        rounding.run(stage, quants)
        reporter.done += rounding.steps
        rdo_sensitivity = None if sensitivity is None else \
            {n: sensitivity[names[n]] for n in names if names[n] in sensitivity}
        RateDistortionRounding(schedule, task).run(stage, quants, rdo_sensitivity)

        with torch.no_grad():
            for n, p in task.module.named_parameters():
                p.copy_(fake_quantize(p, quants[n]))
                report.quants[names[n]] = quants[n]
        final_mse = qat_mse if qat_mse is not None and not schedule.rdo_rounding \
            else task.evaluate()
        report.stages.append(StageReport(task.name, training.steps, fine_tuning.steps,
                                         psnr_of_mse(mse), psnr_of_mse(final_mse),
                                         time.perf_counter() - start, training.collapses))
    missing = [n for n, _ in model.tensors() if n not in report.quants]
    if missing:
        raise RuntimeError(f"tensors never fitted: {missing}")
    return report


@dataclass
class TrainResult:
    mse: float
    steps: int
    seconds: float  # the loop, evaluations included; not the first step (compilation)
    first_step_seconds: float
    eval_seconds: float  # the evaluations inside the loop

    @property
    def psnr(self) -> float:
        return psnr_of_mse(self.mse)

    @property
    def step_seconds(self) -> float:
        """Mean time of a training step, neither the first one nor evaluations counted."""
        return (self.seconds - self.eval_seconds) / max(1, self.steps - 1)


def train(task: FitTask, schedule: Schedule, steps: int | None = None, *, seed: int = 0,
          compile: bool | None = None) -> TrainResult:
    """Train one stage's module in float (no quantisation) for one cosine, keeping the best
    weights: the building block of :func:`fit`, public for experiments with modules of their
    own."""
    steps = schedule.steps if steps is None else steps
    stage = Stage(task, schedule, torch.Generator().manual_seed(seed), compile)
    trainer = stage.trainer(steps, None)
    mse = trainer.run([Segment(steps, schedule.lr)])
    return TrainResult(mse, steps, trainer.loop_seconds, trainer.first_step_seconds,
                       trainer.eval_seconds)

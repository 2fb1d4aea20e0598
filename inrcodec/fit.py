"""Pipeline stage 2: fitting a model to an image, and quantisation-aware fine-tuning.

A model family yields one or more :class:`~.models.FitTask` stages. Each stage is trained with
Adam on random batches for its share of ``FitOptions.steps``, under a learning rate that warms up
linearly and then follows a cosine down to ``lr * lr_floor``, once or in ``cycles`` (warm
restarts from the best weights so far), the first cycle from ``starts`` initialisations. The
whole image is evaluated every ``eval_every`` steps and the best weights are kept (each group's
best, for a stage of independent networks such as the gridded family's cells). Then the stage's
tensors are quantised and fine-tuned through the quantiser for its share of ``qat_steps`` (again
keeping the best), or rounded one at a time with the others training on
(``progressive_steps``), and finally set to exactly the values the decoder will rebuild, so the
next stage (the residual family's) fits what the *decoded* earlier stage misses.

Training counts steps, never seconds: the same image, options and seed give the same weights.
Batches are drawn on the CPU (so both devices see the same batches) and moved to the model's
device, which may be a GPU.
The step (forward, backward and Adam update) is compiled with ``torch.compile`` when a stage is
long enough for the compilation to pay for itself.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.func import functional_call, grad_and_value

from .models.base import FitTask, ImageModel
from .quantize import TensorQuant, choose, fake_quantize
from .ratecontrol import Quantiser, fixed_bits

#: Stages with at least this many steps are compiled (measured: compiling costs 3-10 s here).
COMPILE_MIN_STEPS = 1500
#: Steps between progress reports (evaluations report too).
PROGRESS_EVERY = 25
#: Adam's moment decay rates and epsilon (PyTorch's defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class FitOptions:
    steps: int = 2000
    batch: int = 4096  # samples per step, over all groups
    lr: float = 1e-3
    lr_floor: float = 0.01  # 1% rather than 5%: +0.06 to +0.15 dB (docs/experiments.md)
    warmup: float = 0.02
    eval_every: int = 0  # steps between evaluations; 0: eight evaluations per stage
    qat_steps: int = 0
    qat_lr: float = 1e-3
    #: Rounding one tensor at a time (in the stage's parameter order) after the quantisers are
    #: chosen, the tensors not yet rounded being trained for an equal share of these steps (at
    #: ``progressive_lr``) after each, to make up for it; 0: every tensor rounded at once.
    progressive_steps: int = 0
    progressive_lr: float = 1e-4
    #: Picks the quantisers of one stage's tensors from {stored name: tensor} and, with
    #: ``allocation="sensitivity"``, each tensor's measured sensitivity (see ratecontrol).
    #: The default quantises every tensor to 8 bits.
    quantiser: Quantiser | None = None
    allocation: str = "sensitivity"  # or "uniform": no sensitivity probe
    window_weights: bool = True  # False: overlapping cells' samples all weigh the same
    best_per_group: bool = True  # False: keep the best whole set of weights, not each cell's
    #: Training in this many cosine cycles of equal length (warm restarts): each later cycle
    #: starts from the best weights so far with fresh Adam moments, its peak learning rate
    #: ``cycle_decay`` times the previous cycle's.
    cycles: int = 1
    cycle_decay: float = 0.5
    #: The first cycle is trained this many times, from the stage's own initial weights and
    #: then from fresh draws (``FitTask.initialise``), and the later cycles go on from the best
    #: weights of all of them (each group's best): a network that starts badly gets other
    #: chances. It costs ``starts - 1`` more cycles of steps.
    starts: int = 1
    compile: bool | None = None
    seed: int = 0


@dataclass
class Progress:
    """What a progress callback receives: the stage, the step so far of ``total``, the best
    PSNR (dB) seen so far in this stage (None before the first evaluation)."""

    stage: str
    step: int
    total: int
    psnr: float | None


@dataclass
class StageReport:
    name: str
    steps: int
    qat_steps: int
    psnr: float
    psnr_quantised: float
    seconds: float


@dataclass
class FitReport:
    stages: list[StageReport] = field(default_factory=list)
    quants: dict[str, TensorQuant] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def psnr_of(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _schedule(step: int, total: int, options: FitOptions, peak: float) -> float:
    warm = max(1, int(options.warmup * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    floor = peak * options.lr_floor
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))


#: Graphs torch.compile may keep per function: one per model shape and quantiser set, and a
#: batch encode or a benchmark worker fits many (Dynamo's default of eight is then an error,
#: the step being compiled with ``fullgraph=True``).
RECOMPILE_LIMIT = 256


def _prepare_dynamo() -> None:
    import torch._dynamo
    logging.getLogger("torch._logging._internal").setLevel(logging.ERROR)
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)


class _Loop:
    """The training loop of one stage, with or without quantisation in the forward pass.

    A step is one function: assemble the batch from the stage's random draws, compute the loss
    and its gradient (``torch.func``), and update the weights with Adam (written out here, so
    that the whole step traces as one graph). Compiled, it is one call per step with no Python
    in between, which matters on a CPU where a step of small networks is mostly overhead.
    """

    def __init__(self, task: FitTask, options: FitOptions, steps: int, peak_lr: float,
                 quants: dict[str, TensorQuant] | None, generator: torch.Generator,
                 report_progress: Callable[[int, float | None], None],
                 frozen: frozenset[str] = frozenset()):
        self.task, self.options, self.steps = task, options, steps
        self.peak_lr, self.quants, self.generator = peak_lr, quants, generator
        self.fine_tuning = quants is not None or bool(frozen)
        self.report_progress = report_progress
        per_group = round(options.batch * task.batch_factor / task.groups)
        self.batch = max(1, min(max(16, per_group), task.samples))
        module = task.module
        self.named = list(module.named_parameters())
        if task.evaluate_groups is not None and any(p.shape[0] != task.groups
                                                    for _, p in self.named):
            raise ValueError("per-group evaluation needs every parameter's first dimension "
                             "to be the group")
        self.device = self.named[0][1].device
        self.lr = torch.tensor(peak_lr, device=self.device)
        names = [n for n, _ in self.named]
        params = [p.detach() for _, p in self.named]  # the module's own storage
        first = [torch.zeros_like(p) for p in params]
        second = [torch.zeros_like(p) for p in params]
        count = torch.zeros((), device=self.device)
        self.optimiser_state = first + second + [count]
        data = {k: v.to(self.device) for k, v in task.data.items()}
        drop_weights = task.weighted and not options.window_weights
        beta1, beta2, eps = ADAM_BETAS + (ADAM_EPS,)

        def loss_of(weights: list[torch.Tensor], draws: torch.Tensor) -> torch.Tensor:
            x, y = task.assemble(data, draws)
            if drop_weights:
                y = y[..., :-1]
            if quants is not None:
                weights = [fake_quantize(w, quants[n]) for n, w in zip(names, weights)]
            return task.loss(functional_call(module, dict(zip(names, weights)), (x,)), y)

        def step(draws: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
            grads, loss = grad_and_value(loss_of)(params, draws)
            count.add_(1)
            correction1 = 1 - beta1 ** count
            correction2 = 1 - beta2 ** count
            for n, p, g, m, v in zip(names, params, grads, first, second):
                if n in frozen:
                    continue
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                p.sub_(lr * (m / correction1) / ((v / correction2).sqrt() + eps))
            return loss

        use_compile = options.compile if options.compile is not None \
            else steps >= COMPILE_MIN_STEPS
        if use_compile:
            _prepare_dynamo()
            step = torch.compile(step, fullgraph=True)
        self.step = step

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
        if self.task.evaluate_groups is None or not self.options.best_per_group:
            return self.evaluate(), None
        return self._measure(self.task.evaluate_groups)

    @torch.no_grad()
    def _restart(self, best: list[torch.Tensor] | None) -> None:
        """Start a new cycle: the best weights so far (None: fresh initial weights), Adam's
        moments and step count at zero."""
        if best is None:
            self.task.initialise(self.generator)
        else:
            for (_, p), b in zip(self.named, best):
                p.copy_(b)
        for t in self.optimiser_state:
            t.zero_()

    def starts(self) -> int:
        """How many starts the first cycle gets (one when fine-tuning or without fresh draws)."""
        if self.fine_tuning or self.task.initialise is None:
            return 1
        return max(1, self.options.starts)

    def run(self) -> float:
        """Train; leave the best weights in place (each group's best, for a stage of
        independent groups); return their MSE."""
        self.first_step_seconds = 0.0
        self.eval_seconds = 0.0
        best_mse, best_groups = self.assess()
        best = [p.detach().clone() for _, p in self.named]
        cycles = 1 if self.fine_tuning else self.options.cycles  # fine-tuning: one cosine
        cycles = max(1, min(cycles, self.steps))
        length = math.ceil(self.steps / cycles)
        starts = self.starts()
        self.total_steps = total = self.steps + (starts - 1) * length
        every = self.options.eval_every or max(1, math.ceil(length / 8))
        loop_start = time.perf_counter()
        for i in range(total):
            run, within = divmod(i, length)  # runs: the first cycle's starts, then the cycles
            if within == 0 and run > 0:
                self._restart(best if run >= starts else None)
            cycle = max(0, run - starts + 1)
            peak = self.peak_lr * self.options.cycle_decay ** cycle
            self.lr.fill_(_schedule(within, min(length, self.steps - cycle * length),
                                    self.options, peak))
            draws = self.task.draw(self.generator, self.batch).to(self.device, non_blocking=True)
            if i == 0:
                start = time.perf_counter()
                self.step(draws, self.lr)  # compiles, when compiling
                self.first_step_seconds = time.perf_counter() - start
            else:
                self.step(draws, self.lr)
            if (within + 1) % every == 0 or within + 1 == length or i + 1 == total:
                start = time.perf_counter()
                mse, groups = self.assess()
                self.eval_seconds += time.perf_counter() - start
                if groups is not None:  # keep each group's best (a NaN group: the latest)
                    better = ~(groups >= best_groups)
                    for b, (_, p) in zip(best, self.named):
                        b[better] = p.detach()[better]
                    best_groups = torch.where(better, groups, best_groups)
                    best_mse = min(best_mse, mse)  # for progress; measured below
                elif mse < best_mse:
                    best_mse = mse
                    best = [p.detach().clone() for _, p in self.named]
                self.report_progress(i + 1, psnr_of(best_mse))
            elif (i + 1) % PROGRESS_EVERY == 0:
                self.report_progress(i + 1, psnr_of(best_mse))
        self.loop_seconds = time.perf_counter() - loop_start - self.first_step_seconds
        with torch.no_grad():
            for (_, p), b in zip(self.named, best):
                p.copy_(b)
        return best_mse if best_groups is None else self.evaluate()


@dataclass
class TrainResult:
    mse: float
    steps: int
    seconds: float  # the loop, evaluations included; not the first step (compilation)
    first_step_seconds: float
    eval_seconds: float  # the evaluations inside the loop

    @property
    def psnr(self) -> float:
        return psnr_of(self.mse)

    @property
    def step_seconds(self) -> float:
        """Mean time of a training step, neither the first one nor evaluations counted."""
        return (self.seconds - self.eval_seconds) / max(1, self.steps - 1)


def train(task: FitTask, options: FitOptions, steps: int | None = None) -> TrainResult:
    """Train one stage's module in float (no quantisation), keeping the best weights.

    The building block of :func:`fit`, public for experiments that train modules of their own.
    """
    steps = options.steps if steps is None else steps
    loop = _Loop(task, options, steps, options.lr, None,
                 torch.Generator().manual_seed(options.seed), lambda step, psnr: None)
    mse = loop.run()
    return TrainResult(mse, steps, loop.loop_seconds, loop.first_step_seconds,
                       loop.eval_seconds)


#: Noise draws per tensor when probing sensitivity, and the pixels each probe renders.
PROBES = 1
PROBE_PIXELS = 1 << 16


@torch.no_grad()
def measure_sensitivity(task: FitTask, seed: int) -> dict[str, float]:
    """Per tensor of the stage: the MSE increase per unit variance of uniform noise added to its
    weights (noise about the size of 6-bit quantisation), averaged over PROBES draws."""
    generator = torch.Generator().manual_seed(seed)
    base = task.evaluate(PROBE_PIXELS)
    out = {}
    for name, p in task.module.named_parameters():
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


def _round_progressively(task: FitTask, options: FitOptions, quants: dict[str, TensorQuant],
                         generator: torch.Generator,
                         report_progress: Callable[..., None]) -> int:
    """Round the stage's tensors one at a time, training those not yet rounded after each
    (``FitOptions.progressive_steps``); return the steps taken."""
    named = list(task.module.named_parameters())
    total = round(options.progressive_steps * task.share)
    phases = len(named) - 1
    if phases < 1 or total < phases:  # one tensor, or too few steps for a phase each
        return 0
    frozen: set[str] = set()
    for i, (name, p) in enumerate(named[:-1]):
        with torch.no_grad():
            p.copy_(fake_quantize(p, quants[name]))
        frozen.add(name)
        before = i * total // phases
        _Loop(task, options, (i + 1) * total // phases - before, options.progressive_lr, None,
              generator,
              lambda s, v, before=before: report_progress(before + s, v,
                                                          f"{task.name} (rounding)"),
              frozen=frozenset(frozen)).run()
    return total


def fit(model: ImageModel, target: torch.Tensor, options: FitOptions,
        progress: Callable[[Progress], None] | None = None) -> FitReport:
    """Fit ``model`` to ``target`` (H, W, C, model space) and quantise every stored tensor.

    On return the model's weights are the dequantised values and ``report.quants`` maps each
    stored tensor's name to its quantiser.
    """
    generator = torch.Generator().manual_seed(options.seed)
    report = FitReport()
    # Extra starts of the first cycle add steps (on stages that can draw fresh weights).
    first_cycle = math.ceil(options.steps / max(1, min(options.cycles, options.steps)))
    total = (options.steps + (max(1, options.starts) - 1) * first_cycle + options.qat_steps
             + options.progressive_steps)
    done = 0
    names = {id(p): n for n, p in model.tensors()}
    for task in model.fit_tasks(target):
        start = time.perf_counter()
        steps = max(1, round(options.steps * task.share))
        qat_steps = round(options.qat_steps * task.share)
        offset = done

        def report_progress(step: int, psnr: float | None, stage: str = task.name) -> None:
            if progress is not None:
                progress(Progress(stage, offset + step, total, psnr))

        loop = _Loop(task, options, steps, options.lr, None, generator, report_progress)
        mse = loop.run()
        done += loop.total_steps
        local_names = {n: names[id(p)] for n, p in task.module.named_parameters()}
        stored = {local_names[n]: p.detach() for n, p in task.module.named_parameters()}
        sensitivity = None
        if options.allocation == "sensitivity" and options.quantiser is not None:
            probed = measure_sensitivity(task, options.seed)
            sensitivity = {local_names[n]: v for n, v in probed.items()}
        chosen = (options.quantiser or fixed_bits(8))(stored, sensitivity)
        quants = {n: chosen[local_names[n]] for n in local_names}
        offset = done
        qat_mse = _Loop(task, options, qat_steps, options.qat_lr, quants, generator,
                        lambda s, v: report_progress(s, v, f"{task.name} (quantised)")).run() \
            if qat_steps else None
        done += qat_steps
        offset = done
        done += _round_progressively(task, options, quants, generator, report_progress)
        with torch.no_grad():
            for n, p in task.module.named_parameters():
                p.copy_(fake_quantize(p, quants[n]))
                report.quants[local_names[n]] = quants[n]
        if task.finish is not None:
            task.finish()
        final_mse = qat_mse if qat_mse is not None else task.evaluate()
        report.stages.append(StageReport(task.name, steps, qat_steps, psnr_of(mse),
                                         psnr_of(final_mse), time.perf_counter() - start))
    missing = [n for n, _ in model.tensors() if n not in report.quants]
    if missing:
        raise RuntimeError(f"tensors never fitted: {missing}")
    return report

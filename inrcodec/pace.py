"""How long an encode takes: an estimate before it starts, and the time it has left as it runs.

**Before** (:func:`estimate`): an encode's seconds from its plan, with a cost model per family
measured on the 2-core development machine (``benchmarks/encode_time.py``; the figures are in
docs/experiments.md, "Encode time"):

    seconds = setup + steps * step(values) + tail(values)

where ``values`` is the sized model's count of stored values (latents and weights), known before
any training, and ``step`` and ``tail`` are interpolated between measured points (linearly in
the values, and beyond the last two points along their line). ``setup`` is compiling the
training step (about 20 s, for a phase of COMPILE_MIN_STEPS steps or more, or of as much work:
``fit.compiles``) and, for the latent
family, making its per-pixel tables. A step of the latent family touches every latent (noise,
Adam, the rate term) and draws a batch that grows with the image beyond a Kodak image's size, so
its cost grows with the image; a step of a SIREN family trains on a fixed batch and grows only
with the network. The tail is quantisation, the entropy coding of every value (several times, by
rate control) and the final render. The model is a guide for the warning before a long encode,
not a promise: another machine is faster or slower by about a constant factor, which the
estimate while running measures.

**While** (:class:`Pace`): the seconds left, from the trainer's reports: the steps left at the
pace measured over the later half of the steps done (the first report, whose time includes
compiling the step, left out; a pace that drifts is followed; a step that took SPIKE times the
median or more, a one-off such as coder 3's network fitted to the latents, left out too),
plus the tail and any runs still to come at the model's estimate, scaled by how this run's pace
compares with the model's. Until enough steps are measured it gives the model's estimate.
"""

from __future__ import annotations

import bisect
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

#: An encode estimated to take longer than this (seconds) is announced before it starts.
LONG_ENCODE = 120.0
#: Compiling the training step (torch.compile, a fresh process): about this many seconds.
COMPILE_SECONDS = 20.0

#: (values, seconds) points of a measured curve.
Points = tuple[tuple[float, float], ...]


def interpolate(points: Points, x: float) -> float:
    """The curve through ``points`` (sorted by x) at ``x``: linear between them, along the
    line of the last (or first) two beyond them, never below the smallest measured value."""
    xs = [p[0] for p in points]
    i = min(max(bisect.bisect_left(xs, x), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return max(y, min(p[1] for p in points))


@dataclass(frozen=True)
class CostModel:
    """A family's encode time on the development machine (see the module docstring): seconds
    per step and seconds after the last step, against the stored values, for a training step
    that is compiled; an eager step (a phase too short to compile) costs ``eager`` times as
    much; ``setup_per_value`` is what making the fit's tables costs."""

    step: Points
    tail: Points
    eager: float
    setup_per_value: float = 0.0


#: Measured with benchmarks/encode_time.py at 0.3 bpp on crops of 768x512, 1536x1024 and
#: 3072x2048 of a photograph, each in a fresh process, and the latent family on the whole
#: 4000x3000 (benchmarks/large_photo.py; docs/experiments.md, "Encode time"). The
#: latent family's step, whose batch grows with the image beyond a Kodak image's pixels
#: (``Schedule.batch_pixels``), was measured again with it: 0.26 s compiled for the 8 M values
#: of 2000x1500 (150 and 450 steps), 0.77 s for the 32 M of 4000x3000 (the fast and default
#: encodes of benchmarks/camera_photo.py; docs/experiments.md, "A camera photo"). Its steps are
#: compiled at the default effort, eager at the fast one on small images (1.5-2.1 times the
#: compiled step); the SIREN families' steps were measured eager (the gridded family's
#: compiled) and their compiled steps taken as 0.7 times that.
COSTS: dict[str, CostModel] = {
    "latent": CostModel(step=((1.05e6, 0.0236), (8.0e6, 0.26), (32.0e6, 0.77)),
                        tail=((1.05e6, 1.0), (4.2e6, 5.1), (16.8e6, 18.0), (32.0e6, 17.2)),
                        eager=1.8, setup_per_value=1e-6),
    "gridded": CostModel(step=((17.7e3, 0.0017), (67.9e3, 0.0017), (271.5e3, 0.0024)),
                         tail=((17.7e3, 0.5), (67.9e3, 1.1), (271.5e3, 5.5)), eager=1.4),
    "residual": CostModel(step=((17.7e3, 0.0050), (70.8e3, 0.0133), (277e3, 0.079)),
                          tail=((17.7e3, 0.6), (70.8e3, 4.1), (277e3, 43.0)), eager=1.4),
    "dct": CostModel(step=((17.8e3, 0.0036), (72.1e3, 0.0072), (289e3, 0.0159)),
                     tail=((17.8e3, 0.34), (72.1e3, 1.3), (289e3, 8.0)), eager=1.4),
    "siren": CostModel(step=((18e3, 0.0092), (71.6e3, 0.0236), (289e3, 0.102)),
                       tail=((18e3, 0.9), (71.6e3, 5.6), (289e3, 77.0)), eager=1.4),
}


@dataclass(frozen=True)
class Estimate:
    """An encode's predicted seconds: before its training, for its steps, and after them."""

    setup: float
    training: float
    tail: float
    steps: int

    @property
    def seconds(self) -> float:
        return self.setup + self.training + self.tail

    @property
    def step(self) -> float:
        return self.training / max(1, self.steps)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.setup + other.setup, self.training + other.training,
                        self.tail + other.tail, self.steps + other.steps)


def estimate(family: str, steps: int, values: int, compiled: bool = True) -> Estimate:
    """The predicted seconds of one fit of ``family`` for ``steps`` training steps of a model
    of ``values`` stored values, its step ``compiled`` or not, on the development machine."""
    cost = COSTS.get(family, COSTS["siren"])
    step = interpolate(cost.step, values) * (1.0 if compiled else cost.eager)
    setup = (COMPILE_SECONDS if compiled else 0.0) + cost.setup_per_value * values
    return Estimate(setup, steps * step, interpolate(cost.tail, values), steps)


def describe(seconds: float) -> str:
    """About how long, in words: '40 seconds', '3 minutes', '1 hour 20 minutes'."""
    if seconds < 90:
        return f"{max(10, round(seconds, -1)):.0f} seconds"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} minutes"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} hour{'s' if hours > 1 else ''}" + (f" {minutes} minutes" if minutes else "")


class Pace:
    """The seconds left of an encode whose plan is ``estimate`` (see the module docstring);
    ``after`` is the estimate of runs that follow this one (the best effort's second run)."""

    #: The measured pace is trusted over the model's once it spans this many steps and seconds.
    MIN_STEPS = 10
    MIN_SECONDS = 2.0
    #: A report whose steps took this many times the median step is a one-off, left out.
    SPIKE = 8.0
    #: The pace is measured again at most this often (seconds): a median over thousands of
    #: reports at every step would cost a step's time.
    REFRESH = 0.5

    def __init__(self, estimate: Estimate, after: Estimate | None = None):
        self.estimate, self.after = estimate, after
        self.started = time.perf_counter()
        self.times: list[float] = []  # of the training reports, from the first
        self.steps: list[int] = []
        self.trained_at: float | None = None  # when the last step was reported
        self.measured: tuple[float, float] = (-1e9, 1.0)  # (when, factor)

    def report(self, step: int, total: int) -> None:
        """A report of the trainer: ``step`` of ``total`` done, now (step 0: not begun)."""
        if step <= 0 or (self.steps and step <= self.steps[-1]):
            return
        now = time.perf_counter()
        self.times.append(now)
        self.steps.append(step)
        if step >= total and self.trained_at is None:
            self.trained_at = now

    def factor(self) -> float:
        """This run's pace over the model's, measured over the later half of the steps done
        since the first report, one-off spikes left out (1 until enough of it is measured)."""
        now = time.perf_counter()
        if now - self.measured[0] >= self.REFRESH:
            self.measured = (now, self._measure())
        return self.measured[1]

    def _measure(self) -> float:
        if not self.steps:
            return 1.0
        middle = bisect.bisect_left(self.steps, (self.steps[0] + self.steps[-1]) / 2)
        middle = min(middle, max(0, len(self.steps) - 1 - self.MIN_STEPS))
        if self.steps[-1] - self.steps[middle] < self.MIN_STEPS \
                or self.times[-1] - self.times[middle] < self.MIN_SECONDS:
            return 1.0
        spans = [(self.times[i] - self.times[i - 1], self.steps[i] - self.steps[i - 1])
                 for i in range(middle + 1, len(self.steps))]
        typical = statistics.median(seconds / steps for seconds, steps in spans)
        kept = [(seconds, steps) for seconds, steps in spans
                if seconds <= self.SPIKE * typical * steps]
        seconds, steps = sum(s for s, _ in kept), sum(n for _, n in kept)
        return seconds / steps / max(self.estimate.step, 1e-9)

    def left(self) -> float:
        """The seconds left now, never below zero."""
        now = time.perf_counter()
        later = self.after.seconds if self.after else 0.0
        if not self.steps:  # not a step yet: the model's estimate
            return max(0.0, self.estimate.seconds - (now - self.started)) + later
        factor = self.factor()
        if self.trained_at is not None:
            return max(0.0, factor * (self.estimate.tail + later) - (now - self.trained_at))
        steps_left = max(0, self.estimate.steps - self.steps[-1])
        return factor * (steps_left * self.estimate.step + self.estimate.tail + later)

    def relay(self, progress: Callable[[Any], None]) -> Callable[[Any], None]:
        """A progress callback that counts the reports and passes them on to ``progress`` with
        the time left (``eta``)."""
        def forward(report: Any) -> None:
            self.report(report.step, report.total)
            progress(dataclasses.replace(report, eta=self.left()))
        return forward

"""Encoding, end to end: image -> colour transform -> sized model -> fit -> quantise ->
entropy code -> container.

:func:`compress` is the library's entry point (:func:`encode` returns just the bytes). Its
options are one :class:`~.options.EncodeOptions`, or the same as keyword settings.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import pace
from .color import ColorTransform
from .decoder import render, resolve_device
from .encodings import Encoding, parse_encoding
from .errors import InrInputError, InrWarning, RateTooLow
from .fit import FitReport, Progress, compiles, fit, planned_steps
from .imageio import ImageLike, load_image
from .metrics import psnr
from .training import get_trainable
from .models.base import ImageModel
from .options import EncodeOptions
from .ratecontrol import PSNR_SEARCH_FITS, PsnrSearch, RatePlan


@dataclass
class EncodeResult:
    """A finished encoding: the file and what it cost."""

    data: bytes
    width: int
    height: int
    model: str
    params: int
    psnr: float
    seconds: float
    description: str
    report: FitReport

    @property
    def bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.width * self.height)

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "bpp": self.bpp, "psnr": self.psnr,
                "seconds": self.seconds, "model": self.model, "params": self.params,
                "width": self.width, "height": self.height, "description": self.description}


def signal_path(family: type[ImageModel], options: EncodeOptions, channels: int
                ) -> tuple[ColorTransform, Encoding]:
    """The colour transform and input encoding of an encode: the options', else the family's."""
    color = options.color or (family.default_color if channels == 3 else "rgb")
    try:
        transform = ColorTransform(color, channels)
        kind, params = parse_encoding(options.encoding) if options.encoding \
            else family.default_encoding
        return transform, Encoding(kind, 2, **params)
    except ValueError as exc:
        raise InrInputError(str(exc)) from None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` for the block (None: left as they are)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(before)


def compress(image: ImageLike, options: EncodeOptions | None = None, *,
             progress: Callable[[Progress], None] | None = None, **settings: Any
             ) -> EncodeResult:
    """Encode an image (a path, bytes, a binary file, a PIL image or a uint8 array). Returns
    the `.inr` bytes with the encoding's measurements.

    The options are an :class:`~.options.EncodeOptions`, or keyword settings of the same
    names (``model``, ``bpp``, ``quality`` or ``psnr``, ``effort``, ``coder``, ``seed``, ...),
    training overrides (``steps``, ``cycles``, ``lr``, ...; :class:`~.presets.Schedule`) and
    the family's hyper-parameters (``hparams={...}``, or by name), which go on top of
    ``options``. ``progress`` receives the trainer's progress.

    With a ``psnr`` target the image is encoded at the rates :class:`~.ratecontrol.PsnrSearch`
    proposes (up to ``PSNR_SEARCH_FITS`` fits) and the smallest file that reaches the target
    is returned; if none does, the best one, with an :class:`~.errors.InrWarning`.
    """
    options = options or EncodeOptions()
    if settings:
        options = options.with_settings(settings)
    start = time.perf_counter()
    pixels = load_image(image, max_pixels=options.max_pixels)
    if options.psnr is not None:
        result = _compress_to_psnr(pixels, options, progress)
    else:
        result = _compress(pixels, options, progress)
    result.seconds = time.perf_counter() - start
    return result


def _compress_to_psnr(pixels: np.ndarray, options: EncodeOptions,
                      progress: Callable[[Progress], None] | None) -> EncodeResult:
    search = PsnrSearch(options.psnr)
    results: list[EncodeResult] = []
    attempt = 0
    while (bpp := search.propose()) is not None:
        attempt += 1
        label = f"fit {attempt} at {bpp:.3f} bpp"
        relay = None if progress is None else (
            lambda p, label=label: progress(dataclasses.replace(p, stage=f"{p.stage}, {label}")))
        try:
            result = _compress(pixels, options.replace(psnr=None, bpp=bpp), relay,
                               fits=PSNR_SEARCH_FITS if attempt == 1 else 0)
        except RateTooLow as exc:  # below what this image can be encoded at: a floor
            search.record_too_low(bpp, exc.least_bpp)
            continue
        search.record(bpp, result.psnr)
        results.append(result)
    if not results:
        raise InrInputError(f"no rate up to {search.floor:.3g} bpp could encode this image")
    reached = [r for r in results if r.psnr >= options.psnr]
    if reached:
        return min(reached, key=lambda r: r.bytes)
    best = max(results, key=lambda r: r.psnr)
    warnings.warn(f"{options.psnr:.2f} dB was not reached in {len(results)} fits; the best "
                  f"file has {best.psnr:.2f} dB at {best.bpp:.3f} bpp", InrWarning, stacklevel=3)
    return best


def _compress(pixels: np.ndarray, options: EncodeOptions,
              progress: Callable[[Progress], None] | None, fits: int = 1) -> EncodeResult:
    """One encode at the options' rate. The best effort is two: the default effort's encode and
    the best schedule's, of which the one with the higher PSNR is kept (the smaller file on a
    tie). A long fit can end below the default's (a fit that drifts to large weights quantises
    badly at the same rate), so this is what makes the best effort never worse than the default
    at the same rate, for the default's time again (7-25% of the best's). A caller who sets the
    schedule (``steps``, ``cycles``, ...) or the bits gets that encode alone. ``fits``: how many
    such encodes the caller may make (a quality search), for the announcement of a long one
    (0: not the first, no announcement)."""
    if options.effort != "best" or options.bits is not None or options.training:
        return _fit_and_code(pixels, options, progress, announce=fits)
    runs = [("default run", options.replace(effort="default")),
            ("long run", options)]
    totals = [planned_steps(o.schedule()) for _, o in runs]
    results, too_low = [], []
    for i, (label, run_options) in enumerate(runs):
        relay = None if progress is None else (
            lambda p, label=label, offset=sum(totals[:i]): progress(dataclasses.replace(
                p, stage=f"{p.stage}, {label}", step=offset + p.step, total=sum(totals))))
        try:
            results.append(_fit_and_code(pixels, run_options, relay, after=runs[i + 1:],
                                         announce=fits if i == 0 else 0))
        except RateTooLow as exc:  # the two size their networks differently: one may fit
            too_low.append(exc)
    if not results:
        raise min(too_low, key=lambda e: e.least_bpp)
    return max(results, key=lambda r: (r.psnr, -r.bytes))


def _estimate(family: str, options: EncodeOptions, values: int) -> pace.Estimate:
    """The cost model's seconds for one fit of ``values`` stored values under ``options``."""
    schedule = options.schedule()
    return pace.estimate(family, planned_steps(schedule), values,
                         compiled=compiles(options.compile, schedule.steps, values))


def _announce(estimate: pace.Estimate, family: str, values: int, height: int, width: int,
              options: EncodeOptions, fits: int) -> None:
    """Say, before it starts, that an encode will take long and how to go faster: a warning
    (``inr: warning: ...`` on the command line). ``fits``: how many fits the encode may make
    (a quality search makes up to PSNR_SEARCH_FITS, three or four as a rule)."""
    typical = estimate.seconds * min(fits, 3)
    if typical <= pace.LONG_ENCODE:
        return
    faster = []
    if options.effort != "fast" and not options.training:
        fast = _estimate(family, options.replace(effort="fast"), values)
        faster.append(f"--effort fast takes about {pace.describe(fast.seconds)}")
    half = _estimate(family, options, values // 4)
    faster.append(f"a {width // 2}x{height // 2} copy of the image about "
                  f"{pace.describe(half.seconds)}")
    each = f" a fit (a PSNR target makes up to {fits})" if fits > 1 else ""
    warnings.warn(f"this {width}x{height} image at the {options.effort} effort will take about "
                  f"{pace.describe(estimate.seconds)}{each} on two CPU cores; "
                  f"{', '.join(faster)}", InrWarning, stacklevel=5)


def _fit_and_code(pixels: np.ndarray, options: EncodeOptions,
                  progress: Callable[[Progress], None] | None,
                  after: list[tuple[str, EncodeOptions]] = (), announce: int = 0
                  ) -> EncodeResult:
    """One fit and its file. ``after``: the runs that follow this one (their time counts in the
    estimate of the time left); ``announce``: if not 0, warn first when the encode will take
    long (the number of fits it may make)."""
    start = time.perf_counter()
    height, width, channels = pixels.shape
    family = get_trainable(options.model)
    transform, enc = signal_path(family, options, channels)
    device = resolve_device(options.device)
    with torch_threads(options.threads):
        plan = RatePlan.make(family, options, height, width, transform, enc)
        values = plan.model.n_params()
        estimate = _estimate(family.name, options, values)
        later = [_estimate(family.name, o, values) for _, o in after]
        if announce:
            _announce(sum(later, estimate), family.name, values, height, width, options,
                      announce)
        timer = pace.Pace(estimate, sum(later[1:], later[0]) if later else None)
        relay = None if progress is None else timer.relay(progress)
        if relay is not None:  # the bar, with the estimate, before the first step
            relay(Progress("starting", 0, estimate.steps, None))
        model = plan.model.to(device)
        target = transform.forward(torch.from_numpy(pixels.astype(np.float32) / 255.0))
        report = fit(model, target, options.schedule(), seed=options.seed,
                     compile=options.compile, quantiser=plan.quantiser, progress=relay)
        model.cpu()  # the final checks and the reported PSNR use the CPU decoder's arithmetic
        data = plan.finish(dict(report.quants))
        decoded = render(model, height, width)
    return EncodeResult(data=data, width=width, height=height, model=family.name,
                        params=model.n_params(), psnr=psnr(decoded, pixels),
                        seconds=time.perf_counter() - start, description=model.describe(),
                        report=report)


def encode(image: ImageLike, options: EncodeOptions | None = None, **settings: Any) -> bytes:
    """Encode an image to `.inr` bytes. See :func:`compress` for the options."""
    return compress(image, options, **settings).data

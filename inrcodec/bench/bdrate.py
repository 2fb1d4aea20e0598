"""Bjontegaard deltas and curve interpolation, written from the definition.

A rate-distortion curve is a list of (bits per pixel, PSNR) points. Bjontegaard's method fits a
cubic polynomial to each curve and compares the two fits over the range where both curves have
data:

- BD-rate: log-rate as a cubic in PSNR; the mean difference of the two fits over the overlapping
  PSNR interval, as a percentage change of rate: ``exp(mean diff) - 1``. Negative means the test
  codec needs fewer bits for the same quality.
- BD-PSNR: PSNR as a cubic in log-rate; the mean difference over the overlapping log-rate
  interval, in dB. Positive means the test codec has higher quality at the same rate.

With fewer than four points the polynomial degree drops to (points - 1).

A cubic fit can bend between points and over-reward a curve with few of them, so the BD-rate is
also given with ``interpolation="pchip"``: log-rate as SciPy's monotone piecewise cubic
(PCHIP, through every point) in PSNR, as the JVET and the AOM common test conditions allow.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Curve = Sequence[tuple[float, float]]

#: Relative distance from a curve's end within which psnr_at still answers (see there).
RATE_TOLERANCE = 0.01


def _clean(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((float(r), float(d)) for r, d in curve
                    if r > 0 and math.isfinite(r) and math.isfinite(d))
    rate = np.array([p[0] for p in points])
    dist = np.array([p[1] for p in points])
    return rate, dist


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean value over [lo, hi] of the least-squares polynomial of y in x (degree <= 3)."""
    degree = min(3, len(x) - 1)
    poly = np.polynomial.Polynomial.fit(x, y, degree).convert()
    integral = poly.integ()
    return float((integral(hi) - integral(lo)) / (hi - lo))


def _mean_of_pchip(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float | None:
    """Mean value over [lo, hi] of the monotone piecewise cubic through (x, y); None unless x
    and y rise together (a curve whose PSNR falls as its rate grows has no such function)."""
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
        return None
    return float(PchipInterpolator(x, y).integrate(lo, hi) / (hi - lo))


def bd_rate(test: Curve, reference: Curve, interpolation: str = "cubic") -> float | None:
    """Percent rate change of ``test`` against ``reference`` at equal PSNR, with log-rate a
    least-squares cubic (``cubic``) or a monotone piecewise cubic (``pchip``) in PSNR; None
    without overlap, with fewer than two points on a curve, or (``pchip``) with a curve whose
    PSNR does not rise with its rate."""
    r1, d1 = _clean(reference)
    r2, d2 = _clean(test)
    if len(r1) < 2 or len(r2) < 2:
        return None
    lo, hi = max(d1.min(), d2.min()), min(d1.max(), d2.max())
    if hi <= lo:
        return None
    mean = {"cubic": _mean_of_fit, "pchip": _mean_of_pchip}[interpolation]
    test_mean, reference_mean = mean(d2, np.log(r2), lo, hi), mean(d1, np.log(r1), lo, hi)
    if test_mean is None or reference_mean is None:
        return None
    return 100.0 * (math.exp(test_mean - reference_mean) - 1.0)


def bd_psnr(test: Curve, reference: Curve) -> float | None:
    """Mean PSNR difference (dB) of ``test`` over ``reference`` at equal rate; None without
    overlap."""
    r1, d1 = _clean(reference)
    r2, d2 = _clean(test)
    if len(r1) < 2 or len(r2) < 2:
        return None
    l1, l2 = np.log(r1), np.log(r2)
    lo, hi = max(l1.min(), l2.min()), min(l1.max(), l2.max())
    if hi <= lo:
        return None
    return _mean_of_fit(l2, d2, lo, hi) - _mean_of_fit(l1, d1, lo, hi)


def psnr_at(curve: Curve, bpp: float) -> float | None:
    """PSNR at ``bpp``, linear in log-rate between the two nearest points; None outside the
    curve (never extrapolated). A rate within ``RATE_TOLERANCE`` of an end point of the curve
    counts as that point: the mean rate of files aimed at 1 bpp may land at 0.998."""
    rate, dist = _clean(curve)
    tolerance = 1 + RATE_TOLERANCE
    if len(rate) == 0 or not rate.min() / tolerance <= bpp <= rate.max() * tolerance:
        return None
    order = np.argsort(rate)
    return float(np.interp(math.log(bpp), np.log(rate[order]), dist[order]))

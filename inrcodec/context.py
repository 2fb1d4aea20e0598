"""The entropy stage's spatial context model: coder 2, ``context``, for latent grids.

A three-dimensional tensor (C, H, W), such as a grid of the latent family, is coded as C planes
in raster order, each value y predicted from its four decoded neighbours in the same plane
(left L, up U, up-left UL, up-right UR; zero outside the plane):

- the **mean** mu = (wL L + wU U + wUL UL + wUR UR + 32) >> 6, clamped to -qmax..qmax, with four
  signed integer weights per tensor (i8, in 64ths: a planar predictor L + U - UL is
  (64, 64, -64, 0));
- the **class** of the value by the neighbourhood's activity a = 2|L| + 2|U| + |UL| + |UR|:
  0 for a < 1, 1 for a < 3, 2 for a < 5, 3 otherwise (:data:`CLASS_BOUNDS`);
- the residual y - mu (in -2 qmax..2 qmax) is coded with the two-sided geometric table of its
  class, whose ratio (u16) the tensor stores, as the ``rans`` coder does for a whole tensor.

Every step is integer arithmetic, so the decoder rebuilds the encoder's tables and contexts bit
for bit on any machine. Tensors of other ranks are coded as the ``rans`` coder codes them. What
it buys (docs/experiments.md): the latents trained for the per-grid model cost 16-20% fewer
bits on kodim05 and 36-37% fewer on kodim23 coded this way (its tables included), and training
against this model (the latent family's rate term) moves them further.

Why a fixed structure as the default rather than a learned autoregressive network (coder 3,
:mod:`.arm`, is one, made exact): four integer weights and four classes give most of what a
context over these neighbours holds for our latents, and a Kodak-sized file with its million
latents decodes in under 0.4 s (docs/experiments.md), a zero amid zeros taken first.
"""

from __future__ import annotations

import bisect
import struct
from typing import Iterator

import numpy as np

from . import rans

#: The activity a of a value's neighbourhood is in class k when a < CLASS_BOUNDS[k] (the last
#: class takes the rest).
CLASS_BOUNDS = (1, 3, 5)
CLASSES = len(CLASS_BOUNDS) + 1
#: The mean's weights are integers in 64ths (so the prediction is a shift of an integer sum).
WEIGHT_SHIFT = 6
WEIGHT_ONE = 1 << WEIGHT_SHIFT
#: Bytes of a three-dimensional tensor's model: four i8 weights, then a u16 ratio per class.
MODEL_FORMAT = f"<4b{CLASSES}H"
MODEL_BYTES = struct.calcsize(MODEL_FORMAT)
_CLASS_OF = [sum(a >= b for b in CLASS_BOUNDS) for a in range(CLASS_BOUNDS[-1])]
_CLASS_TABLE = np.array(_CLASS_OF + [CLASSES - 1], dtype=np.int8)


#: Values that :func:`analyse` takes at a time (whole rows of a plane), so that its temporaries
#: stay small for the 24 million latents of a 12 MP photo's finest grid.
BAND_VALUES = 1 << 20


def neighbours(planes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The neighbours L, U, UL, UR (int32 views, each of the shape C x H x W of ``planes``) of
    each value, zero outside its plane."""
    c, h, w = planes.shape
    padded = np.zeros((c, h + 1, w + 2), dtype=np.int32)
    padded[:, 1:, 1:-1] = planes
    return padded[:, 1:, :-2], padded[:, :-1, 1:-1], padded[:, :-1, :-2], padded[:, :-1, 2:]


def bands(planes: np.ndarray) -> Iterator[tuple[tuple[int, slice], tuple[np.ndarray, ...]]]:
    """A tensor (C, H, W) in bands of whole rows of one plane, about BAND_VALUES values each:
    each band's place (plane, rows) and its values' neighbours (:func:`neighbours`, the row
    above the band included)."""
    c, h, w = planes.shape
    rows = max(1, BAND_VALUES // max(w, 1))
    for k in range(c):
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            band = planes[k:k + 1, max(0, top - 1):bottom]
            near = neighbours(band)
            if top > 0:  # the row above is context only
                near = tuple(n[:, 1:] for n in near)
            yield (k, slice(top, bottom)), near


def activity_class(near: tuple[np.ndarray, ...]) -> np.ndarray:
    """Each value's class (int8) from its neighbours (:func:`neighbours`)."""
    left, up, upleft, upright = (np.abs(n) for n in near)
    activity = 2 * (left + up) + upleft + upright
    return _CLASS_TABLE[np.minimum(activity, len(_CLASS_OF))]


def fit_weights(planes: np.ndarray) -> tuple[int, ...]:
    """The four mean weights (in 64ths) that best predict ``planes`` from their neighbours in
    least squares, rounded to i8. The normal equations are summed band by band in float64, in
    which the products and sums of our latents are exact, so the weights do not depend on the
    order of the sums (nor on the machine)."""
    gram, target = np.zeros((4, 4)), np.zeros(4)
    for (k, rows), near in bands(planes):
        x = np.stack([n.ravel() for n in near]).astype(np.float64)
        gram += x @ x.T
        target += x @ planes[k, rows].ravel().astype(np.float64)
    if not np.any(np.diag(gram) > 0):
        return (0, 0, 0, 0)
    coef = np.linalg.lstsq(gram + 1e-9 * np.eye(4), target, rcond=None)[0]
    return tuple(int(w) for w in np.clip(np.round(coef * WEIGHT_ONE), -128, 127))


def predict(near: tuple[np.ndarray, ...], weights: tuple[int, ...], qmax: int) -> np.ndarray:
    """The integer means (int32) of the values with these neighbours, within -qmax..qmax (four
    products of an i8 weight and a 16-bit value sum within 32 bits)."""
    total = np.full(near[0].shape, WEIGHT_ONE // 2, dtype=np.int32)
    for n, w in zip(near, weights):
        if w:
            total += np.int32(w) * n
    return np.clip(total >> WEIGHT_SHIFT, -qmax, qmax)


def analyse(planes: np.ndarray, qmax: int, weights: tuple[int, ...] | None = None
            ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """A tensor's model and contexts: its weights (fitted unless given), each value's residual
    y - mu (int32) and class (int8); band by band (:func:`bands`)."""
    planes = planes.astype(np.int32, copy=False)
    weights = fit_weights(planes) if weights is None else weights
    residual = np.empty(planes.shape, dtype=np.int32)
    classes = np.empty(planes.shape, dtype=np.int8)
    for (k, rows), near in bands(planes):
        residual[k, rows] = planes[k, rows] - predict(near, weights, qmax)[0]
        classes[k, rows] = activity_class(near)[0]
    return weights, residual, classes


def class_totals(residual: np.ndarray, classes: np.ndarray) -> tuple[list[int], list[int]]:
    """Per class, how many residuals it holds and the sum of their magnitudes (exact; a band of
    BAND_VALUES at a time)."""
    flat_res, flat_cls = residual.ravel(), classes.ravel()
    counts = np.bincount(flat_cls, minlength=CLASSES)
    totals = np.zeros(CLASSES)  # sums of integers, exact in float64
    for start in range(0, flat_res.size, BAND_VALUES):
        part = slice(start, start + BAND_VALUES)
        totals += np.bincount(flat_cls[part], weights=np.abs(flat_res[part]), minlength=CLASSES)
    return [int(n) for n in counts], [int(t) for t in totals]


def fit_model(planes: np.ndarray, qmax: int, weights: tuple[int, ...] | None = None
              ) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray, np.ndarray]:
    """A three-dimensional tensor's model as the file stores it, fitted to the tensor: its mean
    weights (fitted unless given) and each class's ratio (the maximum-likelihood fit to its
    residuals, u16); and each value's residual and class (:func:`analyse`). The encoder codes
    with it, and the latent family's rate model (:mod:`.training.rate`) trains against it."""
    from .entropy import ratio_of_magnitudes  # coder 1's fit (the entropy stage imports this)
    weights, residual, classes = analyse(planes, qmax, weights)
    ratios = tuple(ratio_of_magnitudes(t, n) for n, t in zip(*class_totals(residual, classes)))
    return weights, ratios, residual, classes


def encode_model(planes: np.ndarray, qmax: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A three-dimensional tensor's model bytes (:data:`MODEL_FORMAT`) and its residuals'
    frequencies and cumulative frequencies, in coding order."""
    weights, ratios, residual, classes = fit_model(planes, qmax)
    tables = residual_tables(qmax, ratios)
    flat_res, flat_cls = residual.ravel(), classes.ravel()
    freq = np.empty(residual.size, dtype=np.int32)
    cum = np.empty(residual.size, dtype=np.int32)
    for start in range(0, flat_res.size, BAND_VALUES):  # the lookups' temporaries stay small
        part = slice(start, start + BAND_VALUES)
        cls, res, f, c = flat_cls[part], flat_res[part], freq[part], cum[part]
        for k, table in enumerate(tables):
            where = cls == k
            f[where], c[where] = table.lookup(res[where])
    return struct.pack(MODEL_FORMAT, *weights, *ratios), freq, cum


def read_model(raw: bytes, offset: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The weights and ratios of a tensor's model at ``offset`` (any values are valid)."""
    values = struct.unpack_from(MODEL_FORMAT, raw, offset)
    return values[:4], values[4:]


def residual_tables(qmax: int, ratios: tuple[int, ...] | list[int]) -> list[rans.Table]:
    """The classes' tables of residuals y - mu, which lie in -2 qmax..2 qmax."""
    return [rans.Table.geometric(2 * qmax, r) for r in ratios]


def decode_planes(reader: rans.Reader, shape: tuple[int, int, int], qmax: int,
                  weights: tuple[int, ...], ratios: tuple[int, ...]) -> np.ndarray:
    """The next C x H x W values of ``reader``'s stream (int32, flat), coded by
    :func:`encode_model`; raises RansError if a value falls outside -qmax..qmax."""
    c, h, w = shape
    w_left, w_up, w_upleft, w_upright = weights
    tables = residual_tables(qmax, ratios)
    freqs, cums = [t.freq for t in tables], [t.cum for t in tables]
    offset = 2 * qmax  # the residual tables' index of a zero residual
    # Where every neighbour is zero (class 0, mean 0: most of a fine grid at usual rates), a
    # zero is the likeliest value; its slots are tested first, before any search.
    zero_cum, zero_freq = cums[0][offset], freqs[0][offset]
    zero_end = zero_cum + zero_freq
    class_of, last = _CLASS_OF, CLASSES - 1
    bound = len(_CLASS_OF)
    half = WEIGHT_ONE // 2
    out = np.empty((c, h, w), dtype=np.int32)
    x, words, pos, n_words = reader.x, reader.words, reader.pos, len(reader.words)
    slot_mask, precision, low, word = rans.SLOT_MASK, rans.PRECISION, rans.LOW, rans.WORD
    bisect_right = bisect.bisect_right
    for plane in range(c):
        above = np.zeros(w + 2, dtype=np.int64)
        for row in range(h):
            up, upleft, upright = above[1:-1], above[:-2], above[2:]
            mag = np.abs(above)
            above_activity = (2 * mag[1:-1] + mag[:-2] + mag[2:]).tolist()
            above_mean = (w_up * up + w_upleft * upleft + w_upright * upright + half).tolist()
            values = [0] * w
            left = 0
            for j in range(w):
                if not left and not above_activity[j]:
                    slot = x & slot_mask
                    if zero_cum <= slot < zero_end:  # a zero where all is zero around
                        x = zero_freq * (x >> precision) + slot - zero_cum
                        if x < low:
                            if pos == n_words:
                                raise rans.RansError("the stream is cut short")
                            x = (x << word) | words[pos]
                            pos += 1
                        continue  # values[j] is 0 already
                a = above_activity[j] + 2 * (left if left >= 0 else -left)
                k = class_of[a] if a < bound else last
                freq, cum = freqs[k], cums[k]
                slot = x & slot_mask
                i = bisect_right(cum, slot) - 1
                x = freq[i] * (x >> precision) + slot - cum[i]
                if x < low:
                    if pos == n_words:
                        raise rans.RansError("the stream is cut short")
                    x = (x << word) | words[pos]
                    pos += 1
                mean = (above_mean[j] + w_left * left) >> WEIGHT_SHIFT
                if mean > qmax:
                    mean = qmax
                elif mean < -qmax:
                    mean = -qmax
                left = i - offset + mean
                if not -qmax <= left <= qmax:
                    raise rans.RansError("a decoded latent is out of its tensor's range")
                values[j] = left
            out[plane, row] = values
            above[1:-1] = values
            reader.x, reader.pos = x, pos
            reader.check_room(w)  # words that the rows still to come cannot consume: refused
    return out.ravel()

"""The entropy stage's learned model of latent grids: coder 3, ``arm``, its decode side.

An autoregressive model (after Cool-chic's ARM): each latent y of a grid (C, H, W) is coded with
a discretised Laplace whose mean and scale a small network computes from the latent's K decoded
neighbours in its own plane (:data:`OFFSETS`, nearest first; zero outside the plane). One
network serves every grid of a file and is stored in it; the encoder fits it to the latents
when it codes them (:mod:`inrcodec.training.arm`).

**Integer arithmetic.** The network is stored as integers with ``shift`` S fractional bits and
evaluated exactly on x, the K neighbours followed by their magnitudes (2K integers: a latent's
scale follows the activity around it, which a sum of signed neighbours cannot tell). The first
hidden layer is h = x W + b, every next one h = floor(h W / 2^S) + b, each followed by ReLU and
a clip to [0, :data:`ACTIVATION_MAX`]; the output layer reads the last hidden layer and x,
out = floor(h W_h / 2^S) + x W_x + b (with no hidden layer, out = x W + b), clipped to
+-ACTIVATION_MAX. Every partial sum is an integer below 2^53, so the products are computed as
float64 matrix products, exactly, in any order, on any machine (:func:`evaluate`). The outputs
give the mean mu in eighths, floor((8 out_0 + 2^(S-1)) / 2^S), and the log-scale in eighths of
a natural log, the same of out_1, clipped to the :data:`SCALES` tabulated scales
b_s = exp(LOG_SCALE_MIN + s / 8).

**Integer tables.** The latent is coded as its residual r = y - floor(mu) under the table of
(frac(mu), s): the Laplace of scale b_s centred at frac(mu), integrated over [r - 1/2, r + 1/2],
as integer frequencies (24 bits) over -2 qmax..2 qmax. Its cumulative distribution at n eighths
from its centre is 1 - rho^n / 2 (n >= 0) with rho = exp(-1 / (8 b_s)), stored as a 30-bit
integer per scale (:data:`RHO`); its powers are integer products, so every machine builds the
same tables (:func:`table`).

**Order.** A grid is coded by wavefronts: latent (i, j) of every plane at time t = j + 3 i, each
wavefront's latents (plane by plane, row by row) once all their neighbours are decoded, so that
a decoder evaluates the network once per wavefront, on all of its latents at once.
"""

from __future__ import annotations

import bisect
import functools
import math
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import rans

#: Causal neighbours in a plane, nearest first: (row offset, column offset). A network uses the
#: first K. Every one is decoded before its latent in wavefront order (t = j + 3 i).
OFFSETS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-1, 2),
           (-2, -1), (-2, 1), (0, -3), (-3, 0))
WAVE = 3  # a row starts WAVE wavefronts after the one above it
REACH_UP, REACH_LEFT, REACH_RIGHT = 3, 3, 2
#: Bounds of a network that a file may hold (the decoder's work bound assumes the largest).
MAX_CONTEXT, MAX_WIDTH, MAX_DEPTH = len(OFFSETS), 32, 2
MIN_SHIFT, MAX_SHIFT = 3, 12
#: Largest magnitude of a hidden value or an output, and of a stored weight.
ACTIVATION_MAX = 1 << 24
WEIGHT_BITS_MAX = 16
#: The latent grids this coder takes have at most this many bits (symbols within +-127), so
#: that a table has at most 509 residuals.
MAX_GRID_BITS = 8
#: Tabulated scales: b_s = exp(LOG_SCALE_MIN + s / 8), s = 0..SCALES - 1 (0.050 to 131).
LOG_SCALE_MIN, SCALES, MEAN_STEPS = -3.0, 64, 8
#: rho_s = exp(-1 / (8 b_s)) as a fraction of 2^30, rounded: the format's constants, made by
#: round(2^30 exp(-exp(-LOG_SCALE_MIN - s / 8) / 8)) (a test checks the formula).
RHO_BITS = 30
RHO = (
    87200734, 117123255, 151953701, 191202502, 234180717, 280066818, 327975162, 377017902,
    426355219, 475231697, 522998986, 569126358, 613201581, 654924701, 694097187, 730608503,
    764421723, 795559346, 824090090, 850117108, 873767830, 895185476, 914522144, 931933353,
    947573834, 961594406, 974139737, 985346838, 995344120, 1004250911, 1012177308, 1019224279,
    1025483952, 1031040020, 1035968233, 1040336928, 1044207589, 1047635396, 1050669770, 1053354895,
    1055730210, 1057830866, 1059688161, 1061329926, 1062780891, 1064063011, 1065195763, 1066196414,
    1067080267, 1067860873, 1068550229, 1069158954, 1069696440, 1070170993, 1070589961, 1070959834,
    1071286352, 1071574587, 1071829017, 1072053601, 1072251834, 1072426806, 1072581241, 1072717548,
)


class ArmError(ValueError):
    """A network that a file may not hold."""


@dataclass(frozen=True)
class Network:
    """An integer network: per layer, its weights (fan_in, fan_out) and biases (fan_out), int64,
    with ``shift`` fractional bits; ``context`` neighbours (2 ``context`` inputs with their
    magnitudes), ``depth`` hidden layers of ``width``, two outputs (mean, log-scale)."""

    context: int
    width: int
    depth: int
    shift: int
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @staticmethod
    def shapes(context: int, width: int, depth: int) -> list[tuple[int, int]]:
        """Each layer's weights: the hidden layers', then the output layer's, which reads the
        last hidden layer and the neighbours themselves (rows in that order): a linear
        prediction from the neighbours needs no hidden unit."""
        dims = [2 * context] + [width] * depth
        hidden = list(zip(dims[:-1], dims[1:]))
        return hidden + [(width + 2 * context if depth else 2 * context, 2)]

    def values(self) -> np.ndarray:
        """Every weight and bias, in stored order: per layer its weights row by row, then its
        biases."""
        return np.concatenate([a.ravel() for w, b in zip(self.weights, self.biases)
                               for a in (w, b)]).astype(np.int64)

    @classmethod
    def from_values(cls, context: int, width: int, depth: int, shift: int,
                    values: np.ndarray) -> Network:
        weights, biases, at = [], [], 0
        for fan_in, fan_out in cls.shapes(context, width, depth):
            weights.append(values[at:at + fan_in * fan_out].reshape(fan_in, fan_out))
            at += fan_in * fan_out
            biases.append(values[at:at + fan_out])
            at += fan_out
        return cls(context, width, depth, shift, tuple(weights), tuple(biases))

    @staticmethod
    def count(context: int, width: int, depth: int) -> int:
        """Values (weights and biases) of a network of this shape."""
        return sum(a * b + b for a, b in Network.shapes(context, width, depth))


#: The most values a network may have.
MAX_VALUES = Network.count(MAX_CONTEXT, MAX_WIDTH, MAX_DEPTH)


def check_shape(context: int, width: int, depth: int, shift: int) -> None:
    if not 1 <= context <= MAX_CONTEXT:
        raise ArmError(f"its network reads {context} neighbours (1 to {MAX_CONTEXT})")
    if not 0 <= depth <= MAX_DEPTH or not 1 <= width <= MAX_WIDTH:
        raise ArmError(f"its network of {depth} hidden layers of {width} is out of bounds "
                       f"(0 to {MAX_DEPTH} layers of 1 to {MAX_WIDTH})")
    if not MIN_SHIFT <= shift <= MAX_SHIFT:
        raise ArmError(f"its network's shift {shift} is not in {MIN_SHIFT}..{MAX_SHIFT}")


def evaluate(net: Network, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean (in eighths) and the log-scale (in eighths of a natural log) of latents whose
    neighbours are ``contexts`` (N, K), as int64, exactly (module docstring)."""
    x = contexts.astype(np.float64)
    x = np.concatenate([x, np.abs(x)], axis=1)
    inputs = x.shape[1]
    one = float(1 << net.shift)
    h = x
    for layer, (w, b) in enumerate(zip(net.weights, net.biases)):
        w = w.astype(np.float64)
        if layer == len(net.weights) - 1:  # the output: the last hidden layer and the inputs
            h = (np.floor(h @ w[:-inputs] / one) + x @ w[-inputs:]) if layer \
                else x @ w
            h += b
            np.clip(h, -ACTIVATION_MAX, ACTIVATION_MAX, out=h)
            break
        h = np.floor(h @ w / one) if layer else h @ w
        h += b
        np.clip(h, 0, ACTIVATION_MAX, out=h)
    eighths = np.floor((h * 8 + one / 2) / one).astype(np.int64)
    return eighths[:, 0], eighths[:, 1]


def table_index(mean: np.ndarray, log_scale: np.ndarray, qmax: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each latent's integer base floor(mu) and table index frac * SCALES + s, from the network's
    outputs (:func:`evaluate`); the mean is clipped to -qmax..qmax."""
    mean = np.clip(mean, -MEAN_STEPS * qmax, MEAN_STEPS * qmax)
    scale = np.clip(log_scale - round(LOG_SCALE_MIN * MEAN_STEPS), 0, SCALES - 1)
    return mean >> 3, (mean & (MEAN_STEPS - 1)) * SCALES + scale


@functools.lru_cache(maxsize=4)
def _powers(count: int) -> np.ndarray:
    """rho_s^n as fractions of 2^30 (SCALES, count), by integer products, rounded down."""
    rho = np.array(RHO, dtype=np.int64)
    out = np.empty((SCALES, count), dtype=np.int64)
    p = np.full(SCALES, 1 << RHO_BITS, dtype=np.int64)
    for n in range(count):
        out[:, n] = p
        p = (p * rho) >> RHO_BITS
    return out


@functools.lru_cache(maxsize=2 * MEAN_STEPS * SCALES)
def table(qmax: int, index: int) -> rans.Table:
    """The residuals' table (on -2 qmax..2 qmax) of table ``index`` (:func:`table_index`)."""
    frac, scale = divmod(index, SCALES)
    span = 2 * qmax
    # The cumulative distribution at the edges r + 1/2, r = -span - 1..span, in eighths
    # from the mean: n = 8 r + 4 - frac.
    n = MEAN_STEPS * np.arange(-span - 1, span + 1) + MEAN_STEPS // 2 - frac
    powers = _powers(MEAN_STEPS * (span + 1) + MEAN_STEPS)[scale]
    half = 1 << (RHO_BITS - 1)
    cdf = np.where(n >= 0, 2 * half - (powers[np.abs(n)] >> 1), powers[np.abs(n)] >> 1)
    cdf[0], cdf[-1] = 0, 2 * half  # the tails go to the end symbols
    return rans.Table.from_weights(span, np.diff(cdf))


def least_bits(qmax: int) -> float:
    """The fewest bits a latent of a ``qmax`` grid can take out of the stream (the most peaked
    tables' likeliest symbol)."""
    return min(table(qmax, frac * SCALES).least_bits for frac in range(MEAN_STEPS))


# -- the order and the neighbours -------------------------------------------------------------
def _padded(shape: tuple[int, int, int]) -> tuple[int, int]:
    _, h, w = shape
    return h + REACH_UP, w + REACH_LEFT + REACH_RIGHT


def wavefronts(shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """The coding order of a grid (C, H, W): each wavefront's latents as raster indices, every
    plane's of that time, plane by plane, each plane's row by row (made one at a time, so that
    a decoder allocates nothing for latents it never reaches)."""
    c, h, w = shape
    planes = np.arange(c)[:, None] * (h * w)
    for t in range(w - 1 + WAVE * (h - 1) + 1):
        i = np.arange(max(0, -(-(t - w + 1) // WAVE)), min(h - 1, t // WAVE) + 1)
        yield (planes + (i * w + t - WAVE * i)[None, :]).ravel()


def padded_index(shape: tuple[int, int, int], raster: np.ndarray) -> np.ndarray:
    """The flat indices in a padded copy of the grid (:func:`padded_grid`) of raster indices."""
    _, h, w = shape
    ph, pw = _padded(shape)
    plane, rest = np.divmod(raster, h * w)
    i, j = np.divmod(rest, w)
    return plane * (ph * pw) + (i + REACH_UP) * pw + j + REACH_LEFT


def neighbour_offsets(shape: tuple[int, int, int], context: int) -> np.ndarray:
    """The flat offsets of a latent's first ``context`` neighbours in the padded grid."""
    _, pw = _padded(shape)
    return np.array([dy * pw + dx for dy, dx in OFFSETS[:context]], dtype=np.int64)


def padded_grid(grid: np.ndarray) -> np.ndarray:
    """The grid (C, H, W) in its padded copy, flat (zeros around it)."""
    c, h, w = grid.shape
    out = np.zeros((c, *_padded(grid.shape)), dtype=np.int64)
    out[:, REACH_UP:, REACH_LEFT:REACH_LEFT + w] = grid
    return out.ravel()


# -- coding ---------------------------------------------------------------------------------
def grid_tables(grid: np.ndarray, qmax: int, net: Network) -> tuple[np.ndarray, np.ndarray]:
    """Each latent's residual from its base and its table index (int64, raster order)."""
    padded = padded_grid(grid)
    cells = padded_index(grid.shape, np.arange(grid.size))
    contexts = padded[cells[:, None] + neighbour_offsets(grid.shape, net.context)[None, :]]
    base, index = table_index(*evaluate(net, contexts), qmax)
    return grid.reshape(-1).astype(np.int64) - base, index


def frequencies(grid: np.ndarray, qmax: int, net: Network) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies and cumulative frequencies (int32) of a grid's latents, raster order."""
    residual, index = grid_tables(grid, qmax, net)
    freq = np.empty(grid.size, dtype=np.int32)
    cum = np.empty(grid.size, dtype=np.int32)
    for k in np.unique(index).tolist():
        where = index == k
        freq[where], cum[where] = table(qmax, k).lookup(residual[where])
    return freq, cum


def encode_grid(grid: np.ndarray, qmax: int, net: Network) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies and cumulative frequencies of a grid's latents in coding order."""
    order = np.concatenate(list(wavefronts(grid.shape)))
    freq, cum = frequencies(grid, qmax, net)
    return freq[order], cum[order]


def decode_grid(reader: rans.Reader, shape: tuple[int, int, int], qmax: int,
                net: Network) -> np.ndarray:
    """The next grid of ``reader``'s stream (int32, flat C x H x W), coded by
    :func:`encode_grid`; raises RansError if a latent falls outside -qmax..qmax."""
    c, h, w = shape
    near = neighbour_offsets(shape, net.context)
    padded = np.zeros(c * math.prod(_padded(shape)), dtype=np.int64)  # pages touched as decoded
    tables: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    offset = 2 * qmax  # a table's index of residual 0
    x, words, pos, n_words = reader.x, reader.words, reader.pos, len(reader.words)
    slot_mask, precision, low, word = rans.SLOT_MASK, rans.PRECISION, rans.LOW, rans.WORD
    bisect_right = bisect.bisect_right
    for raster in wavefronts(shape):
        cells = padded_index(shape, raster)
        base, index = table_index(*evaluate(net, padded[cells[:, None] + near]), qmax)
        values = []
        for m, k in zip(base.tolist(), index.tolist()):
            if k not in tables:
                t = table(qmax, k)
                tables[k] = (t.freq, t.cum)
            freq, cum = tables[k]
            # The rANS step inlined, as in rans.decode_with and context.decode_planes: a call
            # per latent would cost a third more.
            slot = x & slot_mask
            i = bisect_right(cum, slot) - 1
            x = freq[i] * (x >> precision) + slot - cum[i]
            if x < low:
                if pos == n_words:
                    raise rans.RansError("the stream is cut short")
                x = (x << word) | words[pos]
                pos += 1
            y = i - offset + m
            if not -qmax <= y <= qmax:
                raise rans.RansError("a decoded latent is out of its tensor's range")
            values.append(y)
        padded[cells] = values
        reader.x, reader.pos = x, pos
        reader.check_room(len(cells))  # words that the latents still to come cannot consume
    out = padded.reshape(c, *_padded(shape))[:, REACH_UP:, REACH_LEFT:REACH_LEFT + w]
    return out.astype(np.int32).ravel()


# -- the network's bytes --------------------------------------------------------------------
#: Head of the network in the payload: context, width, depth, shift, the bit depth of its
#: values and their geometric table's ratio (u16); its values then lead the rANS stream.
HEAD_FORMAT = "<5BH"
HEAD_BYTES = struct.calcsize(HEAD_FORMAT)
#: A file without grids stores the head of no network: context 0 and the rest 0.
NO_NETWORK = struct.pack(HEAD_FORMAT, 0, 0, 0, 0, 0, 0)


def value_bits(net: Network) -> int:
    """The bit depth that holds the network's values."""
    peak = int(np.abs(net.values()).max(initial=0))
    return max(2, peak.bit_length() + 1)


def read_head(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """The network's head (context, width, depth, shift, value bits, ratio), validated; context
    0 (no network) has every other field 0."""
    if len(raw) < HEAD_BYTES:
        raise ArmError("the payload is too short for its network's head")
    context, width, depth, shift, bits, ratio = struct.unpack_from(HEAD_FORMAT, raw)
    if context == 0:
        if (width, depth, shift, bits, ratio) != (0, 0, 0, 0, 0):
            raise ArmError("a payload without a network has a non-zero network head")
        return 0, 0, 0, 0, 0, 0
    check_shape(context, width, depth, shift)
    if not 2 <= bits <= WEIGHT_BITS_MAX:
        raise ArmError(f"its network's values have {bits} bits (2 to {WEIGHT_BITS_MAX})")
    if ratio >= rans.RATIO_ONE:
        raise ArmError("its network's ratio is out of range")
    return context, width, depth, shift, bits, ratio


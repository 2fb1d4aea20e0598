"""A range-asymmetric-numeral-system (rANS) coder with static integer frequency tables.

Used by the entropy stage's ``rans`` coder (:mod:`.entropy`). Everything here is integer
arithmetic, so every platform builds the same tables and decodes the same symbols.

- A :class:`Table` covers the symbols -Q..Q of one tensor with frequencies that sum to
  ``2**PRECISION``; every symbol has frequency at least 1, so any symbol in range is codable.
- The state x lives in [LOW, LOW * 2**32): encoding symbol s (frequency f, cumulative c) first
  emits the low 32 bits of x while x >= (LOW >> PRECISION) * 2**32 * f, then sets
  x = (x // f) * 2**PRECISION + x % f + c. Symbols are encoded last to first, so the decoder reads
  them first to last.
- The stream is the final state (8 bytes) followed by the emitted 32-bit words, last emitted
  first, all little-endian. The encoder starts from x = LOW, so a decoder that ends anywhere else,
  or with words left over, has been given a corrupt stream.
- Words the symbols still to come cannot consume are found as soon as they are there: a symbol
  takes at most PRECISION bits (and a little more from the state's rounding,
  :func:`most_words`) out of the state and the words, so a decoder checks, every row of symbols
  or CHECK_EVERY of them, that the words left fit the symbols left; a stream padded with
  surplus words fails there, before they are read.
- Too few words are found before the first symbol: a symbol takes at least some bits out of the
  state, however likely (:attr:`Table.least_bits`), so symbols that declare more than the state
  and the words can give (:func:`least_words`) cannot all decode; a header forged to claim more
  symbols than its stream holds fails at once, not after decoding those it can.

Why our own rather than a library's: the stream is part of the `.inr` format, documented byte by
byte in docs/format.md and decoded by every future version from old files, so its layout and
arithmetic must be ours to fix forever, not a dependency's to change; and the coder is a
hundred lines of integer arithmetic. zstd, the container's compressor, is the library's.
"""

from __future__ import annotations

import array
import bisect
import functools
import math
import struct
import sys
from dataclasses import dataclass

import numpy as np

PRECISION = 24
TOTAL = 1 << PRECISION
LOW = 1 << 31
WORD = 32
WORD_MASK = (1 << WORD) - 1
SLOT_MASK = TOTAL - 1
#: The encoder emits a word before coding a symbol of frequency f when x >= f * EMIT_BOUND.
EMIT_BOUND = (LOW >> PRECISION) << WORD
#: The geometric table's ratio is a u16 fraction of 2**16.
RATIO_ONE = 1 << 16
#: Symbols decoded between two checks that the words left fit the symbols left.
CHECK_EVERY = 4096
#: At a state of at least LOW, floor(x / 2^PRECISION) is at least this share of x / 2^PRECISION
#: short: decoding keeps at most x (1 - g (1 - FLOOR_SLACK)) of a state x for a symbol whose
#: frequency is 2^PRECISION (1 - g), and a word read into a state left at x' >= LOW / 2^PRECISION
#: gives at most WORD + log2(1 + FLOOR_SLACK) bits.
FLOOR_SLACK = TOTAL / LOW


class RansError(ValueError):
    """The stream does not decode: cut short, or not produced by this coder."""


@dataclass(frozen=True)
class Table:
    """Frequencies of the symbols -qmax..qmax (index i is symbol i - qmax); immutable, so that
    the geometric tables, which a decode rebuilds for every tensor and class, are made once
    (:meth:`geometric`)."""

    qmax: int
    freq: tuple[int, ...]
    cum: tuple[int, ...]

    @classmethod
    def from_weights(cls, qmax: int, weights: np.ndarray) -> Table:
        """Frequencies proportional to non-negative int64 ``weights`` (one per symbol), each at
        least 1, summing to TOTAL; what rounding leaves goes to the most likely symbol."""
        n = 2 * qmax + 1
        if not 1 <= n <= TOTAL // 2:
            raise ValueError(f"alphabet of {n} symbols does not fit {PRECISION}-bit frequencies")
        weights = weights.astype(np.int64)
        total = int(weights.sum())
        if total <= 0:
            freq = np.ones(n, dtype=np.int64)
        else:  # weights < 2**33 and TOTAL - n < 2**24: the products fit in int64
            freq = 1 + weights * (TOTAL - n) // total
        freq[int(np.argmax(weights))] += TOTAL - int(freq.sum())
        cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
        return cls(qmax, tuple(freq.tolist()), tuple(cum.tolist()))

    @staticmethod
    def geometric(qmax: int, ratio: int) -> Table:
        """The two-sided geometric distribution p(q) ~ (ratio / 2**16) ** |q| on -qmax..qmax,
        with weights w(0) = 2**32, w(k) = floor(w(k - 1) * ratio / 2**16) (a ratio near 1
        takes a loop over every magnitude, so the tables of small alphabets, which training
        asks for again and again, are made once: :data:`CACHED_TABLES`)."""
        if not 0 <= ratio < RATIO_ONE:
            raise ValueError(f"ratio must be in [0, {RATIO_ONE}), not {ratio}")
        if 2 * qmax + 1 <= SMALL_SYMBOLS:
            return _small_geometric(qmax, ratio)
        return _large_geometric(qmax, ratio)

    def lookup(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frequencies and cumulative frequencies (int32, below TOTAL; flat) of
        ``symbols``."""
        index = symbols.ravel().astype(np.int64) + self.qmax
        return (np.asarray(self.freq, dtype=np.int32)[index],
                np.asarray(self.cum, dtype=np.int32)[index])

    @functools.cached_property
    def least_bits(self) -> float:
        """The fewest bits that decoding a symbol of this table takes out of a state of at
        least LOW (its likeliest symbol's; 0 for a table of one symbol)."""
        g = (TOTAL - max(self.freq)) / TOTAL
        return -math.log1p(-g * (1 - FLOOR_SLACK)) / math.log(2)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Each symbol's ideal code length in bits (float64, read-only; index i is symbol
        i - qmax)."""
        out = PRECISION - np.log2(np.asarray(self.freq, dtype=np.float64))
        out.flags.writeable = False
        return out

    def bits(self, symbols: np.ndarray) -> float:
        """The ideal code length of ``symbols`` under this table, in bits."""
        counts = np.bincount(symbols.astype(np.int64).ravel() + self.qmax,
                             minlength=self.lengths.size)
        return float(np.sum(counts * self.lengths))


#: The geometric tables kept once made, bounded by their size, so that a process that decodes
#: file after file does not grow with the tables they name (a table of the 131,069 residuals of
#: a 16-bit grid takes about 6 MB as two tuples of ints; 512 of them, as a cache by count kept,
#: 3 GB): the last SMALL_TABLES of up to SMALL_SYMBOLS symbols (about 13 MB at most), and the
#: last LARGE_TABLES of more (about 50 MB; one file's synthesis tensors of 12-16 bits name a few).
SMALL_TABLES, SMALL_SYMBOLS = 256, 1025
LARGE_TABLES = 8
#: Symbols that :func:`encode_symbols` turns into Python ints at a time.
ENCODE_CHUNK = 1 << 16


def _geometric(qmax: int, ratio: int) -> Table:
    half = [0] * (qmax + 1)
    w = 1 << 32
    for k in range(qmax + 1):
        if w == 0:
            break
        half[k] = w
        w = (w * ratio) >> 16
    magnitudes = np.array(half, dtype=np.int64)
    return Table.from_weights(qmax, np.concatenate([magnitudes[:0:-1], magnitudes]))


_small_geometric = functools.lru_cache(maxsize=SMALL_TABLES)(_geometric)
_large_geometric = functools.lru_cache(maxsize=LARGE_TABLES)(_geometric)


def encode_symbols(freqs: list[np.ndarray], cums: list[np.ndarray]) -> bytes:
    """One rANS stream of symbols given by their frequencies and cumulative frequencies, in
    coding order (int arrays, pieces of one sequence; each symbol may have its own table).
    rANS codes the symbols last to first; they are taken as Python ints ENCODE_CHUNK at a time,
    so that memory does not grow by the 80 bytes a symbol that whole lists of ints take (2.5 GB
    for the 32 million latents of a 12 MP photo)."""
    words: list[int] = []
    x = LOW
    for freq, cum in zip(reversed(freqs), reversed(cums)):
        for end in range(len(freq), 0, -ENCODE_CHUNK):
            start = max(0, end - ENCODE_CHUNK)
            for f, c in zip(freq[start:end][::-1].tolist(), cum[start:end][::-1].tolist()):
                if x >= f * EMIT_BOUND:
                    words.append(x & WORD_MASK)
                    x >>= WORD
                x = ((x // f) << PRECISION) + x % f + c
    words.reverse()
    return struct.pack(f"<Q{len(words)}I", x, *words)


def encode(streams: list[tuple[np.ndarray, Table]]) -> bytes:
    """One rANS stream of every (symbols, table) pair, in order."""
    looked_up = [table.lookup(symbols) for symbols, table in streams]
    return encode_symbols([f for f, _ in looked_up], [c for _, c in looked_up])


def most_words(symbols: int) -> int:
    """The most 32-bit words that ``symbols`` symbols can consume from a stream in any state.
    Decoding a symbol of frequency f divides the state by at most 2^PRECISION / f after the
    floor of x / 2^PRECISION, which loses less than 1/64 bit at a state of at least LOW; the state
    itself can give up at most 2 * WORD bits. So the symbols take at most
    symbols * (PRECISION + 1/64) + 2 * WORD bits."""
    return (symbols * PRECISION + symbols // 64 + 1 + 2 * WORD) // WORD


def least_words(bits: float) -> int:
    """The fewest 32-bit words of a stream whose symbols take at least ``bits`` bits out of it
    (:attr:`Table.least_bits` of each): its initial state holds fewer than 2 * WORD - 1 bits,
    its final state (LOW) keeps WORD - 1, and each word gives at most WORD + log2(1 +
    FLOOR_SLACK) bits. A bit and a part in 10^9 are given away, for the rounding of floats."""
    need = bits * (1 - 1e-9) - WORD - 1
    return max(0, math.ceil(need / (WORD + math.log2(1 + FLOOR_SLACK))))


class Reader:
    """A stream being decoded: the state ``x``, the words and the next word's position.
    :func:`decode` runs it over tables; a context model (:mod:`.context`) runs the same three
    steps per symbol in its own loop, where each symbol's table depends on those before.
    ``symbols`` is how many symbols the whole stream holds: :meth:`check_room` refuses words
    that the symbols still to come could not consume."""

    def __init__(self, stream: bytes, symbols: int):
        if len(stream) < 8 or (len(stream) - 8) % 4:
            raise RansError(f"a stream of {len(stream)} bytes is not a state and whole words")
        (self.x,) = struct.unpack_from("<Q", stream)
        # Words as an array (4 bytes each; a tuple of Python ints would take 36).
        self.words = array.array("I", stream[8:])
        if sys.byteorder == "big":
            self.words.byteswap()
        self.pos = 0
        self.left = symbols  # symbols not yet decoded
        if not LOW <= self.x < LOW << WORD:
            raise RansError("the stream's initial state is out of range")
        self.check_room(0)

    def check_length(self, least_bits: float) -> None:
        """Raise RansError if the words are too few for symbols that take at least
        ``least_bits`` bits out of the stream (:func:`least_words`): checked before the first
        symbol, so a stream cut short for its symbols fails before any is decoded."""
        need = least_words(least_bits)
        if len(self.words) - self.pos < need:
            raise RansError(f"the stream is cut short: its {len(self.words) - self.pos} words "
                            f"cannot hold {self.left} symbols, which need at least {need}")

    def check_room(self, decoded: int) -> None:
        """Count ``decoded`` more symbols as decoded; raise RansError if the words left are more
        than the symbols left can consume (:func:`most_words`)."""
        self.left -= decoded
        if len(self.words) - self.pos > most_words(max(self.left, 0)):
            raise RansError(f"the stream holds {len(self.words) - self.pos} words that "
                            f"{max(self.left, 0)} symbols cannot consume")

    def finish(self) -> None:
        """Raise RansError unless the stream ended exactly where its encoder began."""
        if self.x != LOW or self.pos != len(self.words):
            raise RansError("the stream does not end where its encoder began")


def decode_with(reader: Reader, count: int, table: Table) -> np.ndarray:
    """The next ``count`` symbols of ``reader``'s stream, all of ``table``."""
    freq, cum, qmax = table.freq, table.cum, table.qmax
    x, words, pos, n_words = reader.x, reader.words, reader.pos, len(reader.words)
    # Pages of the output are touched only as symbols are decoded: a stream that fails early
    # costs memory for what it decoded, not for what its header declared.
    symbols = np.empty(count, dtype=np.int32)
    for start in range(0, count, CHECK_EVERY):
        stop = min(start + CHECK_EVERY, count)
        chunk = [0] * (stop - start)
        for j in range(stop - start):
            slot = x & SLOT_MASK
            i = bisect.bisect_right(cum, slot) - 1
            x = freq[i] * (x >> PRECISION) + slot - cum[i]
            if x < LOW:
                if pos == n_words:
                    raise RansError("the stream is cut short")
                x = (x << WORD) | words[pos]
                pos += 1
            chunk[j] = i - qmax
        symbols[start:stop] = chunk
        reader.x, reader.pos = x, pos
        reader.check_room(stop - start)
    return symbols


def decode(stream: bytes, streams: list[tuple[int, Table]]) -> list[np.ndarray]:
    """The symbols of each (count, table) pair; raises RansError unless the stream is exactly
    one that :func:`encode` wrote for these counts and tables."""
    reader = Reader(stream, sum(count for count, _ in streams))
    reader.check_length(sum(count * table.least_bits for count, table in streams))
    out = [decode_with(reader, count, table) for count, table in streams]
    reader.finish()
    return out

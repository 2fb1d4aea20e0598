"""The entropy stage: every coder inverts exactly, the rANS coder is as short as its model
promises, the context coder's bytes are fixed and its contexts pay, and a bad payload only ever
raises InrFormatError."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zstandard

import inrcodec
from inrcodec import entropy, rans
from inrcodec.errors import InrFormatError

from .helpers import FAST


def laplace_tensors(seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Symbols shaped like a network's: geometric magnitudes, a few tensors of different bits."""
    rng = np.random.default_rng(seed)
    bits = [9, 8, 11, 16, 2]
    scales = [20.0, 6.0, 150.0, 3.0, 0.3]
    sizes = [2000, 700, 300, 50, 40]
    symbols = []
    for b, s, n in zip(bits, scales, sizes):
        qmax = (1 << (b - 1)) - 1
        symbols.append(np.clip(np.round(rng.laplace(0, s, n)), -qmax, qmax).astype(np.int32))
    return symbols, bits


def latent_grids(seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Symbols shaped like a latent family's: smooth, sparse integer grids (C, H, W) of two
    sizes, then a weight matrix and a bias vector."""
    rng = np.random.default_rng(seed)
    ramp = np.subtract.outer(np.arange(12), np.arange(17)) + 2  # a plane: L + U - UL predicts it
    sparse = np.where(rng.random((2, 24, 33)) < 0.1, rng.integers(-3, 4, (2, 24, 33)), 0)
    symbols = [np.stack([ramp, -ramp]).astype(np.int32), sparse.astype(np.int32),
               rng.integers(-40, 41, (6, 5)).astype(np.int32),
               rng.integers(-3, 4, 5).astype(np.int32)]
    return symbols, [5, 3, 8, 4]


@pytest.mark.parametrize("coder", ["zstd", "rans", "context"])
@pytest.mark.parametrize("tensors", [laplace_tensors, latent_grids])
def test_coders_invert_exactly(coder, tensors):
    symbols, bits = tensors()
    payload = entropy.encode(symbols, bits, coder)
    decoded = entropy.decode(payload, [s.shape for s in symbols], bits, coder)
    assert all(np.array_equal(a.ravel(), b) for a, b in zip(symbols, decoded))


def test_the_context_coder_predicts_what_the_grids_hold():
    symbols, bits = latent_grids()
    ramp, ramp_bits = symbols[:1], bits[:1]
    context_bytes = len(entropy.encode(ramp, ramp_bits, "context"))
    assert context_bytes < 0.5 * len(entropy.encode(ramp, ramp_bits, "rans"))
    # The mean of the planar ramp is fitted (about L + U - UL): off the borders, no residual.
    weights, residual, _ = inrcodec.context.analyse(symbols[0], entropy.qmax(5))
    assert weights[3] == 0 and not residual[:, 1:, 1:].any()
    # Tensors of one or two dimensions are coded as the rans coder codes them.
    flat = [s.ravel() for s in symbols]
    assert entropy.encode(flat, bits, "context") == entropy.encode(flat, bits, "rans")


def test_context_coder_bytes_are_fixed():
    # The format's contract for coder 2: these grids are these bytes, everywhere.
    symbols, bits = latent_grids()
    payload = entropy.encode(symbols[:2], bits[:2], "context")
    raw = zstandard.ZstdDecompressor().decompress(payload)
    assert hashlib.sha256(raw).hexdigest()[:16] == EXPECTED_CONTEXT


def test_rans_is_within_bytes_of_its_model_and_shorter_than_zstd():
    symbols, bits = laplace_tensors()
    ideal = sum(rans.Table.geometric(entropy.qmax(b), entropy.geometric_ratio(s)).bits(s)
                for s, b in zip(symbols, bits)) / 8
    rans_bytes = len(entropy.encode(symbols, bits, "rans"))
    # the model's length, the ratios (2 bytes a tensor), the final state (8), a partial word
    # (4) and the zstd frame around it all (measured 12 bytes here)
    assert ideal < rans_bytes <= ideal + 2 * len(symbols) + 8 + 4 + 16
    assert rans_bytes < 0.97 * len(entropy.encode(symbols, bits, "zstd"))


def test_geometric_table_is_exact_integer_arithmetic():
    # ratio 1/2: weights 2^30, 2^31, 2^32, 2^31, 2^30 of 10 * 2^30, scaled to 2^24 - 5, plus one
    table = rans.Table.geometric(2, 1 << 15)
    assert table.freq == (1677722, 3355443, 6710886, 3355443, 1677722)
    assert sum(table.freq) == rans.TOTAL and table.cum[0] == 0
    # a ratio of 0 leaves the other symbols codable at frequency 1
    assert rans.Table.geometric(3, 0).freq == (1, 1, 1, rans.TOTAL - 6, 1, 1, 1)


def test_the_table_cache_is_bounded_by_its_size_not_by_its_count():
    # A process that decodes file after file (hostile ones naming 16-bit tensors and any ratio)
    # keeps only small tables: large ones are made each time, the same.
    small = rans.Table.geometric(7, 40000)
    assert rans.Table.geometric(7, 40000) is small
    big = rans.Table.geometric(2 * 32767, 65000)
    assert rans.Table.geometric(2 * 32767, 65000) is big
    for ratio in range(300):
        rans.Table.geometric(500, ratio)
        rans.Table.geometric(2 * 32767, 60000 + ratio)
    assert rans.Table.geometric(2 * 32767, 65000) is not big  # long gone
    assert rans.Table.geometric(2 * 32767, 65000) == big
    assert rans._small_geometric.cache_info().currsize <= rans.SMALL_TABLES
    assert rans._large_geometric.cache_info().currsize <= rans.LARGE_TABLES
    # Two tuples of ints a table: about 47 bytes a symbol (6.2 MB for 131,069 symbols).
    assert rans.SMALL_TABLES * rans.SMALL_SYMBOLS * 50 < 16 << 20
    assert rans.LARGE_TABLES * (4 * 32767 + 1) * 50 < 64 << 20


def test_extreme_symbols_round_trip():
    qmax = (1 << 15) - 1
    symbols = [np.array([qmax, -qmax, 0, 0, 0, 1], dtype=np.int32),
               np.zeros(1000, dtype=np.int32), np.array([-1], dtype=np.int32)]
    bits = [16, 4, 2]
    payload = entropy.encode(symbols, bits, "rans")
    decoded = entropy.decode(payload, [s.size for s in symbols], bits, "rans")
    assert all(np.array_equal(a, b) for a, b in zip(symbols, decoded))


def test_rans_stream_bytes_are_fixed():
    # The format's contract: these symbols under this table are these bytes, everywhere (the
    # final state, then the two words emitted on the way).
    symbols = np.tile(np.array([0, 1, -1, 2, 0, 0, -3], dtype=np.int32), 4)
    table = rans.Table.geometric(3, 40000)
    assert rans.encode([(symbols, table)]).hex() == EXPECTED_STREAM


EXPECTED_STREAM = "264ca597180000009914e87714bf3d19"
EXPECTED_CONTEXT = "d8faea1481fd60ca"


def corruptions(payload: bytes):
    yield payload[:-1]
    yield payload[:len(payload) // 2]
    for i in range(0, len(payload), max(1, len(payload) // 40)):
        yield payload[:i] + bytes([payload[i] ^ 0x5A]) + payload[i + 1:]
    raw = zstandard.ZstdDecompressor().decompress(payload)
    frame = zstandard.ZstdCompressor(write_content_size=True)
    yield frame.compress(raw[:-4])  # a word short
    yield frame.compress(raw + b"\0\0\0\0")  # a word too many
    yield frame.compress(raw[:6])  # the ratios, no stream
    yield frame.compress(b"\0" * (10 << 20))  # a large frame that is only zeros


@pytest.mark.parametrize("coder, tensors", [("rans", laplace_tensors),
                                            ("context", latent_grids)])
def test_corrupt_payloads_raise_format_errors_only(coder, tensors):
    symbols, bits = tensors(1)
    payload = entropy.encode(symbols, bits, coder)
    sizes = [s.size for s in symbols]
    for bad in corruptions(payload):
        try:
            decoded = entropy.decode(bad, [s.shape for s in symbols], bits, coder)
        except InrFormatError:
            continue
        # a flip that decodes must still give symbols of the right shapes and range
        assert [d.size for d in decoded] == sizes
        assert all(np.abs(d).max() <= entropy.qmax(b) for d, b in zip(decoded, bits))


@pytest.mark.parametrize("coder", ["rans", "context"])
def test_oversized_frame_is_refused_before_decompression(coder):
    symbols, bits = latent_grids(2)
    huge = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * (10 << 20))
    with pytest.raises(InrFormatError, match="at most"):
        entropy.decode(huge, [s.shape for s in symbols], bits, coder)


def test_same_weights_decode_alike_under_either_coder(image):
    # Fixed 8-bit quantisers: both files hold the same symbols, so the same pixels; rans's
    # file is the smaller (measured 3,271 against 3,330 bytes here: 60 steps leave the weights
    # near their uniform initialisation, which a geometric model fits worst).
    files = {coder: inrcodec.compress(image, model="siren", bits=8, steps=60, coder=coder,
                                      hparams={"width": 32}, **FAST) for coder in ("zstd", "rans")}
    assert inrcodec.info(files["rans"].data)["coder"] == "rans"
    assert np.array_equal(inrcodec.decode(files["zstd"].data), inrcodec.decode(files["rans"].data))
    assert files["rans"].bytes < 0.99 * files["zstd"].bytes


def test_unknown_coder_is_an_input_error(image):
    with pytest.raises(inrcodec.InrInputError, match="unknown entropy coder"):
        inrcodec.compress(image, model="siren", steps=1, coder="huffman", **FAST)


@pytest.mark.parametrize("model, coder", [("latent", "context"), ("siren", "rans")])
def test_each_family_writes_its_own_coder_unless_told(model, coder, image):
    small = image[:16, :16]
    blob = inrcodec.encode(small, model=model, bpp=4.0, steps=5, **FAST)
    assert inrcodec.info(blob)["coder"] == coder
    told = inrcodec.encode(small, model=model, bpp=4.0, steps=5, coder="zstd", **FAST)
    assert inrcodec.info(told)["coder"] == "zstd"
    assert inrcodec.decode(told).shape == (16, 16, 3)


def test_a_context_stream_read_with_other_bit_depths_is_a_format_error():
    # A header that lies about a grid's bits changes its tables and range: the stream must then
    # fail as a format error (a latent out of range, a cut or overlong stream), never crash.
    symbols, bits = latent_grids(3)
    payload = entropy.encode(symbols, bits, "context")
    shapes = [s.shape for s in symbols]
    for lie in ([3, 3, 8, 4], [2, 3, 8, 4], [5, 2, 8, 4], [8, 8, 8, 4]):
        with pytest.raises(InrFormatError):
            entropy.decode(payload, shapes, lie, "context")


def test_any_context_model_bytes_decode_or_fail_cleanly():
    # Every weight and ratio value is valid: extreme ones change the residuals, not safety.
    symbols, bits = latent_grids(4)
    grids, grid_bits = symbols[:1], bits[:1]
    payload = entropy.encode(grids, grid_bits, "context")
    raw = bytearray(zstandard.ZstdDecompressor().decompress(payload))
    frame = zstandard.ZstdCompressor(write_content_size=True)
    for model in (bytes([0x80] * 4) + b"\xff\xff" * 4, bytes([0x7F] * 4) + b"\0\0" * 4):
        forged = frame.compress(model + bytes(raw[len(model):]))
        try:
            decoded = entropy.decode(forged, [g.shape for g in grids], grid_bits, "context")
        except InrFormatError:
            continue
        assert np.abs(decoded[0]).max() <= entropy.qmax(grid_bits[0])


def test_sparse_grids_round_trip_through_the_context_coder():
    """Mostly zeros, as a fine latent grid is (the decoder's quick path for a zero amid zeros),
    with values that break the runs: after a run, beside one, under one and at the borders."""
    rng = np.random.default_rng(7)
    grids = []
    for density in (0.0, 0.01, 0.05, 0.3):
        grid = np.where(rng.random((2, 24, 40)) < density,
                        rng.integers(-5, 6, (2, 24, 40)), 0).astype(np.int32)
        grid[0, 0, 0], grid[1, -1, -1], grid[0, 12, 39] = 3, -4, 1
        grids.append(grid)
    bits = [5] * len(grids)
    payload = entropy.encode(grids, bits, "context")
    decoded = entropy.decode(payload, [g.shape for g in grids], bits, "context")
    assert all(np.array_equal(a.ravel(), b) for a, b in zip(grids, decoded))


def test_the_coders_work_in_pieces_that_do_not_change_their_bytes(monkeypatch):
    """A 12 MP photo's latents are analysed in bands of rows and turned into Python ints a
    chunk at a time, so that memory stays bounded: bands of one or two rows and chunks of
    three symbols give the same models, contexts and bytes as whole tensors."""
    symbols, bits = latent_grids(3)
    whole = {coder: entropy.encode(symbols, bits, coder) for coder in ("rans", "context")}
    analysed = inrcodec.context.analyse(symbols[1], entropy.qmax(3))
    monkeypatch.setattr(inrcodec.context, "BAND_VALUES", 40)  # one row of 33, then bands of one
    monkeypatch.setattr(rans, "ENCODE_CHUNK", 3)
    pieces = inrcodec.context.analyse(symbols[1], entropy.qmax(3))
    assert pieces[0] == analysed[0]
    assert np.array_equal(pieces[1], analysed[1]) and np.array_equal(pieces[2], analysed[2])
    for coder, payload in whole.items():
        assert entropy.encode(symbols, bits, coder) == payload
    monkeypatch.setattr(inrcodec.context, "BAND_VALUES", 70)  # two rows a band
    assert entropy.encode(symbols, bits, "context") == whole["context"]

"""Coder 3, ``arm``: the learned entropy model of latent grids. Its integer network is exact and
its tables are the format's, the coder inverts exactly with fixed bytes, the model trained on a
grid codes it in what its float likelihoods promise and in fewer bytes than coder 2, and a
forged network or payload only ever raises InrFormatError."""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest
import torch
import zstandard

import inrcodec
from inrcodec import arm, entropy
from inrcodec.errors import InrFormatError
from inrcodec.training.arm import ArmFit, coded_bits

from .helpers import FAST
from .test_entropy import corruptions, laplace_tensors, latent_grids


def random_network(seed: int = 0, context: int = 8, width: int = 8, depth: int = 1,
                   shift: int = 6, spread: int = 80) -> arm.Network:
    rng = np.random.default_rng(seed)
    values = rng.integers(-spread, spread + 1, arm.Network.count(context, width, depth))
    return arm.Network.from_values(context, width, depth, shift, values)


def smooth_grids(seed: int = 0) -> list[np.ndarray]:
    """Grids whose neighbours tell a lot: random walks along rows, sparse elsewhere."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.laplace(0, 0.6, (2, 40, 48)), axis=2)
    sparse = np.where(rng.random((2, 20, 24)) < 0.15, rng.integers(-2, 3, (2, 20, 24)), 0)
    return [np.clip(np.round(walk), -60, 60).astype(np.int32), sparse.astype(np.int32)]


def test_the_scale_constants_are_the_formula():
    made = [round(2 ** arm.RHO_BITS * math.exp(-math.exp(-arm.LOG_SCALE_MIN - s / 8) / 8))
            for s in range(arm.SCALES)]
    assert list(arm.RHO) == made


def test_a_table_is_the_discretised_laplace_it_names():
    # Scale 1 (s = 24), mean 0 and mean 1/2: within a part in 10^4 of the exact masses.
    for frac, exact in ((0, [1 - math.exp(-0.5)] + [0.5 * math.exp(-(k - 0.5)) * (1 - math.exp(-1))
                                                     for k in (1, 2)]),
                        (4, [0.5 * (1 - math.exp(-1))] * 2)):
        t = arm.table(127, frac * arm.SCALES + 24)
        got = np.array(t.freq[254:254 + len(exact)]) / 2 ** 24
        assert np.allclose(got, exact, atol=1e-4)
        assert sum(t.freq) == 2 ** 24 and min(t.freq) >= 1


def test_the_integer_network_is_exact_at_its_bounds():
    # The largest network, the largest weights and inputs: float64 products of integers that
    # stay below 2^53 are exact, so evaluate() equals Python's unbounded integers.
    rng = np.random.default_rng(1)
    shape = (arm.MAX_CONTEXT, arm.MAX_WIDTH, arm.MAX_DEPTH)
    limit = (1 << (arm.WEIGHT_BITS_MAX - 1)) - 1
    values = rng.choice([-limit, limit, 12345, -1, 0], arm.Network.count(*shape))
    net = arm.Network.from_values(*shape, arm.MAX_SHIFT, values)
    contexts = rng.choice([-127, 127, 3], (64, arm.MAX_CONTEXT)).astype(np.int64)
    mean, log_scale = arm.evaluate(net, contexts)

    def exact(row):
        x = [int(v) for v in row] + [abs(int(v)) for v in row]
        h = x
        for layer, (w, b) in enumerate(zip(net.weights, net.biases)):
            last = layer == len(net.weights) - 1
            n = w.shape[0] - (len(x) if last else 0)
            h = [sum(h[i] * int(w[i, j]) for i in range(n)) for j in range(w.shape[1])]
            h = [(v >> net.shift) if layer else v for v in h]
            if last:
                h = [v + sum(x[i] * int(w[n + i, j]) for i in range(len(x)))
                     for j, v in enumerate(h)]
            h = [v + int(b[j]) for j, v in enumerate(h)]
            lo = -arm.ACTIVATION_MAX if last else 0
            h = [min(max(v, lo), arm.ACTIVATION_MAX) for v in h]
        one = 1 << net.shift
        return [(v * 8 + one // 2) >> net.shift for v in h]

    assert [list(p) for p in zip(mean.tolist(), log_scale.tolist())] == \
        [exact(r) for r in contexts]


@pytest.mark.parametrize("tensors", [laplace_tensors, latent_grids])
def test_the_arm_coder_inverts_exactly(tensors):
    symbols, bits = tensors()
    symbols = [np.clip(s, -127, 127) if s.ndim == 3 else s for s in symbols]
    coder = entropy.ArmCoder(lambda: random_network())
    payload = entropy.encode(symbols, bits, coder)
    decoded = entropy.decode(payload, [s.shape for s in symbols], bits, "arm")
    assert all(np.array_equal(a.ravel(), b) for a, b in zip(symbols, decoded))


def test_arm_coder_bytes_are_fixed():
    grids = smooth_grids()
    payload = entropy.encode(grids, [8, 3], entropy.ArmCoder(lambda: random_network(3)))
    assert hashlib.sha256(payload).hexdigest()[:16] == "c11127511133d258"


def test_the_decode_is_the_same_with_one_thread_or_two():
    grids = smooth_grids(5)
    payload = entropy.encode(grids, [8, 3], entropy.ArmCoder(lambda: random_network(4)))
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(entropy.decode(payload, [g.shape for g in grids], [8, 3], "arm"))
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(*outs))


def test_a_trained_model_codes_what_it_promises_and_beats_the_context_coder():
    # A grid whose means are fractional blends of its neighbours (random walks along rows,
    # averaged with the row above): coder 2's integer predictor cannot follow it.
    rng = np.random.default_rng(6)
    walk = np.cumsum(rng.laplace(0, 0.6, (2, 96, 128)), axis=2)
    grids = [np.clip(np.round(0.5 * (walk + np.roll(walk, 1, axis=1))), -100, 100)
             .astype(np.int32)]
    model = ArmFit()
    model.fit([torch.from_numpy(g).float() for g in grids], 300)
    promised = sum(model.code(torch.from_numpy(g).float())[2] for g in grids)
    net = model.best_integer(grids, [127])
    payload = entropy.encode(grids, [8], entropy.ArmCoder(lambda: net))
    # The integer tables cost what the float likelihoods promise, plus the network's values
    # (measured 37,256 bits against 35,896 promised), and fewer bits than coder 2 (39,824).
    assert promised < 8 * len(payload) <= promised + 8 * 200
    assert abs(8 * len(payload) - coded_bits(net, grids, [127])) < 8 * 30
    assert len(payload) < 0.96 * len(entropy.encode(grids, [8], "context"))


def test_without_a_network_every_tensor_is_coded_as_coder_1_codes_it():
    # A model of another family (or grids without a network): the head says so, and the
    # payload is coder 1's with its seven bytes.
    symbols, bits = latent_grids()
    payload = entropy.encode(symbols, bits, "arm")
    raw = zstandard.ZstdDecompressor().decompress(payload)
    assert raw[:arm.HEAD_BYTES] == arm.NO_NETWORK
    assert raw[arm.HEAD_BYTES:] == zstandard.ZstdDecompressor().decompress(
        entropy.encode(symbols, bits, "rans"))
    decoded = entropy.decode(payload, [s.shape for s in symbols], bits, "arm")
    assert all(np.array_equal(a.ravel(), b) for a, b in zip(symbols, decoded))
    with pytest.raises(ValueError, match="at most 8 bits"):
        entropy.encode(smooth_grids(), [9, 3], entropy.ArmCoder(lambda: random_network()))


def test_corrupt_arm_payloads_raise_format_errors_only():
    symbols, bits = latent_grids(1)
    payload = entropy.encode(symbols, bits, entropy.ArmCoder(lambda: random_network(2)))
    for bad in corruptions(payload):
        try:
            decoded = entropy.decode(bad, [s.shape for s in symbols], bits, "arm")
        except InrFormatError:
            continue
        assert [d.size for d in decoded] == [s.size for s in symbols]
        assert all(np.abs(d).max() <= entropy.qmax(b) for d, b in zip(decoded, bits))


HEAD = dict(context=8, width=8, depth=1, shift=6, bits=9, ratio=30000)


@pytest.mark.parametrize("field, value, message", [
    ("context", 0, "non-zero network head"), ("context", 13, "neighbours"),
    ("width", 0, "out of bounds"), ("width", 33, "out of bounds"),
    ("depth", 3, "out of bounds"), ("shift", 2, "shift"), ("shift", 13, "shift"),
    ("bits", 1, "bits"), ("bits", 17, "bits"), ("ratio", 65535, None)])
def test_a_forged_network_head_is_a_format_error(field, value, message):
    grids = smooth_grids(7)
    payload = entropy.encode(grids, [8, 3], entropy.ArmCoder(lambda: random_network(8)))
    raw = zstandard.ZstdDecompressor().decompress(payload)
    head = {**HEAD, field: value}
    forged = struct.pack(arm.HEAD_FORMAT, *head.values()) + raw[arm.HEAD_BYTES:]
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(forged)
    with pytest.raises(InrFormatError, match=message):
        entropy.decode(frame, [g.shape for g in grids], [8, 3], "arm")


def test_a_grid_of_more_bits_than_the_coder_takes_is_a_format_error():
    grids = smooth_grids(9)
    payload = entropy.encode(grids, [8, 3], entropy.ArmCoder(lambda: random_network(9)))
    with pytest.raises(InrFormatError, match="more than the arm coder"):
        entropy.decode(payload, [g.shape for g in grids], [9, 3], "arm")


def test_every_family_encodes_with_the_arm_coder(image):
    small = image[:24, :24]
    blob = inrcodec.encode(small, model="latent", bpp=6.0, steps=20, coder="arm", **FAST)
    assert inrcodec.info(blob)["coder"] == "arm"
    assert inrcodec.decode(blob).shape == (24, 24, 3)
    fixed = inrcodec.encode(small, model="latent", bits=8, steps=5, coder="arm", **FAST)
    assert inrcodec.decode(fixed).shape == (24, 24, 3)
    siren = inrcodec.encode(small, model="siren", bpp=4.0, steps=5, coder="arm", **FAST)
    assert inrcodec.info(siren)["coder"] == "arm"
    assert inrcodec.decode(siren).shape == (24, 24, 3)


def test_a_coder_3_file_decodes_to_pixels_at_most_a_level_apart_with_one_thread_or_two():
    # The latents decode bit for bit (above); the synthesis is float arithmetic, whose sums
    # may round differently with the threads: at most one 8-bit level (docs/format.md).
    from pathlib import Path
    data = (Path(__file__).resolve().parent / "golden" / "latent-arm.inr").read_bytes()
    before = torch.get_num_threads()
    try:
        pixels = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            pixels.append(inrcodec.decode(data, scale=2).astype(int))
    finally:
        torch.set_num_threads(before)
    assert np.abs(pixels[0] - pixels[1]).max() <= 1

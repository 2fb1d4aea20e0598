"""The SIREN families' sine layers of format version 2 (issue 36): derived phases in place of
stored biases, a frequency factor per neuron, tapered widths; their files round-trip, say version
2, store exactly the tensors the header implies, and forged values are refused."""

from __future__ import annotations

import math
import struct

import pytest
import torch

import inrcodec
from inrcodec.bitstream import load_model
from inrcodec.metrics import psnr
from inrcodec.models import FAMILIES
from inrcodec.models.base import SineLayers, SirenStack
from inrcodec.training import get_trainable

from .helpers import FAST, reseal

LAYERS = {"phases": 1, "spread": 0.25, "ratio": 1.5, "taper": 2.0}
#: PSNR floors (dB) after 300 fast steps, about 2.5 dB under what each family measured here
#: (siren 23.9, gridded 32.4, residual 19.8, dct 16.8; the crop's mean colour alone is 10.8): a
#: network that learns, where a broken layer would not.
FLOORS = {"siren": 21.0, "gridded": 30.0, "residual": 17.0, "dct": 14.0}
#: Per SIREN family, options for a 48 x 64 crop (as tests/test_families.py has them).
OPTIONS = {
    "siren": {},
    "gridded": {"rows": 1, "cols": 2},
    "residual": {"rows": 2, "cols": 2, "cells": 2},
    "dct": {},
}


def test_widths_frequencies_and_phases_follow_the_format():
    layers = SineLayers(phases=True, spread=0.25, ratio=3.0, taper=2.0)
    # width (1 + 2 (1 - i/3)^2), rounded half up: 30, 19 (18.89), 12 (12.22), 10.
    assert layers.widths(10, 4) == [30, 19, 12, 10]
    assert layers.widths(10, 1) == [10]
    assert SineLayers().widths(10, 4) == [10, 10, 10, 10]
    assert layers.frequencies(5, 20.0).tolist() == pytest.approx([15, 17.5, 20, 22.5, 25])
    assert SineLayers().frequencies(5, 20.0).tolist() == [20.0] * 5
    phases = SineLayers.phase(3).tolist()
    expected = [2 * math.pi * ((j * 0.6180339887498949) % 1.0) - math.pi for j in (1, 2, 3)]
    assert phases == pytest.approx(expected, abs=1e-6)


def test_the_stored_tensors_are_what_the_shapes_say():
    layers = SineLayers(phases=True, spread=0.1, ratio=2.0, taper=1.0)
    net = SirenStack(3, 6, 8, 3, 3, 30.0, 30.0, torch.Generator().manual_seed(0), layers)
    stored = [tuple(p.shape) for _, p in net.named_parameters()]
    assert stored == SirenStack.shapes(3, 6, 8, 3, 3, layers)
    # widths 16, 12, 8; no hidden biases, the output's alone
    assert stored == [(3, 6, 16), (3, 16, 12), (3, 12, 8), (3, 8, 3), (3, 1, 3)]
    assert SirenStack.count(3, 6, 8, 3, 3, layers) == sum(math.prod(s) for s in stored)
    out = net(torch.rand(3, 5, 6))
    assert out.shape == (3, 5, 3) and torch.isfinite(out).all()


def test_version_one_layers_compute_what_they_always_did():
    generator = torch.Generator().manual_seed(3)
    net = SirenStack(1, 2, 8, 2, 3, 60.0, 30.0, generator)
    x = torch.rand(1, 7, 2) * 2 - 1
    h = x
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = torch.baddbmm(b, h, w)
        if i < 2:
            h = torch.sin((60.0 if i == 0 else 30.0) * h)
    assert torch.equal(net(x), h)


@pytest.fixture(scope="module", params=list(OPTIONS))
def layered(request, image):
    name = request.param
    return name, inrcodec.compress(image, model=name, bpp=3.0, steps=300, **FAST,
                                   hparams={**LAYERS, **OPTIONS[name]})


def test_a_file_with_sine_layers_round_trips_as_version_two(layered, image):
    name, result = layered
    facts = inrcodec.info(result.data)
    assert facts["format_version"] == 2
    assert {k: facts["hparams"][k] for k in LAYERS} == LAYERS
    decoded = inrcodec.decode(result.data)
    assert psnr(decoded, image) == pytest.approx(result.psnr)
    assert psnr(decoded, image) >= FLOORS[name]
    net = load_model(result.data)
    assert net.n_params() == facts["params"]
    assert inrcodec.parse(result.data).to_bytes() == result.data
    assert inrcodec.decode(result.data, size=(33, 17)).shape == (17, 33, 3)


def test_files_without_sine_layers_stay_version_one(encoded):
    facts = inrcodec.info(encoded.data)
    assert facts["format_version"] == 1
    assert {k: facts["hparams"][k] for k in LAYERS} == {"phases": 0, "spread": 0.0,
                                                          "ratio": 1.0, "taper": 1.0}


def _layers_offset(data: bytes) -> int:
    """Where a version 2 file's sine layers start (after the family's version 1 fields)."""
    facts = inrcodec.info(data)
    family = FAMILIES[facts["model"]]
    encoding = {"none": 0, "positional": 1, "fourier": 10}[facts["encoding"]["kind"]]
    return 11 + encoding + family.schema.size(1)


@pytest.mark.parametrize("field,value", [("phases", 2), ("spread", 0.95), ("ratio", 0.5),
                                         ("taper", 0.0), ("taper", float("nan"))])
def test_forged_sine_layers_are_refused(layered, field, value):
    _, result = layered
    offset = _layers_offset(result.data)
    codes = {"phases": (0, "<B"), "spread": (1, "<e"), "ratio": (3, "<e"), "taper": (5, "<e")}
    at, code = codes[field]
    body = bytearray(result.data[:-4])
    body[offset + at:offset + at + struct.calcsize(code)] = struct.pack(code, value)
    with pytest.raises(inrcodec.InrFormatError, match=field):
        inrcodec.decode(reseal(bytes(body)))


def test_a_version_two_file_must_need_version_two(layered):
    _, result = layered
    offset = _layers_offset(result.data)
    body = bytearray(result.data[:-4])
    body[offset:offset + 7] = struct.pack("<Beee", 0, 0.0, 1.0, 1.0)
    with pytest.raises(inrcodec.InrFormatError, match="those of version 1"):
        inrcodec.decode(reseal(bytes(body)))
    body = bytearray(result.data[:-4])
    body[3] = 3
    with pytest.raises(inrcodec.InrFormatError, match="version 3"):
        inrcodec.decode(reseal(bytes(body)))
    body[3] = 1  # read as version 1, the sine layers are taken for the coder and quantisers
    with pytest.raises(inrcodec.InrFormatError):
        inrcodec.decode(reseal(bytes(body)))


def test_sine_layers_are_refused_where_a_value_cannot_be_stored(image):
    with pytest.raises(inrcodec.InrInputError, match="spread"):
        inrcodec.compress(image, model="siren", bpp=3.0, steps=5, **FAST,
                          hparams={"spread": 1.5})
    assert torch.isfinite(SineLayers(spread=0.9).frequencies(2, 1000.0)).all()


@pytest.mark.parametrize("bpp", [0.12, 0.5, 1.5])
def test_the_gridded_grid_is_sized_for_equal_widths_whatever_the_taper(bpp):
    # The taper reshapes each cell's network within the weights an untapered one would have:
    # the same cells (and so about the same work a step), the last layer narrower.
    sizing = get_trainable("gridded").hparams_for_params
    n = int(bpp * 768 * 512 / 6.5)
    plain = sizing(n, 512, 768, 3, 2, samples=17000 * 4096, ratio=1.0)
    tapered = sizing(n, 512, 768, 3, 2, samples=17000 * 4096, ratio=2.0)
    assert sizing(n, 512, 768, 3, 2, samples=17000 * 4096) == tapered  # the sizing's own choice
    assert (tapered["rows"], tapered["cols"]) == (plain["rows"], plain["cols"])
    assert tapered["width"] < plain["width"]
    weights = SirenStack.count(tapered["rows"] * tapered["cols"], 2, tapered["width"],
                               tapered["depth"], 3, SineLayers.of(tapered))
    assert 0.8 * n <= weights <= n


def test_sizing_tapers_the_networks_only_where_they_stay_wide_enough():
    """The plain SIREN, gridded and residual families taper (``ratio`` 2) where the networks
    spanning the image keep TAPER_MIN_WIDTH units in their last layer, and keep equal widths
    below; a ratio or width the caller gives stands; the DCT head keeps equal widths."""
    from inrcodec.training.siren import TAPER, TAPER_MIN_WIDTH
    siren = get_trainable("siren").hparams_for_params
    gridded = get_trainable("gridded").hparams_for_params
    residual = get_trainable("residual").hparams_for_params
    # Kodak at 0.12 bpp: the SIREN 31 wide tapered; a 48x64 crop at 2 bpp: 10 tapered, 15 not
    assert siren(7000, 512, 768, 3, 2)["ratio"] == TAPER
    assert "ratio" not in siren(750, 48, 64, 3, 2)
    assert siren(750, 48, 64, 3, 2, ratio=2.0)["width"] < TAPER_MIN_WIDTH
    # Kodak at 0.5 bpp: cells of 13 tapered; a 64x80 crop at 1 bpp: one cell, 7 if tapered
    kodak = gridded(30000, 512, 768, 3, 22, samples=17000 * 4096)
    assert kodak["ratio"] == TAPER and kodak["width"] >= TAPER_MIN_WIDTH
    assert "ratio" not in gridded(700, 64, 80, 3, 22, samples=200 * 4096)
    assert gridded(700, 64, 80, 3, 22, samples=200 * 4096, ratio=2.0)["width"] < TAPER_MIN_WIDTH
    assert "ratio" not in gridded(30000, 512, 768, 3, 22, samples=17000 * 4096, width=13)
    assert residual(30000, 512, 768, 3, 22, samples=4000 * 4096)["ratio"] == TAPER
    assert "ratio" not in residual(1500, 128, 192, 3, 22, samples=4000 * 4096)
    assert residual(30000, 512, 768, 3, 22, samples=4000 * 4096, ratio=1.0)["ratio"] == 1.0
    assert "ratio" not in get_trainable("dct").hparams_for_params(30000, 512, 768, 3, 26)

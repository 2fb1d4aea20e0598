"""Every model family: round trip, any-scale decode, hyper-parameters from the file alone, and
forged hyper-parameters refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

import inrcodec
from inrcodec.bitstream import load_model
from inrcodec.metrics import psnr
from inrcodec.options import EncodeOptions
from inrcodec.presets import PRESETS
from inrcodec.color import ColorTransform
from inrcodec.encodings import Encoding
from inrcodec.models import FAMILIES
from inrcodec.models.dct import zigzag
from inrcodec.models.tiling import Tiling
from inrcodec.training.dct import DctFit

from .helpers import FAST, crop, reseal

#: Options per family for a 48 x 64 crop at 3 bpp, 500 steps; the residual family gets a grid
#: small enough to matter on so small an image.
OPTIONS = {
    "siren": {},
    "gridded": {"hparams": {"rows": 1, "cols": 2}},
    "residual": {"hparams": {"rows": 2, "cols": 2, "cells": 2}},
    "dct": {},
    "latent": {},
}
#: PSNR floors (dB), about 2.5 dB under what each family measured here (in brackets), so that a
#: broken family fails while noise passes: siren [28.7], gridded [25.4], residual [24.9],
#: dct [24.5], latent [28.4]. (On a 48 x 64 crop the grids leave each network tiny; Kodak is
#: another story.)
FLOORS = {"siren": 26.0, "gridded": 23.0, "residual": 22.5, "dct": 22.0, "latent": 26.0}


@pytest.fixture(scope="module", params=list(OPTIONS))
def family_result(request, image):
    name = request.param
    return name, inrcodec.compress(image, model=name, bpp=3.0, steps=500, **FAST,
                                   **OPTIONS[name])


def test_every_family_is_tested():
    assert set(OPTIONS) == set(FAMILIES)


def test_round_trip_over_floor(family_result, image):
    name, result = family_result
    decoded = inrcodec.decode(result.data)
    assert psnr(decoded, image) >= FLOORS[name]
    assert psnr(decoded, image) == pytest.approx(result.psnr)
    assert result.bpp <= 3.0 * 1.005


def test_scale_two_and_size(family_result, image):
    _, result = family_result
    h, w = image.shape[:2]
    assert inrcodec.decode(result.data, scale=2).shape == (2 * h, 2 * w, 3)
    assert inrcodec.decode(result.data, size=(33, 17)).shape == (17, 33, 3)


def test_hyper_parameters_come_from_the_file_alone(family_result):
    name, result = family_result
    facts = inrcodec.info(result.data)
    assert facts["model"] == name
    net = load_model(result.data)
    assert net.hparams == facts["hparams"]
    assert net.n_params() == facts["params"] == result.params
    assert net.describe() == result.description


def test_info_shows_the_hyper_parameters(family_result):
    from typer.testing import CliRunner

    from inrcodec_cli.main import app
    name, result = family_result
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".inr") as f:
        f.write(result.data)
        f.flush()
        out = CliRunner().invoke(app, ["info", f.name]).stdout
    assert name in out
    for key in inrcodec.info(result.data)["hparams"]:
        assert f"{key}=" in out



def forge(data: bytes, field: str, value) -> bytes:
    """Rewrite one hyper-parameter in place, with a valid checksum."""
    facts = inrcodec.info(data)
    family = FAMILIES[facts["model"]]
    offset = 11 + {"none": 0, "positional": 1, "fourier": 10}[facts["encoding"]["kind"]]
    for f in family.schema.fields:
        if f.name == field:
            body = bytearray(data[:-4])
            body[offset:offset + f.size] = struct.pack("<" + f.code, value)
            return reseal(bytes(body))
        offset += f.size
    raise KeyError(field)


BAD = {
    "siren": [("depth", 0), ("w0", float("inf"))],
    "gridded": [("rows", 0), ("cols", 65), ("overlap", 0.75)],
    "residual": [("cells", 5), ("rows", 0), ("res_depth", 40)],
    "dct": [("coeffs", 65), ("chroma_coeffs", 30), ("block", 1)],
    "latent": [("levels", 0), ("channels", 9), ("depth", 5), ("upsampling", 3)],
}


def test_forged_hyper_parameters_are_refused(family_result):
    name, result = family_result
    for field, value in BAD[name]:
        with pytest.raises(inrcodec.InrFormatError):
            load_model(forge(result.data, field, value))


#: The latent family's rate is what its training makes of the latents, so its rate control is
#: tested on a fit long enough for them to grow.
RATE_STEPS = {"latent": 500}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_rate_control_for_every_family(name, image):
    for bpp in (1.5, 4.0):
        result = inrcodec.compress(image, model=name, bpp=bpp, steps=RATE_STEPS.get(name, 30),
                                   **FAST)
        assert 0.75 * bpp <= result.bpp <= 1.005 * bpp, (name, bpp, result.bpp)


def test_gridded_blend_weights_are_a_partition_of_unity():
    tiling = Tiling(60, 90, rows=3, cols=4, overlap=0.2)
    ys = torch.linspace(0, 60, 97)[:-1]
    xs = torch.linspace(0, 90, 131)[:-1]
    total = sum(tiling.window(g, ys, xs) for g in range(tiling.groups))
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    hard = Tiling(60, 90, rows=3, cols=4, overlap=0.0)
    total = sum(hard.window(g, ys, xs) for g in range(hard.groups))
    assert torch.equal(total, torch.ones_like(total))


def test_residual_bitmap_is_validated(image):
    result = inrcodec.compress(image, model="residual", bpp=3.0, steps=40, **FAST,
                               hparams={"rows": 2, "cols": 2, "cells": 2})
    facts = inrcodec.info(result.data)
    assert len(facts["extra"]["cells"]) == 2
    net = load_model(result.data)
    # The bitmap byte follows the 16 hyper-parameter bytes (no encoding parameters here: L=4
    # positional has one).
    offset = 11 + 1 + 16
    body = bytearray(result.data[:-4])
    for forged in (0b0111, 0b0001, 0b10000):
        body[offset] = forged
        with pytest.raises(inrcodec.InrFormatError, match="bitmap"):
            load_model(reseal(bytes(body)))
    assert net.extra["cells"] == facts["extra"]["cells"]


def test_dct_renders_the_exact_inverse_transform_at_scale_one():
    rng = np.random.default_rng(1)
    pixels = torch.from_numpy(rng.random((16, 24, 3), dtype=np.float32))
    color = ColorTransform("ycbcr", 3)
    hp = {"block": 8, "coeffs": 64, "chroma_coeffs": 64, "width": 4, "depth": 1,
          "w0_first": 30.0, "w0": 30.0}
    net = DctFit(16, 24, color, hp, Encoding("none"))  # its encode side computes the DCT
    target = color.forward(pixels)
    coefficients = net.block_coefficients(target)  # (N, C, 64)
    stored = coefficients.reshape(coefficients.shape[0], -1)
    net.forward = lambda coords: stored.reshape(1, -1, stored.shape[-1])[:, :coords.shape[1]] \
        if coords.shape[1] == stored.shape[0] else _rows(net, stored, coords)
    rendered = net.render()
    assert torch.allclose(rendered, target, atol=1e-5)


def _rows(net, stored, coords):
    raise AssertionError("render should evaluate all blocks of the 16-row image at once")


def test_dct_zigzag_matches_jpeg():
    assert zigzag(8)[:10] == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2),
                              (2, 1), (3, 0)]
    assert sorted(zigzag(8)) == [(r, c) for r in range(8) for c in range(8)]


def test_grey_images_work_in_every_family():
    grey = crop()[..., 0]
    for name in FAMILIES:
        result = inrcodec.compress(grey, model=name, bpp=3.0, steps=30, **FAST,
                                   **OPTIONS[name])
        assert inrcodec.decode(result.data, scale=2).shape == (96, 128)


def test_tabulated_training_samples_match_the_direct_computation():
    tiling = Tiling(50, 70, rows=3, cols=4, overlap=0.1, cells=[0, 5, 11])
    iy, ix, coords, weights = tiling.sample_batch(torch.Generator().manual_seed(3), 64)
    y, x = iy.float() + 0.5, ix.float() + 0.5
    assert torch.allclose(coords, tiling.local(y, x), atol=1e-5)
    assert torch.allclose(weights, tiling.weights(y, x), atol=1e-6)


def test_gridded_depth_follows_rate_and_training_visits():
    # A Kodak-sized image at 0.5 bpp (about 30,000 weights): depth 4 when the default effort's
    # 17,000 x 4,096 samples visit each pixel 177 times, or each of the best effort's cycles
    # does; depth 3 when the fast effort's 2,000 steps visit it 21 times or one cosine of
    # 100,000 steps 1,041 times, and depth 3 at 1 bpp whatever the steps.
    from inrcodec.training.gridded import GriddedFit as Gridded
    sizing = dict(height=512, width=768, channels=3, encoding_dim=22)
    default, fast = (PRESETS["gridded"][e].schedule.steps * 4096 for e in ("default", "fast"))
    best = PRESETS["gridded"]["best"].schedule
    best_cycle = best.steps // best.cycles * 4096
    assert Gridded.hparams_for_params(30000, *sizing.values(), samples=default)["depth"] == 4
    assert Gridded.hparams_for_params(30000, *sizing.values(), samples=best_cycle)["depth"] == 4
    assert Gridded.hparams_for_params(30000, *sizing.values(), samples=fast)["depth"] == 3
    assert Gridded.hparams_for_params(30000, *sizing.values(), samples=100000 * 4096)["depth"] == 3
    assert Gridded.hparams_for_params(60000, *sizing.values(), samples=default)["depth"] == 3
    assert Gridded.hparams_for_params(30000, *sizing.values(), samples=fast, depth=5)["depth"] == 5


def test_gridded_best_effort_sizes_a_larger_network_with_less_overlap():
    # The best effort's preset: at the best effort the same rate buys more weights (5.5 bits a weight, not
    # 6.5) and cells overlap by 1/32, not 1/16; the caller's hyper-parameters still win.
    image = crop(64, 96)
    options = dict(model="gridded", bpp=2.0, steps=4, compile=False)
    default = inrcodec.compress(image, **options)
    best = inrcodec.compress(image, effort="best", **options)
    assert "overlap=0.0625" in default.description and "overlap=0.03125" in best.description
    assert best.params > 1.1 * default.params
    assert len(best.data) <= 1.005 * 2.0 * 96 * 64 / 8
    pinned = inrcodec.compress(image, effort="best", hparams={"overlap": 0.125}, **options)
    assert "overlap=0.125" in pinned.description


def test_a_second_start_keeps_each_cells_better_network_and_counts_its_steps():
    # With one cycle and no overlap, two starts keep each cell's better network of the two
    # (the first start is the single-start fit itself), so the fit is no worse anywhere; the
    # progress bar counts the second start's steps. The best effort gives gridded two starts.
    image = crop(64, 96)
    options = dict(model="gridded", bpp=2.0, steps=40, compile=False,
                   hparams={"overlap": 0.0, "rows": 2, "cols": 3})
    seen = []
    one = inrcodec.compress(image, **options)
    two = inrcodec.compress(image, starts=2, progress=seen.append, **options)
    assert two.report.stages[0].psnr >= one.report.stages[0].psnr
    assert two.data != one.data
    assert seen[-1].step == seen[-1].total == 80
    assert EncodeOptions(model="gridded", effort="best").schedule().starts == 2


def test_rounding_one_tensor_at_a_time_lets_the_others_make_up_for_it():
    # Schedule.progressive_steps: each tensor is rounded in turn and the ones not yet rounded
    # train on; the progress bar counts those steps too. Measured here: +0.39 dB.
    image = crop(64, 96)
    options = dict(model="gridded", bpp=2.0, steps=600, compile=False)
    seen = []
    plain = inrcodec.compress(image, **options)
    rounded = inrcodec.compress(image, progressive_steps=900, progress=seen.append, **options)
    assert rounded.psnr > plain.psnr + 0.2
    assert abs(len(rounded.data) - len(plain.data)) <= 0.05 * len(plain.data)
    assert seen[-1].step == seen[-1].total == 1500
    best = EncodeOptions(model="gridded", effort="best")
    assert best.schedule().progressive_steps == 9000
    assert best.replace(training={"steps": 6800}).schedule().progressive_steps == 900  # share
    assert EncodeOptions(model="gridded").schedule().progressive_steps == 0

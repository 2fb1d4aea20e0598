"""Encode/decode round trips through the library API."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import inrcodec
from inrcodec.metrics import psnr

from .helpers import FAST, crop


def test_round_trip_reaches_psnr_floor(encoded, image):
    # Measured 26.6 dB (31.8 dB before quantisation) for this crop at 2 bpp after 600 steps; a
    # broken trainer, quantiser or coder lands far below.
    decoded = inrcodec.decode(encoded.data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(decoded, image) >= 24.5
    assert psnr(decoded, image) == pytest.approx(encoded.psnr)


def test_reported_size_is_the_whole_file(encoded, image):
    assert encoded.bytes == len(encoded.data)
    assert encoded.bpp == 8 * len(encoded.data) / (image.shape[0] * image.shape[1])
    facts = inrcodec.info(encoded.data)
    assert facts["bytes"] == len(encoded.data)
    assert facts["header_bytes"] + facts["payload_bytes"] + 4 == len(encoded.data)


def test_bpp_lands_within_the_promised_bound(encoded):
    assert 0.85 * 2.0 <= encoded.bpp <= 1.005 * 2.0


@pytest.mark.parametrize("bpp", [1.0, 4.0])
def test_bpp_bound_at_other_rates(image, bpp):
    result = inrcodec.compress(image, bpp=bpp, steps=100, **FAST)
    assert 0.8 * bpp <= result.bpp <= 1.005 * bpp


def test_scale_two_doubles_both_sides(encoded, image):
    h, w = image.shape[:2]
    assert inrcodec.decode(encoded.data, scale=2).shape == (2 * h, 2 * w, 3)
    assert inrcodec.decode(encoded.data, scale=0.5).shape == (h // 2, w // 2, 3)


def test_size_gives_the_exact_size(encoded):
    assert inrcodec.decode(encoded.data, size=(101, 37)).shape == (37, 101, 3)


def test_scale_two_samples_between_original_pixels(encoded):
    # Pixel centres are the same continuous points at every scale: the 2x render, averaged over
    # 2x2 blocks, is close to the 1x render (a real resampling, not a shifted grid).
    one = inrcodec.decode(encoded.data).astype(np.float64)
    two = inrcodec.decode(encoded.data, scale=2).astype(np.float64)
    pooled = two.reshape(one.shape[0], 2, one.shape[1], 2, 3).mean(axis=(1, 3))
    assert np.abs(pooled - one).mean() < 4.0


def test_same_seed_same_bytes(image):
    a = inrcodec.encode(image, bpp=2.0, steps=60, seed=3, **FAST)
    b = inrcodec.encode(image, bpp=2.0, steps=60, seed=3, **FAST)
    c = inrcodec.encode(image, bpp=2.0, steps=60, seed=4, **FAST)
    assert a == b
    assert a != c


def test_accepts_pil_images_and_paths(tmp_path, image):
    path = tmp_path / "in.png"
    Image.fromarray(image).save(path)
    from_path = inrcodec.encode(str(path), bpp=2.0, steps=30, **FAST)
    from_pil = inrcodec.encode(Image.fromarray(image), bpp=2.0, steps=30, **FAST)
    assert from_path == from_pil


def test_grey_images_are_encoded_with_one_channel():
    grey = crop()[..., 1]
    result = inrcodec.compress(grey, bpp=2.0, steps=300, **FAST)
    assert inrcodec.info(result.data)["channels"] == 1
    decoded = inrcodec.decode(result.data)
    assert decoded.shape == grey.shape  # (H, W), as np.asarray of a grey Pillow image
    assert psnr(decoded, grey) >= 24.5  # measured 26.8 dB
    assert inrcodec.decode(result.data, size=(20, 10)).shape == (10, 20)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.data))), decoded)


def test_explicit_hyper_parameters_are_kept(image):
    result = inrcodec.compress(image, model="siren", bpp=2.0, steps=20,
                               hparams={"width": 20, "depth": 2}, **FAST)
    assert inrcodec.info(result.data)["hparams"]["width"] == 20
    assert inrcodec.info(result.data)["hparams"]["depth"] == 2
    assert result.params == (2 * 20 + 20) + (20 * 20 + 20) + (20 * 3 + 3)


def test_quality_maps_to_rate():
    assert inrcodec.quality_to_bpp(1) == pytest.approx(0.05)
    assert inrcodec.quality_to_bpp(100) == pytest.approx(2.0)
    assert inrcodec.quality_to_bpp(50) < inrcodec.quality_to_bpp(51)


@pytest.mark.parametrize("slope, offset, target", [
    (2.3, 27.0, 30.0), (1.5, 31.0, 26.0), (3.0, 25.0, 35.0), (4.0, 22.0, 26.0), (2.0, 29.5, 30.0)])
def test_a_psnr_search_finds_a_rate_near_the_smallest_that_reaches_the_target(slope, offset,
                                                                               target):
    # A curve of `slope` dB per doubling through (0.5 bpp, offset), with fit-to-fit noise of
    # up to 0.1 dB: within 6 fits, a rate that reaches the target and is at most 10% above
    # the one that exactly does.
    from inrcodec.ratecontrol import PSNR_SEARCH_FITS, PsnrSearch
    noise = np.random.default_rng(0)
    search = PsnrSearch(target)
    while (bpp := search.propose()) is not None:
        search.record(bpp, offset + slope * np.log2(bpp / 0.5) + noise.uniform(-0.1, 0.1))
    reached = [b for b, p in search.tried if p >= target]
    ideal = 0.5 * 2 ** ((target - offset) / slope)
    assert len(search.tried) <= PSNR_SEARCH_FITS and reached
    assert ideal * 0.97 <= min(reached) <= ideal * 1.10


def test_a_psnr_target_gives_the_smallest_file_tried_that_reaches_it():
    stages = set()
    result = inrcodec.compress(crop(96, 128), model="gridded", psnr=22.0, steps=100, **FAST,
                               progress=lambda p: stages.add(p.stage))
    assert result.psnr >= 22.0  # measured: 22.93 dB at 0.478 bpp after 4 fits
    # Reached from a first guess for Kodak-like images (0.125 bpp): more than one fit.
    labels = {s.split(", ")[-1] for s in stages}
    assert len(labels) >= 2 and all(label.startswith("fit ") for label in labels)
    with pytest.warns(inrcodec.InrWarning, match="59.00 dB was not reached"):
        best = inrcodec.compress(crop(16, 16), model="gridded", psnr=59.0, steps=10, **FAST)
    assert best.psnr < 59.0


def test_the_best_effort_keeps_the_better_of_the_default_encode_and_its_long_run(monkeypatch):
    # The best effort is the default's encode and the best schedule's, keeping the higher PSNR:
    # never worse than the default at the same rate, even where the long run ends lower.
    from inrcodec.presets import PRESETS, Preset, Schedule
    monkeypatch.setitem(PRESETS["siren"], "default", Preset(Schedule(steps=60)))
    options = dict(model="siren", bpp=4.0, compile=False)
    image = crop(16, 16)
    default = inrcodec.compress(image, **options)
    monkeypatch.setitem(PRESETS["siren"], "best", Preset(Schedule(steps=3)))  # loses
    assert inrcodec.compress(image, effort="best", **options).data == default.data
    monkeypatch.setitem(PRESETS["siren"], "best", Preset(Schedule(steps=400)))  # wins
    seen = []
    best = inrcodec.compress(image, effort="best", progress=seen.append, **options)
    assert best.psnr > default.psnr + 1 and best.data != default.data
    # one bar over both runs: steps never go back and end at the two runs' total
    assert [p.step for p in seen] == sorted(p.step for p in seen)
    assert {p.total for p in seen} == {460} and seen[-1].step == 460
    assert "default run" in seen[0].stage and "long run" in seen[-1].stage
    # a schedule set by the caller is that encode alone
    alone = inrcodec.compress(image, effort="best", steps=3, **options)
    assert alone.psnr < default.psnr


@pytest.mark.parametrize("options, message", [
    (dict(bpp=0.5, quality=50), "one of bpp, quality and psnr"),
    (dict(psnr=30, bpp=0.5), "one of bpp, quality and psnr"),
    (dict(psnr=80), "psnr must be in"),
    (dict(effort="slow"), "unknown effort"),
    (dict(model="jpeg"), "unknown model"),
    (dict(bpp=0.01), "too few"),
    (dict(steps=0), "steps"),
    (dict(hparams={"width": 0}), "width"),
    (dict(encoding="wavelet"), "encoding"),
])
def test_bad_options_raise_input_errors(image, options, message):
    with pytest.raises(inrcodec.InrInputError, match=message):
        inrcodec.compress(image, **{**FAST, "steps": 5, **options})


def test_decode_refuses_absurd_output_sizes(encoded):
    with pytest.raises(inrcodec.InrInputError, match="scale 10000 is too large"):
        inrcodec.decode(encoded.data, scale=10000)
    with pytest.raises(inrcodec.InrInputError, match="scale"):
        inrcodec.decode(encoded.data, scale=-1)


def test_device_choice(image, encoded):
    import torch
    from inrcodec.decoder import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(inrcodec.InrInputError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(inrcodec.InrInputError, match="CUDA"):
            inrcodec.compress(image, bpp=2.0, steps=5, device="cuda", **FAST)
    else:  # a file encoded on the GPU decodes on the CPU to within one level of the GPU decode
        data = inrcodec.encode(image, bpp=2.0, steps=50, device="cuda", **FAST)
        cpu = inrcodec.decode(data).astype(int)
        gpu = inrcodec.decode(data, device="cuda").astype(int)
        assert np.abs(cpu - gpu).max() <= 1


def test_compiled_fits_may_outnumber_dynamos_default_graph_limit():
    """A batch encode compiles a training step per model shape; with fullgraph=True, Dynamo's
    default limit of eight graphs per function would end the ninth encode with an error."""
    import torch._dynamo
    from inrcodec import fit
    saved = torch._dynamo.config.recompile_limit
    try:
        torch._dynamo.config.recompile_limit = 8
        fit._prepare_dynamo()
        assert torch._dynamo.config.recompile_limit >= fit.RECOMPILE_LIMIT >= 100
    finally:
        torch._dynamo.config.recompile_limit = saved

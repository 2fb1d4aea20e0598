"""What an encode tells its user while it runs, and what it refuses before it starts: the
warning before a long encode, the time left, the bar at 80 columns, and the limits that the
encoder shares with the decoder."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console
from typer.testing import CliRunner

import inrcodec
from inrcodec import decoder, limits, pace
from inrcodec.container import InrFile
from inrcodec.fit import Progress
from inrcodec.models import FAMILIES, get_family
from inrcodec.training import get_trainable
from inrcodec.ratecontrol import check_decodable
from inrcodec_cli import progress as bars
from inrcodec_cli.main import app

from .helpers import FAST, crop


class Clock:
    """A stand-in for time.perf_counter."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_time_left_follows_the_measured_pace_and_counts_the_tail(monkeypatch):
    # The model says 1 s a step; this machine takes 2 s. After the first report (whose time
    # includes compiling the step), the time left is the steps left at 2 s plus the tail,
    # scaled by the same factor; before enough is measured, the model's figure.
    clock = Clock()
    monkeypatch.setattr(pace.time, "perf_counter", clock)
    estimate = pace.Estimate(setup=10.0, training=100.0, tail=20.0, steps=100)
    timer = pace.Pace(estimate)
    assert timer.left() == pytest.approx(130.0)
    clock.now += 30  # setup and the compiled first step
    timer.report(1, 100)
    assert timer.left() == pytest.approx(99 * 1.0 + 20)  # one report: the model's pace
    for step in range(2, 52):
        clock.now += 2.0
        timer.report(step, 100)
    assert timer.factor() == pytest.approx(2.0)
    assert timer.left() == pytest.approx(2.0 * (49 * 1.0 + 20.0))
    for step in range(52, 101):
        clock.now += 2.0
        timer.report(step, 100)
    clock.now += 15
    assert timer.left() == pytest.approx(2.0 * 20.0 - 15)  # the tail, counting down
    clock.now += 100
    assert timer.left() == 0.0


def test_the_time_left_follows_a_pace_that_drifts(monkeypatch):
    # 2 s a step for 100 steps, then 1 s: the pace of the later half of the steps done.
    clock = Clock()
    monkeypatch.setattr(pace.time, "perf_counter", clock)
    timer = pace.Pace(pace.Estimate(0.0, 1000.0, 0.0, 1000))
    for step in range(1, 401):
        clock.now += 2.0 if step <= 100 else 1.0
        timer.report(step, 1000)
    assert timer.factor() == pytest.approx(1.0)
    assert timer.left() == pytest.approx(600.0)


def test_a_one_off_spike_does_not_inflate_the_pace(monkeypatch):
    # Coder 3's network fitted to the latents: one step of 30 s among steps of 1 s.
    clock = Clock()
    monkeypatch.setattr(pace.time, "perf_counter", clock)
    timer = pace.Pace(pace.Estimate(0.0, 1000.0, 0.0, 1000))
    for step in range(1, 401):
        clock.now += 30.0 if step == 300 else 1.0
        timer.report(step, 1000)
    assert timer.factor() == pytest.approx(1.0)


def test_the_eta_of_a_run_counts_the_runs_after_it(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(pace.time, "perf_counter", clock)
    first = pace.Estimate(1.0, 10.0, 1.0, 10)
    second = pace.Estimate(1.0, 80.0, 1.0, 80)
    timer = pace.Pace(first, second)
    assert timer.left() == pytest.approx(12.0 + 82.0)
    seen = []
    relay = timer.relay(seen.append)
    relay(Progress("latent", 0, 10, None))
    assert seen[-1].eta == pytest.approx(94.0)


def test_the_cost_model_grows_with_the_model_and_reads_in_words():
    small = pace.estimate("latent", 1500, 1_000_000)
    large = pace.estimate("latent", 1500, 32_000_000)
    # A Kodak image and a 12 MP photo at the default effort: 43 s and 1,207 s measured.
    assert 20 < small.seconds < 90 < 900 < large.seconds < 1800
    assert 200 < pace.estimate("latent", 300, 32_000_000).seconds < 400  # fast: 280 s measured
    assert pace.describe(40) == "40 seconds"
    assert pace.describe(17 * 60 + 10) == "17 minutes"
    assert pace.describe(80 * 60) == "1 hour 20 minutes"


def test_a_long_encode_is_announced_before_it_starts(monkeypatch, tmp_path):
    # The cost model's threshold lowered, so that a small encode counts as long: the line comes
    # before the bar and names the time and what goes faster.
    from PIL import Image
    monkeypatch.setattr(pace, "LONG_ENCODE", 0.0)
    png = tmp_path / "in.png"
    Image.fromarray(crop()).save(png)
    result = CliRunner().invoke(app, ["encode", str(png), "-o", str(tmp_path / "a.inr"),
                                      "--bpp", "2", "--effort", "default", "--steps", "20",
                                      "--hparam", "compile=false"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("inr: warning: this 64x48 image at the default effort will take "
                               "about "), lines[0]
    assert "on two CPU cores; a 32x24 copy of the image about" in lines[0]
    with pytest.warns(inrcodec.InrWarning, match="a 32x24 copy of the image about"):
        inrcodec.encode(crop(), bpp=2, steps=5, compile=False)


def test_the_announcement_names_the_faster_effort_and_a_smaller_copy():
    from inrcodec.encoder import _announce
    from inrcodec.options import EncodeOptions
    twelve = pace.estimate("latent", 1500, 32_000_000)
    with pytest.warns(inrcodec.InrWarning) as caught:
        _announce(twelve, "latent", 32_000_000, 3000, 4000, EncodeOptions(), 1)
    text = str(caught[0].message)
    assert text.startswith("this 4000x3000 image at the default effort will take about ")
    assert "minutes on two CPU cores; --effort fast takes about" in text
    assert "a 2000x1500 copy of the image about" in text


def test_the_bar_keeps_its_numbers_at_80_columns_and_labels_the_training_psnr(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(bars, "stderr", Console(file=out, width=80, color_system=None))
    name = "/a/very/long/folder/name/that/goes/on/and/on/photograph-from-the-holiday.png"
    with bars.encode_progress(name) as update:
        update(Progress("starting", 0, 1500, None, eta=1000.0))
        update(Progress("latent", 150, 1500, 25.09, eta=900.0))
        update(Progress("latent", 1500, 1500, 25.4, eta=0.0))
    text = out.getvalue()
    last = [line for line in text.splitlines() if line.strip()][-1]
    assert "1500/1500" in last and "train 25.40 dB" in last and "ETA 0:00:00" in last, last
    assert "…" in text and "holiday.png" in text
    assert "-:--:--" not in text  # the estimate is shown from the first report on


def test_the_clock_runs_on_through_the_fits_of_a_quality_search(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(bars, "stderr", Console(file=out, width=120, color_system=None))
    now = [0.0]
    monkeypatch.setattr(bars.time, "monotonic", lambda: now[0])
    with bars.encode_progress("a.png") as update:
        update(Progress("latent, fit 1 at 0.5 bpp", 300, 300, 25.0, eta=0.0))
        now[0] = 65.0
        update(Progress("latent, fit 2 at 0.7 bpp", 10, 300, None, eta=50.0))
        now[0] = 130.0
        update(Progress("latent, fit 2 at 0.7 bpp", 300, 300, 26.0, eta=0.0))
    assert "0:02:10 ETA 0:00:00" in out.getvalue()


# -- one set of limits for the encoder and the decoder ---------------------------------------
def header_for(family: str, hparams: dict, width: int, height: int) -> InrFile:
    layout = get_family(family)
    shapes = layout.shapes(hparams, height, width, 3, 2, {})
    from inrcodec.quantize import TensorQuant
    return InrFile(width=width, height=height, channels=3, color="rgb", layout=layout,
                   hparams=hparams, encoding="none", encoding_params={},
                   coder=layout.default_coder, quants=[TensorQuant(8, 1.0)] * len(shapes))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("bpp", [0.05, 0.5, 4.0, 64.0])
def test_every_encode_planned_at_the_largest_image_is_refused_or_decodes(family, bpp):
    # At the largest image the encoder takes by default (2^26 pixels), every family's sizing at
    # every rate gives a header that the encode either refuses before it starts, or that the
    # decoder accepts at the same limits (nothing is allocated: the header alone).
    width = height = 8192
    budget = bpp * width * height / 8
    layout = get_trainable(family)
    hparams = layout.hparams_for_params(int(budget * 8 / 6.5), height, width, 3, 2)
    header = header_for(family, hparams, width, height)
    try:
        check_decodable(header, budget * 1.05)
    except inrcodec.InrInputError as refused:
        assert bpp >= 4.0 or family != "latent", refused  # the default family at usual rates
        return
    assert decoder.check_cost(header, width, height) <= limits.MAX_WORK
    assert sum(math.prod(s) for s in header.shapes()) <= limits.MAX_PARAMS


def test_an_encode_at_the_largest_accepted_size_decodes_and_one_pixel_more_is_refused(
        monkeypatch):
    # The limits lowered to this image: its encode (decoder's limits checked before training)
    # decodes with the same limits; a row more is refused from the image, before any work.
    image = crop(48, 64)
    monkeypatch.setattr(limits, "MAX_PIXELS", 48 * 64)
    data = inrcodec.encode(image, bpp=2.0, steps=10, **FAST)
    assert inrcodec.decode(data).shape == (48, 64, 3)
    with pytest.raises(inrcodec.InrInputError, match="more than the limit of 3072"):
        inrcodec.encode(crop(49, 64), bpp=2.0, steps=10, **FAST)
    cost = decoder.decode_cost(inrcodec.parse(data), 64, 48)
    monkeypatch.setattr(limits, "MAX_WORK", cost.work / 2)
    data = inrcodec.encode(image, bpp=2.0, steps=10, max_work=cost.work * 2, **FAST)
    assert inrcodec.decode(data, max_work=cost.work * 2).shape == (48, 64, 3)
    with pytest.raises(inrcodec.InrInputError, match="--max-work"):
        inrcodec.decode(data)
    monkeypatch.setattr("inrcodec.encoder.fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(inrcodec.InrInputError, match="to decode, more than the decoder's limit"):
        inrcodec.encode(image, bpp=2.0, steps=10, **FAST)

"""Hostile files: a decode's memory and work are bounded before any work is done."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import pytest
from typer.testing import CliRunner

import inrcodec
from inrcodec import decoder, limits
from inrcodec_cli.main import app

from .helpers import FAST, crop, reseal, with_size



@pytest.fixture(scope="module")
def dct_file() -> bytes:
    return inrcodec.encode(crop(), model="dct", bpp=1.0, steps=20, **FAST)


def test_a_dct_file_claiming_a_huge_image_decodes_narrow_in_bounded_memory(dct_file, tmp_path):
    # A 64x48 DCT file whose header claims 16384x8192 is valid (its network does not depend on
    # the size). Decoded 8 pixels wide, it used to evaluate every block column of every block
    # row (3.1 GiB); now only the blocks it touches: the interpreter and torch (about 0.35 GiB).
    path = tmp_path / "forged.inr"
    path.write_bytes(with_size(dct_file, 16384, 8192))
    script = ("import resource, inrcodec\n"
              f"out = inrcodec.decode(open({str(path)!r}, 'rb').read(), size=(8, 8192))\n"
              "assert out.shape == (8192, 8, 3)\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    peak_mib = int(run.stdout.split()[-1]) / 1024
    assert peak_mib < 1024, peak_mib


def test_work_is_bounded_before_any_is_done(encoded):
    # A plain SIREN header claiming 2048-wide layers (12.6 M weights, under the format's limit)
    # on a 4096x4096 image: 2e14 multiply-adds, hours. Refused from the header, before the
    # payload (which could not hold those weights) is even decoded.
    facts = inrcodec.info(encoded.data)
    assert facts["model"] == "siren" and facts["encoding"] == {"kind": "none"}
    body = bytearray(with_size(encoded.data, 4096, 4096)[:-4])
    body[11:13] = struct.pack("<H", 2048)  # the width, the first field after an empty encoding
    forged = reseal(bytes(body))
    with pytest.raises(inrcodec.InrInputError, match=r"multiply-adds \(.* to render\), more "
                                                      "than the limit"):
        inrcodec.decode(forged)
    with pytest.raises(inrcodec.InrInputError, match="pixels, more than the limit"):
        inrcodec.decode(encoded.data, size=(10000, 8000))


def test_limits_can_be_raised_per_call_per_process_and_on_the_command_line(encoded, tmp_path):
    assert inrcodec.decode(encoded.data, max_pixels=3072).shape == (48, 64, 3)
    with pytest.raises(inrcodec.InrInputError, match="--max-pixels"):
        inrcodec.decode(encoded.data, max_pixels=3071)
    work = decoder.check_cost(inrcodec.parse(encoded.data), 64, 48)
    with pytest.raises(inrcodec.InrInputError, match="--max-work"):
        inrcodec.decode(encoded.data, max_work=work - 1)
    saved = limits.MAX_PIXELS
    try:
        limits.MAX_PIXELS = 100
        with pytest.raises(inrcodec.InrInputError):
            inrcodec.decode(encoded.data)
    finally:
        limits.MAX_PIXELS = saved
    path = tmp_path / "a.inr"
    path.write_bytes(encoded.data)
    runner = CliRunner()
    refused = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "a.png"),
                                  "--max-pixels", "100"])
    assert refused.exit_code == 1 and "--max-pixels" in refused.stderr
    assert not (tmp_path / "a.png").exists()
    allowed = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "a.png"),
                                  "--scale", "2", "--max-pixels", "12288"])
    assert allowed.exit_code == 0 and (tmp_path / "a.png").exists()


def test_every_family_states_its_cost_per_pixel():
    # One network per pixel without overlap, up to four with it; the DCT head adds its synthesis.
    siren = inrcodec.FAMILIES["siren"]
    shapes = [(1, 2, 10), (1, 10, 3), (1, 1, 10), (1, 1, 3)]
    assert siren.macs_per_pixel({}, shapes) == 2 * 10 + 10 * 3
    gridded = inrcodec.FAMILIES["gridded"]
    grid = [(6, 2, 10), (6, 10, 3), (6, 1, 10), (6, 1, 3)]
    assert gridded.macs_per_pixel({"overlap": 0.0}, grid) == 50
    assert gridded.macs_per_pixel({"overlap": 0.1}, grid) == 200
    dct = inrcodec.FAMILIES["dct"]
    assert dct.macs_per_pixel({"block": 8}, shapes) == 50 + 3 * 64


# -- mistakes that would cost the user minutes or files --------------------------------------
def test_an_unwritable_output_fails_before_any_training(tmp_path, monkeypatch):
    from PIL import Image

    def no_training(*args, **kwargs):
        raise AssertionError("the encode started")

    monkeypatch.setattr("inrcodec.encoder.compress", no_training)
    png = tmp_path / "in.png"
    Image.fromarray(crop()).save(png)
    result = CliRunner().invoke(app, ["encode", str(png), "-o", str(tmp_path / "no" / "a.inr")])
    assert result.exit_code == 1
    assert "folder" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_decode_writes_images_only_and_encode_takes_images_only(encoded, tmp_path):
    path = tmp_path / "a.inr"
    path.write_bytes(encoded.data)
    runner = CliRunner()
    for target, reason in (("b.inr", "not an .inr file"), ("b.xyz", "cannot write .xyz")):
        result = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / target)])
        assert result.exit_code == 1 and reason in result.stderr, result.stderr
        assert not (tmp_path / target).exists()
    result = runner.invoke(app, ["encode", str(path), "-o", str(tmp_path / "c.inr")])
    assert result.exit_code == 1 and "is an .inr file already" in result.stderr
    with pytest.raises(inrcodec.InrInputError, match="an .inr file already"):
        inrcodec.encode(encoded.data)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    from inrcodec.imageio import write_atomic
    saved = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.bin", b"data")
        os.umask(0o002)
        write_atomic(tmp_path / "b.bin", b"data")
    finally:
        os.umask(saved)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o664


def test_a_16_bit_image_is_refused_for_its_depth_not_as_damaged():
    import io

    import numpy as np
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)).save(buf, "PNG")
    with pytest.raises(inrcodec.InrInputError) as error:
        inrcodec.load_image(buf.getvalue(), "deep.png")
    assert "more than 8 bits per sample" in str(error.value)
    assert "damaged" not in str(error.value)


def test_help_takes_h_and_lists_the_choices():
    runner = CliRunner(env={"COLUMNS": "240"})  # no wrapping inside the listed values
    assert runner.invoke(app, ["-h"]).exit_code == 0
    text = runner.invoke(app, ["encode", "-h"]).output
    for listed in ("siren|gridded|residual|dct|latent", "fast|default|best", "rans|zstd|context",
                   "auto|cpu|cuda"):
        assert listed in text, listed
    assert "auto|cpu|cuda" in runner.invoke(app, ["decode", "-h"]).output


def test_decode_and_info_read_paths_bytes_and_files_and_refuse_other_things(encoded, tmp_path):
    import io
    path = tmp_path / "a.inr"
    path.write_bytes(encoded.data)
    expected = inrcodec.decode(encoded.data)
    for source in (lambda: path, lambda: str(path), lambda: io.BytesIO(encoded.data),
                   lambda: bytearray(encoded.data)):
        assert (inrcodec.decode(source()) == expected).all()
        assert inrcodec.info(source())["bytes"] == len(encoded.data)
    with path.open("rb") as f:
        assert inrcodec.info(f)["model"] == "siren"
    with pytest.raises(inrcodec.InrInputError, match="no such file"):
        inrcodec.decode(tmp_path / "missing.inr")
    with pytest.raises(inrcodec.InrInputError, match="give a path, bytes or a binary file"):
        inrcodec.info(12)
    import torch
    with pytest.raises(inrcodec.InrInputError, match="cannot read an image from a Tensor"):
        inrcodec.encode(torch.zeros(8, 8, 3), bpp=2.0)


def test_the_declared_pillow_has_what_the_plugin_uses():
    # ImageFile._Tile, which the plugin builds its tiles with, is in Pillow 10.2.0, not 10.1.0
    # (read in both wheels' PIL/ImageFile.py).
    import re
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pillow = next(d for d in project["project"]["dependencies"] if d.startswith("pillow"))
    low = tuple(int(x) for x in re.search(r">=([\d.]+)", pillow).group(1).split("."))
    assert low >= (10, 2), pillow


def test_quiet_prints_nothing_but_errors(tmp_path):
    from PIL import Image

    from inrcodec_cli import progress
    png = tmp_path / "in.png"
    Image.fromarray(crop()).save(png)
    runner = CliRunner()
    try:
        loud = runner.invoke(app, ["encode", str(png), "-o", str(tmp_path / "a.inr"), "--bpp",
                                   "2", "--steps", "30", "--effort", "fast"])
        quiet = runner.invoke(app, ["encode", str(png), "-o", str(tmp_path / "b.inr"), "--bpp",
                                    "2", "--steps", "30", "--effort", "fast", "-q"])
        assert loud.exit_code == quiet.exit_code == 0
        assert "bpp" in loud.stderr and quiet.stderr == "" and quiet.stdout == ""
        assert (tmp_path / "b.inr").read_bytes() == (tmp_path / "a.inr").read_bytes()
        decoded = runner.invoke(app, ["decode", str(tmp_path / "b.inr"), "-o",
                                      str(tmp_path / "b.png"), "--quiet"])
        assert decoded.exit_code == 0 and decoded.stderr == ""
        refused = runner.invoke(app, ["decode", str(png), "-o", str(tmp_path / "c.png"), "-q"])
        assert refused.exit_code == 1 and refused.stderr.startswith("inr: error: ")
    finally:
        progress.stderr.quiet = False


def test_a_result_row_names_the_effort_its_codec_ran_at(tmp_path):
    # The job, its cache key and its row carry the effort the codec runs at: the spec's where
    # it names one (rows of inr:X+effort=best said "default"), else the benchmark's.
    from inrcodec.bench.main import BenchConfig, plan
    config = BenchConfig(codecs=["inr:siren+effort=fast+steps=5+compile=false",
                                 "inr:siren+steps=5+compile=false", "jpeg"],
                         bpps=[2.0], points=1, effort="best", limit=1, crop=(32, 32),
                         out=tmp_path)
    _, _, _, jobs = plan(config)
    by_spec = {job.spec: job for job in jobs}
    assert by_spec["inr:siren+effort=fast+steps=5+compile=false"].effort == "fast"
    assert by_spec["inr:siren+steps=5+compile=false"].effort == "best"
    from inrcodec.bench.runner import run_job
    row, _ = run_job(by_spec["inr:siren+effort=fast+steps=5+compile=false"])
    assert row["effort"] == "fast" and not row["error"]
    assert run_job(next(j for j in jobs if j.spec == "jpeg"))[0]["effort"] == ""


def test_ctrl_c_stops_a_parallel_batch_at_once_and_leaves_no_file(tmp_path):
    # Ctrl-C reaches the whole process group: the batch ends with "interrupted" at once, and
    # neither the files being encoded nor the ones queued behind them appear afterwards (before,
    # the queued ones were encoded and written after the message).
    import os
    import signal
    import time

    from PIL import Image
    from skimage import data
    inputs = []
    for i in range(4):
        inputs.append(tmp_path / f"im{i}.png")
        Image.fromarray(data.astronaut()[i * 40:i * 40 + 96, 100:228]).save(inputs[-1])
    out = tmp_path / "out"
    batch = subprocess.Popen(
        [sys.executable, "-m", "inrcodec_cli", "encode", *map(str, inputs), "-o", f"{out}/",
         "--jobs", "2", "--steps", "4000", "--effort", "fast", "--bpp", "1", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not out.exists():  # the batch has planned its outputs
        time.sleep(0.1)
    time.sleep(4)  # the workers have started their first encodes
    os.killpg(batch.pid, signal.SIGINT)
    _, err = batch.communicate(timeout=60)
    assert batch.returncode == 130 and b"interrupted" in err
    time.sleep(3)  # long enough for a worker that went on to write something
    assert list(out.iterdir()) == []


def test_bench_without_its_extra_says_what_to_install_before_any_job(tmp_path, monkeypatch):
    import importlib.util

    from inrcodec.bench import main as bench
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(bench, "plan", lambda config: pytest.fail("jobs were planned"))
    with pytest.raises(inrcodec.InrInputError, match=r"matplotlib missing.*inrcodec\[bench\]"):
        bench.run(bench.BenchConfig(out=tmp_path))


def test_photos_are_read_as_a_photo_tool_shows_them_and_what_is_dropped_is_said():
    import io

    import numpy as np
    from PIL import Image
    pixels = np.ascontiguousarray(crop(48, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", exif=exif)
    assert inrcodec.load_image(buf.getvalue()).shape == (64, 48, 3)  # stored 64 wide, shown 48
    frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    with pytest.warns(inrcodec.InrWarning, match="2 frames; only the first is encoded"):
        inrcodec.load_image(buf.getvalue(), "anim.gif")
    from PIL import ImageCms
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", icc_profile=profile)
    with pytest.warns(inrcodec.InrWarning, match="ICC colour profile"):
        inrcodec.load_image(buf.getvalue(), "icc.png")


def test_a_rate_too_low_for_the_header_says_the_rate_the_image_needs():
    with pytest.raises(inrcodec.InrInputError, match=r"needs at least [\d.]+ bpp"):
        inrcodec.encode(crop(8, 8), bpp=2.0)
    assert inrcodec.decode(inrcodec.encode(crop(8, 8), bpp=64, steps=5, **FAST)).shape == \
        (8, 8, 3)


def test_the_command_line_prints_a_warning_as_one_line(tmp_path):
    import numpy as np
    from PIL import Image
    pixels = np.ascontiguousarray(crop(48, 64))
    gif = tmp_path / "anim.gif"
    Image.fromarray(pixels).save(gif, save_all=True, append_images=[Image.fromarray(255 - pixels)])
    result = CliRunner().invoke(app, ["encode", str(gif), "-o", str(tmp_path / "a.inr"),
                                      "--bpp", "2", "--steps", "5", "--effort", "fast"])
    assert result.exit_code == 0
    assert f"inr: warning: {gif} has 2 frames; only the first is encoded" in result.stderr


# -- the benchmark's honesty ----------------------------------------------------------------
def test_reports_give_the_per_image_bd_rate_and_flag_curves_of_two_points():
    from inrcodec.bench import report

    def rows(codec, kind, scale, images, settings):
        # PSNR = 30 + 10 log10(bpp): the same curve on every image, at `scale` times the rate
        # on image 0 and at the reference's rate on the others.
        out = []
        for i in range(images):
            for k, setting in enumerate(settings):
                bpp = 0.2 * 2 ** k
                rate = bpp * (scale if i == 0 else 1.0)
                out.append({"image": f"im{i}", "codec": codec, "label": codec, "kind": kind,
                            "setting": setting, "bpp": rate, "psnr": 30 + 10 * np.log10(bpp),
                            "ms_ssim": 0.9, "encode_seconds": 1.0, "decode_seconds": 0.1,
                            "peak_memory_mb": 1.0, "error": ""})
        return out

    import numpy as np
    data = rows("jpeg", "classical", 1.0, 4, [1, 2, 3, 4]) + \
        rows("inr:x", "inr", 0.5, 4, [1, 2, 3, 4]) + rows("inr:y", "inr", 0.5, 4, [1, 2])
    per_image = report.per_image_bd_rates(data)
    assert per_image["inr:x"] == pytest.approx(-12.5, abs=0.01)  # -50% on one image of four
    curves = report.curves_from_rows(data, 4)
    reference = next(c for c in curves if c.codec == "jpeg")
    table = report.summary_table(curves, reference, per_image)
    line = {row.split(" | ")[0].strip("| "): row for row in table.splitlines()}
    assert "-12.5%" in line["inr:x"] and "*" not in line["inr:x"]
    assert "%*" in line["inr:y"] and "fewer than 3 points" in table


def test_a_report_against_another_reference_with_ms_ssim_bd_rates_and_compressai_files(tmp_path):
    import json

    from inrcodec.bench.main import BenchConfig, run
    config = BenchConfig(codecs=["jpeg", "webp"], points=4, limit=1, crop=(96, 96),
                         out=tmp_path, reference="webp")
    text = run(config).read_text()
    assert "BD-rate vs WebP" in text and "BD-rate (MS-SSIM) vs WebP" in text
    assert "BD-rate vs WebP, mean per image" in text
    jpeg = json.loads((tmp_path / "compressai" / "jpeg.json").read_text())
    assert jpeg["name"] == "JPEG 4:2:0" and len(jpeg["results"]["bpp"]) == 4
    assert set(jpeg["results"]) == {"bpp", "psnr-rgb", "ms-ssim"}
    notes = []
    text = run(BenchConfig(codecs=["jpeg"], points=2, limit=1, crop=(96, 96),
                           out=tmp_path / "avif", reference="avif"), note=notes.append).read_text()
    assert notes == ["avif added to the codecs: it is the reference of the BD-rates "
                     "(--reference chooses another)"]
    assert "BD-rate vs AVIF" in text and "| JPEG 4:2:0 |" in text


@pytest.mark.parametrize("family", ["all", "latent"])
def test_a_short_fuzz_run_finds_nothing(family):
    # benchmarks/fuzz_decoder.py: structure-aware mutants of the golden files of every family
    # (or of the latent family's files, its coder's stream mutated inside its zstd frame), CRC
    # recomputed, read and decoded at four sizes; only the two documented errors may come out
    # (docs/security.md has the long runs).
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_decoder.py"
    spec = importlib.util.spec_from_file_location("fuzz_decoder", path)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    result = fuzz.run_chunk(0, 300, seed=12345, family=family)
    assert result["findings"] == [], result["findings"][:1]
    assert sum(result["outcomes"].values()) == 300
    assert result["outcomes"].get("decoded", 0) > 0  # mutants get past the checksum


def test_weights_of_a_forged_file_stay_finite_and_pixels_defined(encoded):
    # A step whose largest symbol overflows float32 is refused; one just under it decodes, and
    # the infinities and NaNs its network then makes become defined pixels (0 for NaN).
    import math
    import zlib
    facts = inrcodec.info(encoded.data)
    bits = facts["tensors"][0]["bits"]
    at = facts["header_bytes"] - 5 * len(facts["tensors"])  # the first quantiser

    def with_step(step: float) -> bytes:
        body = bytearray(encoded.data[:-4])
        body[at:at + 5] = struct.pack("<Bf", bits, step)
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))

    largest = 3.4028234663852886e38 / ((1 << (bits - 1)) - 1)
    with pytest.raises(inrcodec.InrFormatError, match="bad step size"):
        inrcodec.decode(with_step(largest * 1.01))
    pixels = inrcodec.decode(with_step(largest * 0.99))
    assert pixels.dtype.name == "uint8" and pixels.shape == (48, 64, 3)
    assert not math.isnan(float(pixels.mean()))


def test_plots_give_every_codec_its_own_style_and_anchors_on_ms_ssim(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inrcodec.bench import report
    curves = [report.Curve(f"c{i}", f"codec {i}", "inr" if i % 2 else "classical",
                           [(0.2, 25.0 + i, 0.9), (0.5, 28.0 + i, 0.95)]) for i in range(14)]
    anchors = [report.Curve("a", "anchor with MS-SSIM", "published", [(0.3, 27.0, 0.93),
                                                                      (0.6, 30.0, 0.96)]),
               report.Curve("b", "anchor without", "published", [(0.3, 27.0, float("nan"))])]
    seen = {}
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: seen.setdefault("fig", fig) and close(fig))
    report.plot_curves(curves, anchors, tmp_path, "msssim", "t")
    ax = seen["fig"].axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines][-1] == "anchor with MS-SSIM"
    styles = {(line.get_color(), line.get_marker()) for line in lines}
    assert len(styles) == len(lines) == 15
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # beside the axes


def test_jpeg_xl_runs_live_beside_the_other_classical_codecs():
    from inrcodec.bench.codecs import default_codecs, parse_codec
    from inrcodec.metrics import psnr
    codec = parse_codec("jpegxl")
    assert "jpegxl" in default_codecs() and codec.fingerprint.startswith("imagecodecs-")
    image = crop(64, 96)
    coarse, fine = codec.run(image, 7.0), codec.run(image, 0.7)
    assert len(coarse.data) < len(fine.data)
    assert fine.decoded.shape == image.shape and psnr(fine.decoded, image) > 35

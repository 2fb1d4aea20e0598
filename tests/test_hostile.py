"""Hostile files and inputs, each forged small here: every decode and every read is bounded by
its output and its file (docs/security.md), and every refusal is one line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
import zstandard
from typer.testing import CliRunner

import inrcodec
from inrcodec import bitstream, context, decoder, limits, rans
from inrcodec.color import ColorTransform
from inrcodec.container import InrFile
from inrcodec.encodings import Encoding
from inrcodec.models import get_family
from inrcodec.quantize import TensorQuant
from inrcodec_cli.main import app

from .helpers import reseal, with_size

GOLDEN = Path(__file__).resolve().parent / "golden"
GIB = 1 << 30



def latent_hparams(levels=1, channels=2) -> dict:
    return {"levels": levels, "channels": channels, "width": 1, "depth": 0, "upsampling": 0}


def zero_latent_file(width: int, height: int, **hparams) -> bytes:
    """A valid latent-family file of all-zero latents (coder 2), by the library's own writer."""
    net = get_family("latent")(height, width, ColorTransform("rgb", 3),
                               latent_hparams(**hparams), Encoding("none", 2))
    quants = {name: TensorQuant(2 if name.startswith("latents") else 8, 1.0)
              for name, _ in net.tensors()}
    return bitstream.write(net, quants, "context")


def latent_header(width: int, height: int, payload: bytes, **hparams) -> bytes:
    """A latent file's header with any payload (nothing of the model allocated)."""
    layout = get_family("latent")
    hp = latent_hparams(**hparams)
    shapes = layout.shapes(hp, height, width, 3, 2, {})
    quants = [TensorQuant(2 if len(s) == 3 else 8, 1.0) for s in shapes]
    return InrFile(width=width, height=height, channels=3, color="rgb", layout=layout,
                   hparams=hp, encoding="none", encoding_params={}, coder="context",
                   quants=quants, payload=payload).to_bytes()


def measured(code: str, timeout: float = 60) -> tuple[dict, float, float]:
    """Run ``code`` (which sets ``result``) in a fresh interpreter: its result, its peak
    resident memory in bytes and its seconds."""
    script = ("import json, resource, time\nstart = time.perf_counter()\n" + code +
              "\nprint(json.dumps([result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
              " time.perf_counter() - start]))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr
    result, peak_kib, seconds = json.loads(run.stdout.splitlines()[-1])
    return result, peak_kib * 1024, seconds


def command(*args: str, stdin=None, timeout: float = 60) -> tuple[int, str, float, float]:
    """``inr ARGS`` in a fresh interpreter: exit status, stderr, peak memory, seconds."""
    wrapper = ("import resource, subprocess, sys, time\nstart = time.perf_counter()\n"
               "run = subprocess.run(sys.argv[1:], stdin=sys.stdin, capture_output=True)\n"
               "sys.stderr.buffer.write(run.stderr)\n"
               "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
               " time.perf_counter() - start)")
    run = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "inrcodec_cli",
                          *args], stdin=stdin, capture_output=True, text=True, timeout=timeout)
    status, peak_kib, seconds = run.stdout.split()
    return int(status), run.stderr, int(peak_kib) * 1024, float(seconds)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("inr: error: "), stderr
    return lines[0]


# -- case 1: a grid as wide as the format allows, decoded one pixel wide ----------------------
def test_a_wide_latent_grid_decodes_narrow_in_bounded_memory(tmp_path):
    # A 16384x1 latent file decoded at 1x16384: every output row reads the same 16384-wide
    # grid. The band rendering gathered channels x band rows x the grid's whole width (6.4 GiB
    # for two channels); now only the columns a band reads.
    data = zero_latent_file(16384, 1)
    assert len(data) < 100
    path = tmp_path / "narrow.inr"
    path.write_bytes(data)
    shape, peak, seconds = measured(
        "import inrcodec\n"
        f"result = list(inrcodec.decode(open({str(path)!r}, 'rb').read(), size=(1, 16384)).shape)")
    assert shape == [16384, 1, 3]
    assert peak < GIB and seconds < 10, (peak / 2 ** 20, seconds)
    # The same through the command line and the Pillow plugin.
    status, err, peak, seconds = command("decode", str(path), "-o", str(tmp_path / "o.png"),
                                         "--size", "1x16384")
    assert status == 0, err
    assert peak < GIB and seconds < 10, (peak / 2 ** 20, seconds)
    size, peak, _ = measured(
        "from PIL import Image\nimport inrcodec\n"
        f"im = Image.open({str(path)!r})\nim.render_at((1, 16384))\nim.load()\n"
        "result = list(im.size)")
    assert size == [1, 16384] and peak < GIB


@pytest.mark.parametrize("case", ["siren", "gridded", "residual", "dct", "siren-fourier",
                                  "siren-layers", "gridded-layers"])
def test_every_family_decodes_a_forged_huge_size_narrow_in_bounded_memory(case, tmp_path):
    # A small golden file whose header claims 16384x8192 (its networks do not depend on the
    # size), decoded 8 pixels wide and 8 tall: memory follows the output, not the claim.
    path = tmp_path / "forged.inr"
    path.write_bytes(with_size((GOLDEN / f"{case}.inr").read_bytes(), 16384, 8192))
    shapes, peak, seconds = measured(
        "import inrcodec\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "result = [list(inrcodec.decode(data, size=s, max_work=1e13).shape)\n"
        "          for s in ((8, 8192), (16384, 8))]")
    assert shapes == [[8192, 8, 3], [8, 16384, 3]]
    assert peak < GIB and seconds < 30, (peak / 2 ** 20, seconds)


@pytest.mark.parametrize("size", ["1x16384", "16384x1"])
@pytest.mark.parametrize("name", ["latent-arm", "latent-learned"])
def test_a_latent_file_decodes_narrow_and_huge_in_bounded_memory(name, size, tmp_path):
    # Coder 3's golden file (a learned entropy model of its grids) and the learned upsampling's
    # (its grids filtered once per decode) through the command line at the sizes of case 1:
    # their grids decode and are filtered at their own size, whatever the output's.
    status, err, peak, seconds = command("decode", str(GOLDEN / f"{name}.inr"), "-o",
                                         str(tmp_path / "o.png"), "--size", size)
    assert status == 0, err
    assert peak < GIB and seconds < 30, (peak / 2 ** 20, seconds)


# -- case 2: millions of nearly free latents, and surplus coded words -----------------------
def test_entropy_decoding_counts_in_the_work_bound_before_any_is_done():
    # 16.7 M latents claimed by a header: 7 s of entropy decoding, nothing of it rendering.
    # The work bound counts it, so a decode allowed less work is refused before the payload is
    # touched (here it is not even a stream: decoding it would be a format error).
    data = latent_header(16384, 1023, b"\x00" * 16, channels=1)
    cost = decoder.decode_cost(inrcodec.parse(data), 1, 1)
    assert cost.values >= 16384 * 1023 and cost.entropy >= cost.values * 1000
    start = time.perf_counter()
    with pytest.raises(inrcodec.InrInputError, match=r"to entropy-decode 1676\d+ stored values"):
        inrcodec.decode(data, size=(1, 1), max_work=1_000_000)
    assert time.perf_counter() - start < 1
    result = CliRunner().invoke(app, ["decode", "-", "-o", "-", "--size", "1x1",
                                      "--max-work", "1000000"], input=data)
    assert result.exit_code == 1 and "--max-work" in one_line(result.stderr)


def surplus_words_file() -> bytes:
    """16.7 M nearly free latents (coder 2, every residual table all but certain of 0) and as
    many coded words as that many symbols could ever need, which they never read: a few KB
    once zstd has squeezed the words."""
    n = 16384 * 1023
    shapes = get_family("latent").shapes(latent_hparams(channels=1), 1023, 16384, 3, 2, {})
    head = struct.pack(context.MODEL_FORMAT, 0, 0, 0, 0, 0, 0, 0, 0)  # ratio 0: zeros cost ~0
    head += b"".join(struct.pack("<H", 0) for s in shapes if len(s) != 3)
    words = -(-n * rans.PRECISION // rans.WORD)
    # The state and the words put each symbol's slot on a zero residual (the tables' slots
    # 2 .. 2^24 - 3).
    stream = struct.pack("<Q", rans.LOW + 2) + struct.pack("<I", 2) * words
    payload = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(head + stream)
    return latent_header(16384, 1023, payload, channels=1)


def test_coded_words_the_symbols_cannot_consume_fail_before_they_are_read(tmp_path):
    data = surplus_words_file()
    assert len(data) < 8192
    path = tmp_path / "words.inr"
    path.write_bytes(data)
    error, peak, seconds = measured(
        "import inrcodec\n"
        "try:\n"
        f"    inrcodec.decode(open({str(path)!r}, 'rb').read(), size=(1, 1))\n"
        "    result = None\n"
        "except inrcodec.InrFormatError as exc:\n"
        "    result = str(exc)")
    assert error is not None and "symbols cannot consume" in error, error
    assert peak < GIB and seconds < 10, (peak / 2 ** 20, seconds)


def test_the_room_check_never_refuses_a_stream_the_coder_wrote():
    # The densest stream there is: every symbol the rarest of its table (24 bits each).
    import numpy as np
    table = rans.Table.geometric(100, 60000)
    symbols = np.full(5000, 100, dtype=np.int64)
    stream = rans.encode([(symbols, table)])
    assert (len(stream) - 8) // 4 > 0.7 * rans.most_words(5000)
    assert np.array_equal(rans.decode(stream, [(5000, table)])[0], symbols)
    with pytest.raises(rans.RansError, match="cannot consume"):
        rans.decode(stream + bytes(4 * 2000), [(5000, table)])


@pytest.mark.parametrize("name", ["latent", "latent-context", "latent-arm", "latent-learned"])
def test_a_stream_too_short_for_its_symbols_fails_before_any_is_decoded(name):
    # A golden file whose header claims an 8192x4096 image: its stream of a few hundred words
    # cannot hold the tens of millions of latents' least bits, so it fails before the first
    # symbol (before, it decoded until its words ran out).
    data = with_size((GOLDEN / f"{name}.inr").read_bytes(), 8192, 4096)
    start = time.perf_counter()
    with pytest.raises(inrcodec.InrFormatError, match="cut short: its .* words cannot hold"):
        inrcodec.decode(data, size=(1, 1))
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("qmax, ratio", [(1, 1000), (3, 1000), (100, 20000), (127, 60000),
                                         (1, 65535)])
def test_the_length_check_never_refuses_a_stream_the_coder_wrote(qmax, ratio):
    # The sparsest stream there is: every symbol its table's likeliest; the bound is within a
    # few percent of its words, and never above them, at any length.
    import numpy as np
    table = rans.Table.geometric(qmax, ratio)
    for n in (1, 7, 300, 5000):
        stream = rans.encode([(np.zeros(n, dtype=np.int64), table)])
        words = (len(stream) - 8) // 4
        assert words * 0.95 - 2 <= rans.least_words(n * table.least_bits) <= words
        assert not rans.decode(stream, [(n, table)])[0].any()
    with pytest.raises(rans.RansError, match="cut short"):
        rans.decode(stream[:-8], [(5000, table)])


# -- case 3: an endless input ---------------------------------------------------------------
@pytest.mark.parametrize("args", [("info", "/dev/zero"), ("decode", "/dev/zero", "-o", "z.png"),
                                  ("encode", "/dev/zero", "-o", "z.inr"), ("info", "-")])
def test_an_endless_input_is_refused_as_it_is_read(args, tmp_path):
    args = tuple(str(tmp_path / a) if a.startswith("z.") else a for a in args)
    with open("/dev/zero", "rb") as zeros:
        status, err, peak, seconds = command(*args, stdin=zeros)
    assert status in (1, 2), err
    one_line(err)
    assert peak < GIB and seconds < 10, (peak / 2 ** 20, seconds)


def test_an_inr_file_longer_than_the_format_holds_is_refused_unread(monkeypatch):
    import io
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 1000)
    data = (GOLDEN / "siren.inr").read_bytes()
    with pytest.raises(inrcodec.InrInputError, match="larger than the 1000 bytes"):
        inrcodec.decode(io.BytesIO(data + bytes(2000)))
    with pytest.raises(inrcodec.InrFormatError, match="bad magic"):
        inrcodec.info(io.BytesIO(b"GIF89a" + bytes(5000)))


# -- case 4: absurd scales and sizes --------------------------------------------------------
@pytest.mark.parametrize("flag", [("--scale", "1e308"), ("--scale", "inf"), ("--scale", "-2"),
                                  ("--scale", "nan"), ("--size", "0x5"),
                                  ("--size", "99999999999999999999x2"), ("--size", "x"),
                                  ("--size", "12"), ("--size", "3x-4")])
def test_absurd_scales_and_sizes_are_one_line_errors(flag, tmp_path):
    path = tmp_path / "a.inr"
    path.write_bytes((GOLDEN / "siren.inr").read_bytes())
    result = CliRunner().invoke(app, ["decode", str(path), "-o", str(tmp_path / "a.png"), *flag])
    assert result.exit_code in (1, 2), result.output
    if result.exit_code == 1:
        one_line(result.stderr)
    assert not (tmp_path / "a.png").exists()


def test_a_size_with_one_side_keeps_the_aspect_ratio(tmp_path):
    path = tmp_path / "a.inr"
    path.write_bytes((GOLDEN / "siren.inr").read_bytes())  # 32x24
    runner = CliRunner()
    for size, expected in (("64x", (64, 48)), ("x12", (16, 12))):
        out = tmp_path / f"{size}.png"
        result = runner.invoke(app, ["decode", str(path), "-o", str(out), "--size", size])
        assert result.exit_code == 0, result.output
        from PIL import Image
        assert Image.open(out).size == expected
    assert inrcodec.decode(path, size=(None, 48)).shape == (48, 64, 3)


# -- case 5: images whose header claims more pixels than allowed ----------------------------
def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: its pixel data is a few bytes that could never
    fill it, so only a decoder that reads the header first stays small."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(4096))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(1, 89_000_000), (16384, 5460)])
def test_an_image_over_the_limit_is_refused_from_its_header(width, height, tmp_path):
    png = tmp_path / "big.png"
    png.write_bytes(forged_png(width, height))
    with pytest.raises(inrcodec.InrInputError, match="largest side|more than the limit"):
        inrcodec.load_image(png)
    status, err, peak, seconds = command("encode", str(png), "-o", str(tmp_path / "b.inr"))
    assert status == 1, err
    one_line(err)
    assert peak < GIB and seconds < 10, (peak / 2 ** 20, seconds)
    assert not (tmp_path / "b.inr").exists()


def test_the_pixel_limit_of_encoding_is_that_of_decoding_and_can_be_raised():
    # 8192 x 8193 is one row over 2^26: refused by default, accepted past the header with
    # --max-pixels (and then refused here only because the forged PNG has no pixels).
    png = forged_png(8192, 8193)
    with pytest.raises(inrcodec.InrInputError, match="more than the limit of 67108864"):
        inrcodec.load_image(png)
    with pytest.raises(inrcodec.InrInputError, match="damaged"):
        inrcodec.load_image(png, max_pixels=1 << 27)
    with pytest.raises(inrcodec.InrInputError, match="format holds at most 134217728"):
        inrcodec.load_image(forged_png(16384, 8193), max_pixels=1 << 30)


# -- case 6: symbolic links in the output folder --------------------------------------------
def decode_batch(tmp_path, *extra) -> tuple[int, str]:
    source = tmp_path / "in"
    source.mkdir(exist_ok=True)
    (source / "a.inr").write_bytes((GOLDEN / "siren.inr").read_bytes())
    result = CliRunner().invoke(app, ["decode", str(source), "-o", f"{tmp_path / 'out'}/", "-q",
                                      *extra])
    return result.exit_code, result.stderr


def test_a_manifest_that_is_a_link_in_the_output_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("precious\n")
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "manifest.jsonl")
    status, err = decode_batch(tmp_path)
    assert status == 1 and "symbolic link" in one_line(err)
    assert outside.read_text() == "precious\n"
    assert not (tmp_path / "out" / "a.png").exists()  # refused before any work


def test_a_manifest_the_user_names_is_written_where_the_user_says(tmp_path):
    target = tmp_path / "records.jsonl"
    target.write_text("")
    os.symlink(target, tmp_path / "link.jsonl")
    status, err = decode_batch(tmp_path, "--manifest", str(tmp_path / "link.jsonl"))
    assert status == 0, err
    assert json.loads(target.read_text().splitlines()[-1])["ok"]


def test_outputs_never_go_through_links(tmp_path):
    # A folder inside the output folder that links elsewhere is refused; an output file that is
    # a link is replaced by the new file, its old target untouched.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    source = tmp_path / "in" / "sub"
    source.mkdir(parents=True)
    (source / "b.inr").write_bytes((GOLDEN / "siren.inr").read_bytes())
    os.symlink(elsewhere, tmp_path / "out" / "sub")
    status, err = decode_batch(tmp_path)
    assert status == 1 and "symbolic link" in one_line(err)
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "out" / "sub").unlink()
    precious = tmp_path / "precious.png"
    precious.write_bytes(b"precious")
    os.symlink(precious, tmp_path / "out" / "a.png")
    status, err = decode_batch(tmp_path)
    assert status == 0, err
    assert precious.read_bytes() == b"precious"
    out = tmp_path / "out" / "a.png"
    assert not out.is_symlink() and out.read_bytes().startswith(b"\x89PNG")

"""The inr command through typer's runner: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import inrcodec
from inrcodec_cli.main import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def files(tmp_path_factory, image, encoded):
    folder = tmp_path_factory.mktemp("cli")
    png = folder / "in.png"
    Image.fromarray(image).save(png)
    inr = folder / "in.inr"
    inr.write_bytes(encoded.data)
    return folder, png, inr


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("inr: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_encode_json_reports_the_file(files):
    folder, png, _ = files
    out = folder / "enc.inr"
    result = invoke("encode", png, "-o", out, "--bpp", "2", "--steps", "40", "--effort", "fast",
                    "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert {"bytes", "bpp", "psnr", "seconds", "model", "params"} <= set(facts)
    assert facts["bytes"] == out.stat().st_size
    assert facts["model"] == "latent"  # the default family


def test_encode_takes_a_psnr_target_and_refuses_it_beside_a_rate(files):
    folder, png, _ = files
    out = folder / "psnr.inr"
    result = invoke("encode", png, "-o", out, "--psnr", "15", "--steps", "40", "--effort",
                    "fast", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["psnr"] >= 15
    result = invoke("encode", png, "-o", out, "--psnr", "30", "--bpp", "1")
    assert result.exit_code != 0
    assert "one of bpp, quality and psnr" in one_error_line(result)


def test_decode_scale_and_size(files):
    folder, _, inr = files
    h, w = inrcodec.info(inr.read_bytes())["height"], inrcodec.info(inr.read_bytes())["width"]
    assert invoke("decode", inr, "-o", folder / "x2.png", "--scale", "2").exit_code == 0
    assert Image.open(folder / "x2.png").size == (2 * w, 2 * h)
    assert invoke("decode", inr, "-o", folder / "s.png", "--size", "30x20").exit_code == 0
    assert Image.open(folder / "s.png").size == (30, 20)


def test_info_json_and_text(files):
    _, _, inr = files
    result = invoke("info", inr, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["model"] == "siren"
    text = invoke("info", inr)
    assert "siren" in text.stdout and "bpp" in text.stdout


def test_stdin_and_stdout(files):
    _, _, inr = files
    result = runner.invoke(app, ["decode", "-", "-o", "-"], input=inr.read_bytes())
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"\x89PNG")


def test_bad_inputs_exit_non_zero_with_one_line(files):
    folder, png, inr = files
    (folder / "junk.inr").write_bytes(b"INR\x01junkjunkjunkjunk")
    (folder / "text.png").write_text("not a picture")
    cases = [
        ("decode", folder / "junk.inr", "-o", folder / "o.png"),
        ("decode", folder / "missing.inr", "-o", folder / "o.png"),
        ("decode", png, "-o", folder / "o.png"),
        ("info", folder / "text.png"),
        ("encode", folder / "text.png", "-o", folder / "o.inr"),
        ("encode", png, "-o", folder / "o.inr", "--model", "nope"),
        ("decode", inr, "-o", folder / "o.png", "--size", "big"),
        ("decode", inr, "-o", folder / "nowhere" / "o.png"),
    ]
    for case in cases:
        result = invoke(*case)
        assert result.exit_code == 1, case
        one_error_line(result)
    assert not (folder / "o.png").exists() and not (folder / "o.inr").exists()


def test_an_input_is_never_overwritten(files):
    _, png, inr = files
    before = inr.read_bytes()
    result = invoke("decode", inr, "-o", inr)
    assert result.exit_code == 1 and "overwrite" in one_error_line(result)
    assert inr.read_bytes() == before
    assert invoke("encode", png, "-o", png, "--steps", "5").exit_code == 1


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and inrcodec.__version__ in result.stdout


def test_batch_encode_and_decode_with_a_failure(files, tmp_path):
    folder, png, _ = files
    other = tmp_path / "other.png"
    Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "encoded"
    result = invoke("encode", png, other, broken, "-o", f"{out}/", "--bpp", "2", "--steps", "30",
                    "--effort", "fast", "--jobs", "2", "--json")
    assert result.exit_code == 1  # one file failed
    facts = json.loads(result.stdout)
    assert [f["ok"] for f in facts] == [True, True, False]
    assert "not an image" in facts[2]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["in.inr", "manifest.jsonl", "other.inr"]
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["place"], r["ok"]) for r in records) == [
        ("broken.inr", False), ("in.inr", True), ("other.inr", True)]
    assert "2 of 3 files done" in result.stderr
    assert "inr: error: 1 of 3 files failed" in result.stderr

    decoded = tmp_path / "decoded"
    result = invoke("decode", out / "in.inr", out / "other.inr", "-o", f"{decoded}/", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in decoded.iterdir()) == ["in.png", "manifest.jsonl", "other.png"]
    assert Image.open(decoded / "other.png").size == (128, 96)


def test_batch_refuses_name_clashes(files, tmp_path):
    _, png, _ = files
    twin = tmp_path / "sub" / "in.png"
    twin.parent.mkdir()
    twin.write_bytes(png.read_bytes())
    result = invoke("encode", png, twin, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "both be written" in one_error_line(result)

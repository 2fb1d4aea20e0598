"""The Pillow plugin, through Pillow's own calls."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import inrcodec
from inrcodec.metrics import psnr


@pytest.fixture(scope="module")
def inr_path(tmp_path_factory, encoded):
    path = tmp_path_factory.mktemp("pillow") / "image.inr"
    path.write_bytes(encoded.data)
    return path


def test_open_is_lazy_and_load_renders(inr_path, encoded, image):
    im = Image.open(inr_path)
    assert im.format == "INR" and im.mode == "RGB"
    assert im.size == (image.shape[1], image.shape[0])
    assert im.info["model"] == "siren"
    assert im._im is None  # nothing rendered before load()
    im.load()
    assert np.array_equal(np.asarray(im), inrcodec.decode(encoded.data))


def test_convert_and_save_to_png(inr_path, tmp_path, encoded):
    Image.open(inr_path).convert("L").save(tmp_path / "grey.png")
    assert Image.open(tmp_path / "grey.png").mode == "L"
    Image.open(inr_path).save(tmp_path / "copy.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "copy.png")),
                          inrcodec.decode(encoded.data))


def test_thumbnail_renders_small_directly(inr_path):
    im = Image.open(inr_path)
    im.thumbnail((16, 16))
    assert im.size == (16, 12)
    drafted = Image.open(inr_path)
    assert drafted.draft("RGB", (32, 10)) == ("RGB", (0, 0, 32, 24))
    drafted.load()
    assert drafted.size == (32, 24)


def test_render_at_any_size_even_larger(inr_path, encoded):
    im = Image.open(inr_path)
    im.render_at((128, 96))
    assert np.array_equal(np.asarray(im), inrcodec.decode(encoded.data, size=(128, 96)))


def test_save_from_pil_with_encoder_options(image, tmp_path):
    path = tmp_path / "saved.inr"
    Image.fromarray(image).save(path, bpp=2.0, steps=40, effort="fast", model="dct", coder="zstd")
    facts = inrcodec.info(path.read_bytes())
    assert facts["model"] == "dct" and facts["bpp"] <= 2.0 * 1.005
    assert facts["coder"] == "zstd"
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "INR", bpp=2.0, steps=80, effort="fast", model="siren")
    assert psnr(np.asarray(Image.open(buf).convert("RGB")), image) > 15


def test_corrupt_files_raise_pillows_usual_errors(inr_path, tmp_path):
    data = inr_path.read_bytes()
    for name, blob in (("cut.inr", data[:40]), ("flipped.inr", data[:30] + bytes([data[30] ^ 1])
                                                + data[31:])):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(UnidentifiedImageError):
            Image.open(tmp_path / name)


def test_grey_files_open_as_mode_l(tmp_path):
    from .helpers import crop
    grey = crop()[..., 0]
    path = tmp_path / "grey.inr"
    path.write_bytes(inrcodec.encode(grey, bpp=3.0, steps=30, effort="fast"))
    im = Image.open(path)
    assert im.mode == "L"
    im.load()
    assert np.asarray(im).shape == grey.shape

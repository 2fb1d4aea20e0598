"""What images the codec accepts, and the one-line errors for the ones it refuses."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from inrcodec import InrInputError, load_image
from inrcodec.imageio import write_atomic


def png_bytes(array: np.ndarray, depth: int, colour_type: int) -> bytes:
    """A PNG written by hand, so 16-bit RGB (which Pillow cannot write) can be made."""
    h, w = array.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) \
        + chunk(b"IEND", b"")


def pil_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


RNG = np.random.default_rng(0)


def test_rgb_and_grey_are_used_as_they_are():
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(load_image(pil_bytes(Image.fromarray(rgb))), rgb)
    grey = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    assert np.array_equal(load_image(pil_bytes(Image.fromarray(grey)))[..., 0], grey)


@pytest.mark.parametrize("depth, colour_type, shape", [(16, 2, (4, 4, 3)), (16, 0, (4, 4)),
                                                       (16, 6, (4, 4, 4))])
def test_sixteen_bit_images_are_refused_not_truncated(depth, colour_type, shape):
    array = RNG.integers(0, 65536, shape)
    with pytest.raises(InrInputError, match="8 bits"):
        load_image(png_bytes(array, depth, colour_type), "deep.png")


def test_opaque_alpha_is_dropped_and_transparency_refused():
    rgba = RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert load_image(pil_bytes(Image.fromarray(rgba))).shape == (4, 4, 3)
    rgba[0, 0, 3] = 10
    with pytest.raises(InrInputError, match="transparency"):
        load_image(pil_bytes(Image.fromarray(rgba)), "alpha.png")


def test_palette_images_become_rgb_or_grey():
    im = Image.fromarray(RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)).quantize(8)
    out = load_image(pil_bytes(im))
    assert out.shape == (6, 6, 3)
    assert np.array_equal(out, np.asarray(im.convert("RGB")))
    grey = Image.fromarray(RNG.integers(0, 256, (6, 6), dtype=np.uint8)).convert("P")
    assert load_image(pil_bytes(grey)).shape == (6, 6, 1)
    with pytest.raises(InrInputError, match="transparency"):
        load_image(pil_bytes(im, transparency=0))


def test_not_an_image_and_damaged_images():
    with pytest.raises(InrInputError, match="not an image"):
        load_image(b"hello world", "notes.txt")
    good = pil_bytes(Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    with pytest.raises(InrInputError, match="damaged|not an image"):
        load_image(good[:60], "cut.png")


def test_empty_and_oversized_arrays_are_refused():
    with pytest.raises(InrInputError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(InrInputError, match="largest side"):
        load_image(np.broadcast_to(np.zeros(1, np.uint8), (1, 20000, 3)))
    with pytest.raises(InrInputError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(InrInputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InrInputError, match="directory"):
        load_image(tmp_path)


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "out.bin"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(InrInputError, match="does not exist"):
        write_atomic(tmp_path / "nowhere" / "x.bin", b"data")

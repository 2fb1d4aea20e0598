"""The .inr container: exact layout, and a parser that only ever raises InrFormatError."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inrcodec
from inrcodec.bitstream import load_model
from inrcodec.errors import InrFormatError

from .helpers import reseal

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_fully(data: bytes) -> None:
    """Everything a decoder does short of rendering: parse, validate, rebuild the weights."""
    load_model(data)


def test_header_layout_is_exact(encoded, image):
    data = encoded.data
    h, w = image.shape[:2]
    assert data[:3] == b"INR" and data[3] == 1
    assert struct.unpack("<HH", data[4:8]) == (w, h)
    assert data[8] == 0x30  # 3 channels, colour transform 0 (rgb)
    assert data[9] == 0  # family id of the plain SIREN
    assert data[10] == 0  # input encoding: none
    width, depth, w0_first, w0 = struct.unpack("<HBee", data[11:18])
    facts = inrcodec.info(data)
    assert (width, depth) == (facts["hparams"]["width"], facts["hparams"]["depth"])
    assert (w0_first, w0) == (60.0, 30.0)  # the plain SIREN's defaults
    assert data[18] == 1  # entropy coder: rans (the default)
    quant = data[19:19 + 5 * 10]
    for i, tensor in enumerate(facts["tensors"]):
        bits, step = struct.unpack("<Bf", quant[5 * i:5 * i + 5])
        assert (bits, step) == (tensor["bits"], pytest.approx(tensor["step"]))
    assert facts["header_bytes"] == 19 + 5 * 10
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_parse_and_serialise_are_inverse(encoded):
    assert inrcodec.parse(encoded.data).to_bytes() == encoded.data


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_format_errors(blob):
    with pytest.raises(InrFormatError):
        read_fully(blob)


@FUZZ
@given(st.binary(min_size=0, max_size=120))
def test_random_bodies_with_valid_magic_and_checksum_raise_only_format_errors(tail):
    with pytest.raises(InrFormatError):
        read_fully(reseal(b"INR\x01" + tail))


@FUZZ
@given(data=st.data())
def test_truncated_files_raise_format_errors(encoded, data):
    cut = data.draw(st.integers(0, len(encoded.data) - 1))
    with pytest.raises(InrFormatError):
        read_fully(encoded.data[:cut])


@FUZZ
@given(data=st.data())
def test_bit_flips_are_caught(encoded, data):
    bit = data.draw(st.integers(0, 8 * len(encoded.data) - 1))
    flipped = bytearray(encoded.data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InrFormatError):
        read_fully(bytes(flipped))


@FUZZ
@given(data=st.data())
def test_forged_edits_with_valid_checksum_never_crash(encoded, data):
    body = bytearray(encoded.data[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        read_fully(reseal(bytes(body)))
    except InrFormatError:
        pass  # refused cleanly; succeeding is fine too (e.g. a changed weight value)


def test_forged_huge_model_is_refused_before_allocation(encoded):
    # 16384 x 8192 image, width 2048, depth 32: ~134M weights claimed by a ~100-byte file,
    # under the format's 2^28: refused, whatever field first gives it away, before any of them
    # is allocated (the payload is decoded before the network is made).
    body = bytearray(encoded.data[:-4])
    body[4:8] = struct.pack("<HH", 16384, 8192)
    body[11:14] = struct.pack("<HB", 2048, 32)
    tracemalloc.start()
    with pytest.raises(InrFormatError):
        read_fully(reseal(bytes(body)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_a_header_declaring_more_values_than_the_format_holds_is_refused(encoded):
    # A gridded header of 64 x 64 cells of 2048-wide networks: 2^34 weights. Its bytes are
    # written by hand (the writer refuses to make such a file).
    from inrcodec.container import InrFile
    from inrcodec.models import get_family
    from inrcodec.quantize import TensorQuant
    layout = get_family("gridded")
    hparams = {"rows": 64, "cols": 64, "width": 2048, "depth": 4, "w0_first": 30.0, "w0": 30.0,
               "overlap": 0.0}
    header = InrFile(width=4096, height=4096, channels=3, color="rgb", layout=layout,
                     hparams=hparams, encoding="none", encoding_params={},
                     quants=[TensorQuant(8, 1.0)] * 10, payload=b"x")
    with pytest.raises(InrFormatError, match="at most 268435456"):
        header.to_bytes()
    tracemalloc.start()
    with pytest.raises(InrFormatError, match="declares 51615117312 weights; at most 268435456"):
        read_fully(reseal(header.header_bytes() + b"x"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("offset, value, message", [
    (3, 3, "version"),
    (4, 0, "size"),
    (8, 0x32, "colour transform"),
    (8, 0x20, "channel"),
    (9, 200, "family"),
    (10, 9, "encoding"),
    (13, 0, "depth"),
    (18, 7, "coder"),
    (19, 1, "bits"),
])
def test_bad_fields_are_named(encoded, offset, value, message):
    body = bytearray(encoded.data[:-4])
    body[offset] = value
    if offset == 4:
        body[5] = 0
    with pytest.raises(InrFormatError, match=message):
        read_fully(reseal(bytes(body)))


def test_bad_step_and_trailing_bytes_are_refused(encoded):
    body = bytearray(encoded.data[:-4])
    body[20:24] = struct.pack("<f", float("nan"))
    with pytest.raises(InrFormatError, match="step"):
        read_fully(reseal(bytes(body)))
    with pytest.raises(InrFormatError, match="payload"):
        read_fully(reseal(encoded.data[:-4] + b"\x00"))


def test_decode_error_messages_are_single_lines(encoded):
    for bad in [b"", b"INR", b"PNG\x89", encoded.data[:30], encoded.data + b"x"]:
        with pytest.raises(InrFormatError) as info:
            inrcodec.decode(bad)
        assert "\n" not in str(info.value)

"""Files users already have keep decoding: committed .inr files and the images they decode to.

A failure here means a change broke the format or the decoder's arithmetic. The fix is never to
regenerate the golden files: bump the format version and keep decoding the older versions as they
were (the ``-layers`` files are version 2's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
import pytest

import inrcodec
from inrcodec import entropy

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.inr"))


def test_there_are_golden_files_for_every_family_and_coder():
    facts = [inrcodec.info((GOLDEN / f"{c}.inr").read_bytes()) for c in CASES]
    assert {f["model"] for f in facts} == set(inrcodec.FAMILIES)
    assert {f["coder"] for f in facts} == set(entropy.CODERS)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scale", [1, 2])
def test_golden_file_decodes_as_it_always_did(case, scale):
    data = (GOLDEN / f"{case}.inr").read_bytes()
    # As Pillow gives a PNG's pixels: (H, W, 3), or (H, W) for the grey case, as decode does.
    expected = np.asarray(Image.open(GOLDEN / (f"{case}.png" if scale == 1 else f"{case}@2x.png")))
    decoded = inrcodec.decode(data, scale=scale)
    assert decoded.shape == expected.shape
    # Tolerance: floating-point rounding may differ between machines and libraries, which can
    # move a value that sits on a rounding boundary by one 8-bit level; nothing more.
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


def test_golden_files_parse_and_reserialise_byte_for_byte():
    for case in CASES:
        data = (GOLDEN / f"{case}.inr").read_bytes()
        assert inrcodec.parse(data).to_bytes() == data
        assert inrcodec.info(data)["format_version"] == (2 if case.endswith("-layers") else 1)

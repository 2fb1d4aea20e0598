"""Shared fixtures, so the suite runs in minutes."""

from __future__ import annotations

import numpy as np
import pytest

import inrcodec

from .helpers import FAST, crop


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return crop()


@pytest.fixture(scope="session")
def encoded(image) -> inrcodec.EncodeResult:
    """One plain-SIREN encoding at 2 bpp, shared by the tests that only read it."""
    return inrcodec.compress(image, model="siren", bpp=2.0, steps=600, **FAST)

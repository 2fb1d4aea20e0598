"""Shared fixtures, so the suite runs in minutes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import inrcodec

from .helpers import FAST, crop

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core (pyproject.toml's addopts): more threads than cores would thrash.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return crop()


@pytest.fixture(scope="session")
def encoded(image) -> inrcodec.EncodeResult:
    """One plain-SIREN encoding at 2 bpp, shared by the tests that only read it."""
    return inrcodec.compress(image, model="siren", bpp=2.0, steps=600, **FAST)

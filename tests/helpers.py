"""Helpers shared by the tests: small deterministic images and fast encoding options."""

from __future__ import annotations

import numpy as np

#: Encoding options that keep tests fast: short training, no compilation.
FAST = dict(effort="fast", compile=False)


def crop(height: int = 48, width: int = 64) -> np.ndarray:
    """A crop of scikit-image's astronaut: a face edge, some texture, some flat background."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[150:150 + height, 200:200 + width])

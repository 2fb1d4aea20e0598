"""The classical codecs, behind one small interface, for comparison.

Each codec maps a quality setting to encoded bytes and back to pixels, in-process: JPEG, WebP,
AVIF and JPEG 2000 through Pillow (their versions are those of Pillow's bundled libraries), and
JPEG XL through imagecodecs' libjxl (the bench extra installs it), swept over the Butteraugli
distance at libjxl's default effort 7.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, features

from ..imageio import to_pil


@dataclass(frozen=True)
class Classical:
    """A codec of Pillow's: ``save(image, setting) -> bytes``, over ``settings``."""

    name: str
    label: str
    feature: str
    settings: tuple[float, ...]
    save: Callable[[Image.Image, float], bytes]

    def available(self) -> bool:
        return bool(features.check(self.feature))

    @property
    def fingerprint(self) -> str:
        """What the results depend on: Pillow's version and its library's."""
        from PIL import __version__ as pillow
        return f"pillow-{pillow}-{features.version(self.feature)}"

    def encode(self, image: np.ndarray, setting: float) -> bytes:
        return self.save(to_pil(image), setting)

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode))
        return array if array.ndim == 3 else array[..., None]


def _saver(fmt: str, **fixed) -> Callable[[Image.Image, float], bytes]:
    def save(im: Image.Image, setting: float) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **fixed, **_setting_kwargs(fmt, setting))
        return buf.getvalue()
    return save


def _setting_kwargs(fmt: str, setting: float) -> dict:
    if fmt == "JPEG2000":
        # Rate mode: the setting is the compression ratio against 24-bit RGB.
        return {"quality_mode": "rates", "quality_layers": [float(setting)], "irreversible": True}
    return {"quality": int(setting)}


class JpegXL:
    """JPEG XL through imagecodecs (libjxl): the setting is the Butteraugli distance."""

    name, label = "jpegxl", "JPEG XL"
    settings = (15.0, 10.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.5)
    effort = 7

    @staticmethod
    def available() -> bool:
        try:
            import imagecodecs
        except ImportError:
            return False
        return bool(imagecodecs.JPEGXL.available)

    @property
    def fingerprint(self) -> str:
        import imagecodecs
        libjxl = imagecodecs.jpegxl_version().removeprefix("libjxl ")
        return f"imagecodecs-{imagecodecs.__version__}-libjxl-{libjxl}"

    def encode(self, image: np.ndarray, setting: float) -> bytes:
        import imagecodecs
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        return bytes(imagecodecs.jpegxl_encode(pixels, distance=float(setting),
                                               effort=self.effort))

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        import imagecodecs
        array = np.asarray(imagecodecs.jpegxl_decode(data))
        return array if array.ndim == 3 else array[..., None]


_JPEG_Q = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 85, 90, 95)
CODECS = {
    "jpeg": Classical("jpeg", "JPEG 4:2:0", "jpg", _JPEG_Q,
                      _saver("JPEG", subsampling=2, optimize=True)),
    "jpeg444": Classical("jpeg444", "JPEG 4:4:4", "jpg", _JPEG_Q,
                         _saver("JPEG", subsampling=0, optimize=True)),
    "webp": Classical("webp", "WebP", "webp",
                      (0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                      _saver("WEBP", method=6)),
    "avif": Classical("avif", "AVIF", "avif",
                      (1, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90),
                      _saver("AVIF")),
    "jpeg2000": Classical("jpeg2000", "JPEG 2000", "jpg_2000",
                          (300, 200, 150, 100, 75, 50, 40, 30, 24, 18, 12, 8),
                          _saver("JPEG2000")),
    "jpegxl": JpegXL(),
}


def jpeg_at_size(image: np.ndarray, max_bytes: int) -> tuple[bytes, int] | None:
    """The highest-quality 4:2:0 JPEG (quality 1..95) of at most ``max_bytes``, with its
    quality; None if even quality 1 is larger."""
    codec = CODECS["jpeg"]
    lo, hi, best = 1, 95, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = codec.encode(image, q)
        if len(data) <= max_bytes:
            best, lo = (data, q), q + 1
        else:
            hi = q - 1
    return best

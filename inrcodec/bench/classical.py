"""The classical codecs, behind one small interface, for comparison.

Each codec maps a quality setting to encoded bytes and back to pixels, in-process: JPEG, WebP,
AVIF and JPEG 2000 through Pillow (their versions are those of Pillow's bundled libraries), and
JPEG XL through imagecodecs' libjxl (the bench extra installs it), swept over the Butteraugli
distance at libjxl's default effort 7.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, features

from ..imageio import to_pil


@dataclass(frozen=True)
class Classical:
    """A codec of Pillow's: ``save(image, setting) -> bytes``, over ``settings``; ``span`` is
    the whole range of its setting (low, high, whole numbers or not), for :func:`at_size`."""

    name: str
    label: str
    feature: str
    settings: tuple[float, ...]
    save: Callable[[Image.Image, float], bytes]
    span: tuple[float, float, bool] = (1, 95, True)
    #: What the settings fixed beside the swept one are, when they changed since the first
    #: runs (so that cached results of the old settings are measured again).
    variant: str = ""

    def available(self) -> bool:
        return bool(features.check(self.feature))

    @property
    def fingerprint(self) -> str:
        """What the results depend on: Pillow's version, its library's and the settings."""
        from PIL import __version__ as pillow
        return f"pillow-{pillow}-{features.version(self.feature)}" + (
            f"-{self.variant}" if self.variant else "")

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
        im.save(buf, fmt, **fixed, **_setting_kwargs(fmt, setting, im.mode))
        return buf.getvalue()
    return save


def _setting_kwargs(fmt: str, setting: float, mode: str) -> dict:
    if fmt == "JPEG2000":
        # Rate mode: the setting is the compression ratio against 24-bit RGB. The 9/7 wavelet
        # and, for colour, the YCbCr transform (mct: without it OpenJPEG codes R, G and B
        # apart, 2.2-4.6 dB lower on kodim05): JPEG 2000's usual lossy settings, as
        # CompressAI's published curve ran them (ffmpeg's libopenjpeg on yuv444p).
        return {"quality_mode": "rates", "quality_layers": [float(setting)], "irreversible": True,
                "mct": 1 if mode == "RGB" else 0}
    return {"quality": int(setting)}


class JpegXL:
    """JPEG XL through imagecodecs (libjxl): the setting is the Butteraugli distance."""

    name, label = "jpegxl", "JPEG XL"
    settings = (15.0, 10.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.5)
    span = (25.0, 0.1, False)
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
                      _saver("WEBP", method=6), (0, 100, True)),
    # libaom through libavif at speed 2 (speed 0, its slowest, measured +0.06 dB for 3x the
    # time), 4:4:4 and tuned for PSNR: +0.7-1.0 dB over Pillow's defaults (speed 6, 4:2:0,
    # libavif's SSIM tuning) at the same rates on kodim01/05/13/23.
    "avif": Classical("avif", "AVIF", "avif",
                      (1, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90),
                      _saver("AVIF", speed=2, subsampling="4:4:4", advanced=[("tune", "psnr")]),
                      (0, 100, True), "speed2-444-psnr"),
    "jpeg2000": Classical("jpeg2000", "JPEG 2000", "jpg_2000",
                          (300, 200, 150, 100, 75, 50, 40, 30, 24, 18, 12, 8),
                          _saver("JPEG2000"), (1000.0, 2.0, False), "mct"),
    "jpegxl": JpegXL(),
}


def at_size(codec: Classical | JpegXL, image: np.ndarray, max_bytes: int
            ) -> tuple[bytes, float] | None:
    """The largest file of ``codec`` of at most ``max_bytes`` over its setting's whole span
    (a bisection: whole settings exactly, others to 1% in log), with its setting; None if even
    the smallest is larger."""
    low, high, whole = codec.span
    if whole:
        lo, hi, best = int(low), int(high), None
        while lo <= hi:
            q = (lo + hi) // 2
            data = codec.encode(image, q)
            if len(data) <= max_bytes:
                best, lo = (data, float(q)), q + 1
            else:
                hi = q - 1
        return best
    smallest = codec.encode(image, low)
    if len(smallest) > max_bytes:
        return None
    best, lo, hi = (smallest, float(low)), math.log(low), math.log(high)
    while abs(hi - lo) > 0.01:
        mid = 0.5 * (lo + hi)
        data = codec.encode(image, math.exp(mid))
        if len(data) <= max_bytes:
            best, lo = (data, math.exp(mid)), mid
        else:
            hi = mid
    return best


def jpeg_at_size(image: np.ndarray, max_bytes: int) -> tuple[bytes, int] | None:
    """The highest-quality 4:2:0 JPEG (quality 1..95) of at most ``max_bytes``, with its
    quality; None if even quality 1 is larger."""
    found = at_size(CODECS["jpeg"], image, max_bytes)
    return None if found is None else (found[0], int(found[1]))

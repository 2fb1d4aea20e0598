"""The codec's limits: one set, read by the encoder and the decoder alike.

**Format limits** say what a `.inr` file can hold at all; a header beyond them is a format error,
and the encoder never writes one:

- :data:`MAX_SIDE`, :data:`FORMAT_MAX_PIXELS`: the largest image a header may declare;
- :data:`MAX_PARAMS`: the most stored values (weights and latents) a header may declare;
- :data:`MAX_FILE_BYTES`: the largest file; a longer input is refused as it is read.

**Request limits** say how much work an encode or a decode does unless the caller allows more,
per call (``max_pixels=``, ``max_work=``; ``--max-pixels``, ``--max-work`` on the command line)
or for the process, by setting these names as Pillow's ``Image.MAX_IMAGE_PIXELS`` is set
(``inrcodec.limits.MAX_PIXELS = ...``):

- :data:`MAX_PIXELS`: the pixels of an image to encode (checked from its header, before its
  pixels are decoded), and of a decode's output;
- :data:`MAX_WORK`: a decode's work in multiply-adds, every stage counted: rendering (output
  pixels times the family's multiply-adds per pixel) and entropy decoding (stored values times
  the coder's cost per value, :attr:`inrcodec.entropy.Coder.work_per_value`, in multiply-adds
  of the same time).

An encode checks its planned file against the decoder's limits before it trains anything
(:func:`inrcodec.ratecontrol.check_decodable`): an image the encoder accepts gives a file that
``inr decode`` and the Pillow plugin decode with the same limits.

This module imports nothing: the command line reads it for its help.
"""

from __future__ import annotations

#: Largest width or height a file declares (the header stores them as u16).
MAX_SIDE = 16384
#: Largest width x height a file declares.
FORMAT_MAX_PIXELS = 1 << 27
#: Most stored values a header declares: every latent of a default latent-family file of a
#: 2^26-pixel image (about 2.7 per pixel) fits.
MAX_PARAMS = 1 << 28
#: Largest `.inr` file (256 MiB: 32 bpp at 2^26 pixels; a 12 MP photo at 1 bpp is 1.5 MB).
MAX_FILE_BYTES = 1 << 28

#: Pixels an encode takes and a decode renders unless the caller allows more (8192 x 8192).
MAX_PIXELS = 1 << 26
#: Multiply-adds a decode may spend unless the caller allows more: 1.1e12, from about a minute
#: (a SIREN's wide layers) to four and a half (the latent family's small synthesis, 4.1e9 a
#: second) on the 2-core development machine (docs/security.md has the measurements).
MAX_WORK = 1 << 40


def pixel_limit(max_pixels: int | None) -> int:
    """The pixel limit of a request: ``max_pixels`` if given, else :data:`MAX_PIXELS`."""
    return MAX_PIXELS if max_pixels is None else int(max_pixels)


def work_limit(max_work: float | None) -> float:
    """The work limit of a request: ``max_work`` if given, else :data:`MAX_WORK`."""
    return MAX_WORK if max_work is None else float(max_work)


def image_file_limit(max_pixels: int | None) -> int:
    """The largest image file read for an encode: four bytes per allowed pixel (an uncompressed
    RGBA file) and 64 MiB for metadata and container overhead."""
    return 4 * min(pixel_limit(max_pixels), FORMAT_MAX_PIXELS) + (64 << 20)

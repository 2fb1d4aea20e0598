"""inrcodec: a neural image codec, an image stored as a small network fitted to it.

The pipeline, one module per stage (docs/architecture.md)::

    imageio (load, validate) -> color (transform) -> fit (train a models.* family)
        -> quantize -> entropy (rANS with a context model, or zstd) -> container (.inr bytes)

with :mod:`.options` (what an encode is asked for), :mod:`.presets` (efforts) and
:mod:`.ratecontrol` (budget to model shape and quantisers) around it, and back through
:mod:`.decoder`, which needs none of the training code. Quick use::

    import inrcodec
    data = inrcodec.encode(image, bpp=0.5)          # image: path, bytes, PIL image or uint8 array
    pixels = inrcodec.decode(data, scale=2.0)       # uint8 array (H, W, 3) at twice the size

Importing the package is cheap: each name below loads its module (and torch) when first used.
"""

from __future__ import annotations

import importlib

from .errors import InrError, InrFormatError, InrInputError, InrWarning
from .pillow import register as _register_pillow_plugin

__version__ = "0.1.0"

#: Public name -> the module that defines it (loaded on first use).
_LAZY = {
    "EncodeOptions": "options", "EFFORTS": "presets", "FAMILY_NAMES": "presets",
    "EncodeResult": "encoder", "compress": "encoder", "encode": "encoder",
    "decode": "decoder", "info": "decoder",
    "load_model": "bitstream", "parse": "bitstream",
    "InrFile": "container", "load_image": "imageio", "quality_to_bpp": "ratecontrol",
    "FAMILIES": "models",
}
_RENAMED = {"parse": "read"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'inrcodec' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_register_pillow_plugin()

__all__ = ["EFFORTS", "FAMILIES", "FAMILY_NAMES", "EncodeOptions", "EncodeResult", "InrError",
           "InrFile", "InrFormatError", "InrInputError", "InrWarning", "__version__", "compress",
           "decode", "encode", "info", "load_image", "load_model", "parse", "quality_to_bpp"]

"""inrcodec: images stored as the quantised weights of small sine-activated networks.

The pipeline, one module per stage::

    imageio (load, validate) -> color (transform) -> fit (train a models.* family)
        -> quantize -> entropy (zstd) -> container (.inr bytes)

and back through :func:`decode`. Quick use::

    import inrcodec
    data = inrcodec.encode(image, bpp=0.5)          # image: path, bytes, PIL image or uint8 array
    pixels = inrcodec.decode(data, scale=2.0)       # uint8 array (H, W, 3) at twice the size
"""

from .codec import (EFFORTS, EncodeResult, compress, decode, encode, info, load_model,
                    quality_to_bpp)
from .container import InrFile, parse
from .errors import InrError, InrFormatError, InrInputError
from .imageio import load_image
from .models import FAMILIES
from .pillow import register as _register_pillow_plugin

__version__ = "0.1.0"

_register_pillow_plugin()

__all__ = ["EFFORTS", "EncodeResult", "FAMILIES", "InrError", "InrFile", "InrFormatError",
           "InrInputError", "__version__", "compress", "decode", "encode", "info", "load_image",
           "load_model", "parse", "quality_to_bpp"]

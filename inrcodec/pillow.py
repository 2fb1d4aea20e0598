"""A Pillow plugin: `.inr` files open, load, convert, thumbnail and save like any other format.

Registered by ``import inrcodec`` (this module needs no explicit import)::

    from PIL import Image
    import inrcodec

    im = Image.open("photo.inr")          # validates the file, renders nothing yet
    im.draft("RGB", (200, 150))          # optional: render smaller (what thumbnail() does)
    im.load()                            # renders the network
    Image.open("photo.png").save("photo.inr", bpp=0.5, model="gridded")

``Image.open`` reads and checks the whole file (header, checksum: files are small) and raises
Pillow's usual ``UnidentifiedImageError`` for a corrupt one; the network is rebuilt and rendered
by ``load()``. Size requests follow JPEG's ``draft()`` convention, but any scale is exact, not
only 1/2, 1/4 and 1/8: ``draft(mode, (w, h))`` renders the smallest size of the image's aspect
ratio that covers (w, h), never larger than the stored size. ``render_at((w, h))`` renders at
exactly (w, h), larger than stored too: the network is continuous. Saving takes the settings
of :func:`inrcodec.encode` (``bpp``, ``quality``, ``model``, ``effort``, ..., any key of
:class:`~inrcodec.options.EncodeOptions`), or ``options=EncodeOptions(...)``; an unknown key is
an error naming the valid ones. Registering the plugin imports nothing but Pillow.
"""

from __future__ import annotations

import math

from PIL import Image, ImageFile

from .errors import InrError

FORMAT = "INR"
#: The magic and the format versions this build reads (the container checks them again).
MAGIC, VERSIONS = b"INR", (1, 2)


def _accept(prefix: bytes) -> bool:
    return prefix[:3] == MAGIC and len(prefix) > 3 and prefix[3] in VERSIONS


class InrImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "Implicit neural representation (inrcodec)"

    def _open(self) -> None:
        from .bitstream import read
        from .decoder import read_inr
        try:
            header = read(read_inr(self.fp))
        except InrError as exc:
            raise SyntaxError(str(exc)) from None
        self.stored_size = (header.width, header.height)
        self._size = self.stored_size
        self._mode = "RGB" if header.channels == 3 else "L"
        self.info["model"] = header.family
        self.info["hparams"] = dict(header.hparams)
        self.tile = [ImageFile._Tile(FORMAT, (0, 0) + self.size, 0, None)]

    def render_at(self, size: tuple[int, int]) -> None:
        """Render at exactly ``size`` (width, height) when loaded; before ``load()`` only."""
        if self._im is not None:
            return
        self._size = (int(size[0]), int(size[1]))
        self.tile = [ImageFile._Tile(FORMAT, (0, 0) + self.size, 0, None)]

    def draft(self, mode, size):
        if size is None or self._im is not None:
            return None
        w, h = self.stored_size
        scale = min(1.0, max(size[0] / w, size[1] / h))
        self.render_at((max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        return self.mode, (0, 0) + self.size


class InrDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer):
        from .decoder import decode
        assert self.fd is not None and self.state is not None
        self.fd.seek(0)
        try:
            pixels = decode(self.fd, size=(self.state.xsize, self.state.ysize))
        except InrError as exc:
            raise OSError(str(exc)) from None
        self.set_as_raw(pixels.tobytes(), "RGB" if pixels.ndim == 3 else "L")
        return -1, 0


def _save(im: Image.Image, fp, filename) -> None:
    from .encoder import encode
    settings = dict(im.encoderinfo)
    options = settings.pop("options", None)
    try:
        fp.write(encode(im, options, **settings))
    except InrError as exc:
        raise OSError(str(exc)) from None


def register() -> None:
    Image.register_open(FORMAT, InrImageFile, _accept)
    Image.register_decoder(FORMAT, InrDecoder)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".inr")
    Image.register_mime(FORMAT, "image/x-inr")

"""Pipeline stage 0: images in and out, validated, and files written so that nothing is lost.

Images enter the codec as ``uint8`` arrays of shape (H, W, C) with C = 3 (RGB) or C = 1 (grey).
What the codec accepts, and what it refuses with a one-line :class:`InrInputError`:

- 8-bit RGB and grey images are used as they are; 1-bit images become grey.
- Palette images become RGB (or grey, if every palette entry is grey).
- An alpha channel that is fully opaque is dropped; real transparency is refused, since a
  `.inr` file stores no alpha channel.
- 16-bit, 32-bit and floating-point images are refused rather than silently truncated.
- CMYK, YCbCr and LAB images are converted to RGB by Pillow.
- Empty images, and images larger than :data:`~.limits.MAX_SIDE` per side or over the pixel
  limit (:data:`~.limits.MAX_PIXELS` unless the caller allows more, at most
  :data:`~.limits.FORMAT_MAX_PIXELS`), are refused from the file's header, before its pixels are
  decoded; so is a file larger than any image within the limit can need
  (:func:`~.limits.image_file_limit`), as it is read.
- An EXIF orientation is applied (the image is encoded as a photo tool shows it); an animated
  image's first frame is encoded and an ICC profile is dropped, each with an
  :class:`InrWarning` saying so.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import limits
from .errors import InrInputError, InrWarning

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike, bytes, BinaryIO]


def check_size(height: int, width: int, what: str = "image", max_pixels: int | None = None
               ) -> None:
    """Refuse an image of this size: empty, a side over MAX_SIDE, or more pixels than
    ``max_pixels`` (None: the default limit, :data:`~.limits.MAX_PIXELS`), which may be
    raised up to the format's FORMAT_MAX_PIXELS."""
    if height <= 0 or width <= 0:
        raise InrInputError(f"{what} is empty ({width}x{height})")
    if height > limits.MAX_SIDE or width > limits.MAX_SIDE:
        raise InrInputError(f"{what} is {width}x{height}; the largest side supported is "
                            f"{limits.MAX_SIDE}")
    allowed = limits.pixel_limit(max_pixels)
    if height * width > min(allowed, limits.FORMAT_MAX_PIXELS):
        if allowed >= limits.FORMAT_MAX_PIXELS:
            raise InrInputError(f"{what} is {width}x{height} = {width * height} pixels; the "
                                f"format holds at most {limits.FORMAT_MAX_PIXELS}")
        raise InrInputError(f"{what} is {width}x{height} = {width * height} pixels, more than "
                            f"the limit of {allowed}; downscale it, or allow it with "
                            f"--max-pixels (max_pixels=), up to {limits.FORMAT_MAX_PIXELS}")


def _is_deep(im: Image.Image) -> bool:
    """True when Pillow decodes more than 8 bits per sample (it silently truncates 16-bit RGB
    PNGs to "RGB", so the raw mode of a not-yet-loaded image is checked too)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        return True
    for tile in getattr(im, "tile", None) or []:
        rawmode = tile[3] if isinstance(tile, tuple) and len(tile) > 3 else getattr(tile, "args", "")
        if isinstance(rawmode, tuple):
            rawmode = rawmode[0] if rawmode else ""
        if isinstance(rawmode, str) and (";16" in rawmode or ";32" in rawmode):
            return True
    return False


def _drop_alpha(array: np.ndarray, name: str) -> np.ndarray:
    if not np.all(array[..., -1] == 255):
        raise InrInputError(f"{name} has transparency; .inr stores no alpha channel, "
                            "flatten the image onto a background first")
    return array[..., :-1]


def from_pil(im: Image.Image, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """A validated (H, W, C) uint8 array from a Pillow image (``max_pixels``: check_size's)."""
    if _is_deep(im):
        raise InrInputError(f"{name} has more than 8 bits per sample ({im.mode}); "
                            "convert it to 8-bit first")
    check_size(im.height, im.width, name, max_pixels)
    mode = im.mode
    was_palette = mode in ("P", "PA")
    if was_palette:
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im, mode = im.convert("RGB"), "RGB"
    elif mode not in ("RGB", "RGBA", "L", "LA", "RGBX", "RGBa", "La"):
        raise InrInputError(f"{name} has an unsupported mode {mode}")
    if mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
        mode = im.mode
    array = np.asarray(im)
    if mode == "RGBX":
        array = array[..., :3]
    elif mode in ("RGBA", "LA"):
        array = _drop_alpha(array, name)
    if array.ndim == 2:
        array = array[..., None]
    if was_palette and np.array_equal(array[..., 0], array[..., 1]) \
            and np.array_equal(array[..., 1], array[..., 2]):
        array = array[..., :1]  # a grey palette is a grey image
    return np.ascontiguousarray(array, dtype=np.uint8)


def from_array(array: np.ndarray, name: str = "image", max_pixels: int | None = None
               ) -> np.ndarray:
    """A validated (H, W, C) uint8 array from a numpy array of shape (H, W) or (H, W, 1|3|4)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise InrInputError(f"{name} must be uint8, not {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise InrInputError(f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                            f"not {array.shape}")
    check_size(array.shape[0], array.shape[1], name, max_pixels)
    if array.shape[-1] in (2, 4):
        array = _drop_alpha(array, name)
    return np.ascontiguousarray(array)


#: Bytes read at a time from a file or a stream.
READ_CHUNK = 1 << 20


def read_binary(source, what: str, limit: int | None = None,
                check_start: Callable[[bytes], None] | None = None) -> bytes:
    """The bytes of a path, bytes or a binary file; anything else is refused in one line.

    With ``limit``, an input of more than ``limit`` bytes is refused as it is read, after at
    most ``limit + 1`` bytes (a device such as /dev/zero, a pipe, a huge file); a regular file is
    refused by its size before any is read. ``check_start`` is shown the first bytes read (up
    to READ_CHUNK) and may refuse them before the rest is read (a file's magic number)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if check_start is not None:
            check_start(data[:READ_CHUNK])
        if limit is not None and len(data) > limit:
            raise InrInputError(f"{what} of {len(data)} bytes is larger than the {limit} "
                                "bytes allowed")
        return data
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if limit is not None and size > limit:
                    raise InrInputError(f"{source} is {size} bytes, larger than the {limit} "
                                        f"bytes allowed for {what}")
                return _read_bounded(f, str(source), what, limit, check_start)
        except FileNotFoundError:
            raise InrInputError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise InrInputError(f"{source} is a directory") from None
        except OSError as exc:
            raise InrInputError(f"{source}: {exc.strerror or exc}") from None
    if not callable(getattr(source, "read", None)):
        raise InrInputError(f"cannot read {what} from a {type(source).__name__}: give a path, "
                            "bytes or a binary file")
    return _read_bounded(source, getattr(source, "name", "input"), what, limit, check_start)


def _read_bounded(f: BinaryIO, name: str, what: str, limit: int | None,
                  check_start: Callable[[bytes], None] | None) -> bytes:
    """``f``'s bytes, at most ``limit`` of them (more is an error), the first checked."""
    parts: list[bytes] = []
    total = 0
    while True:
        want = READ_CHUNK if limit is None else min(READ_CHUNK, limit + 1 - total)
        part = f.read(want)
        if not isinstance(part, (bytes, bytearray)):
            raise InrInputError(f"cannot read {what} from {name}: give a path, bytes or a "
                                "binary file")
        if not part:
            break
        if not parts and check_start is not None:
            check_start(bytes(part))
        parts.append(bytes(part))
        total += len(part)
        if limit is not None and total > limit:
            raise InrInputError(f"{name} is larger than the {limit} bytes allowed for {what}")
    return b"".join(parts)


def load_image(source: ImageLike, name: str | None = None, max_pixels: int | None = None
               ) -> np.ndarray:
    """Read an image from a path, bytes, a binary file, a PIL image or an array.

    Its size is checked from the file's header, before its pixels are decoded: at most
    ``max_pixels`` (None: :data:`~.limits.MAX_PIXELS`). A file larger than any image within that
    limit needs (:func:`~.limits.image_file_limit`) is refused as it is read."""
    if isinstance(source, np.ndarray):
        return from_array(source, name or "image", max_pixels)
    if isinstance(source, Image.Image):
        return from_pil(source, name or "image", max_pixels)
    if not isinstance(source, (bytes, bytearray, memoryview)):
        path = isinstance(source, (str, os.PathLike))
        name = name or (str(source) if path else getattr(source, "name", "input"))
        source = read_binary(source, "an image", limits.image_file_limit(max_pixels))
    name = name or "input"
    try:
        with warnings.catch_warnings():
            # Our own limit is checked below, from the header; Pillow's error at twice its
            # MAX_IMAGE_PIXELS (179 M pixels) is above the format's limit anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(bytes(source)))
            if im.format == "INR":
                raise InrInputError(f"{name} is an .inr file already; decode it to an image "
                                    "first if you mean to encode it again")
            check_size(im.height, im.width, name, max_pixels)  # before a pixel is decoded
            if _is_deep(im):  # before load(), which forgets the raw sample format
                raise InrInputError(f"{name} has more than 8 bits per sample; "
                                    "convert it to 8-bit first")
            im.load()
            frames = getattr(im, "n_frames", 1)
            im = ImageOps.exif_transpose(im)  # as a photo tool shows it
    except InrInputError:
        raise
    except Image.DecompressionBombError:
        raise InrInputError(f"{name} has more than the {limits.FORMAT_MAX_PIXELS} pixels the "
                            "format holds") from None
    except UnidentifiedImageError:
        raise InrInputError(f"{name} is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InrInputError(f"{name} is a damaged image: {exc}") from None
    if frames > 1:
        warnings.warn(f"{name} has {frames} frames; only the first is encoded", InrWarning,
                      stacklevel=2)
    if im.info.get("icc_profile"):
        warnings.warn(f"{name} has an ICC colour profile, which a .inr file does not keep: "
                      "its pixels are encoded as they are", InrWarning, stacklevel=2)
    return from_pil(im, name, max_pixels)


def to_pil(array: np.ndarray) -> Image.Image:
    """A Pillow image ("RGB" or "L") from a uint8 array (H, W, 3), (H, W, 1) or (H, W)."""
    return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format an output path asks for by its extension (PNG without one, and for
    ``-``, standard output); an extension Pillow cannot write is refused, and so is ``.inr``,
    which is not an image a decode writes."""
    ext = Path(str(path)).suffix.lower()
    if not ext or str(path) == "-":
        return "PNG"
    if ext == ".inr":
        raise InrInputError(f"{path}: a decode writes an image (.png, .jpg, ...), not an .inr "
                            "file; to re-encode, decode to .png and encode that")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise InrInputError(f"{path}: Pillow cannot write {ext} files; use .png, .webp, .tif, "
                            ".bmp or .jpg")
    return fmt


def image_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    to_pil(array).save(buf, fmt)
    return buf.getvalue()


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output path that cannot be written, before any work: its folder must exist
    and be writable, and the path must not be a folder. ``-`` (standard output) always can."""
    if str(path) == "-":
        return
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InrInputError(f"cannot write {path}: folder {folder} does not exist")
    link = path.is_symlink()  # replaced by the new file (write_atomic), never written through
    if path.is_dir() and not link:
        raise InrInputError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK) or (path.exists() and not link
                                          and not os.access(path, os.W_OK)):
        raise InrInputError(f"cannot write {path}: permission denied")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    A ``path`` that is a symbolic link is replaced by the file, not written through.
    The file gets the permissions any other tool would give it (0666 less the umask; the
    temporary file's own are 0600). ``-`` writes to standard output.
    """
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    check_writable(path)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

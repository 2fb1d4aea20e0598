"""Where benchmark images come from: a folder, Kodak beside the project, or scikit-image."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InrInputError
from ..imageio import load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
#: Sample images that ship with scikit-image, used when no data set is at hand.
SKIMAGE_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class BenchImage:
    name: str
    pixels: np.ndarray

    @property
    def digest(self) -> str:
        """Identifies the pixels, for the result cache."""
        h = hashlib.sha1(self.pixels.tobytes())
        h.update(repr(self.pixels.shape).encode())
        return h.hexdigest()[:16]


def default_dataset() -> Path | None:
    """``../shared/datasets/kodak`` beside the working folder or beside the project."""
    project = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), project):
        candidate = root.parent / "shared" / "datasets" / "kodak"
        if candidate.is_dir():
            return candidate
    return None


def centre_crop(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    width, height = min(width, w), min(height, h)
    y0, x0 = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(pixels[y0:y0 + height, x0:x0 + width])


def load_dataset(folder: Path | None, limit: int | None = None,
                 crop: tuple[int, int] | None = None, names: list[str] | None = None
                 ) -> tuple[str, list[BenchImage]]:
    """The data set's name and its images (sorted by file name), optionally only ``names``
    (file stems), the first ``limit``, and centre-cropped to ``crop`` = (width, height)."""
    if folder is None:
        folder = default_dataset()
    images: list[BenchImage] = []
    if folder is None:
        from skimage import data
        name = "scikit-image samples"
        for sample in SKIMAGE_SAMPLES[:limit]:
            images.append(BenchImage(sample, np.ascontiguousarray(getattr(data, sample)())))
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise InrInputError(f"{folder} is not a folder of images")
        name = folder.name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if names:
            missing = set(names) - {p.stem for p in files}
            if missing:
                raise InrInputError(f"{folder} has no image(s) {', '.join(sorted(missing))}")
            files = [p for p in files if p.stem in names]
        if not files:
            raise InrInputError(f"{folder} holds no images")
        for path in files[:limit]:
            images.append(BenchImage(path.stem, load_image(path)))
    if crop is not None:
        images = [BenchImage(im.name, centre_crop(im.pixels, *crop)) for im in images]
    return name, images

"""The demo behind ``inr demo``: the whole codec on a sample image that ships with scikit-image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from inrcodec.bench.classical import CODECS, jpeg_at_size
from inrcodec.decoder import decode
from inrcodec.encoder import compress
from inrcodec.imageio import image_bytes, write_atomic
from inrcodec.metrics import psnr


def sample_image() -> tuple[str, np.ndarray]:
    """scikit-image's astronaut (512 x 512 RGB, public domain, NASA)."""
    from skimage import data
    return "astronaut", np.ascontiguousarray(data.astronaut())


def run_demo(out: Path, effort: str = "default", bpp: float = 0.5,
             echo: Callable[[str], None] = print, progress=None) -> dict:
    name, image = sample_image()
    out.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    echo(f"encoding {name} ({w}x{h}) at {bpp} bpp, effort {effort} ...")
    if progress is None:
        from contextlib import nullcontext
        context = nullcontext(None)
    else:
        context = progress(name)
    with context as callback:
        result = compress(image, bpp=bpp, effort=effort, progress=callback)
    inr_path = out / f"{name}.inr"
    write_atomic(inr_path, result.data)
    write_atomic(out / f"{name}.png", image_bytes(image))

    t = time.perf_counter()
    decoded = decode(result.data)
    decode_seconds = time.perf_counter() - t
    write_atomic(out / f"{name}_decoded.png", image_bytes(decoded))
    double = decode(result.data, scale=2)
    write_atomic(out / f"{name}_2x.png", image_bytes(double))

    facts = {"bytes": result.bytes, "bpp": result.bpp, "psnr": psnr(decoded, image),
             "encode_seconds": result.seconds, "decode_seconds": decode_seconds,
             "model": result.description}
    echo(f"{inr_path}: {result.bytes} bytes = {result.bpp:.3f} bpp, PSNR {facts['psnr']:.2f} dB, "
         f"encode {result.seconds:.1f} s, decode {decode_seconds:.2f} s")
    echo(f"  model {result.description}")
    echo(f"  decoded at 1x -> {out / (name + '_decoded.png')} ({w}x{h}), "
         f"at 2x -> {out / (name + '_2x.png')} ({double.shape[1]}x{double.shape[0]})")
    jpeg = jpeg_at_size(image, result.bytes)
    if jpeg is None:
        echo("  JPEG cannot get this small: even quality 1 is larger")
    else:
        data, quality = jpeg
        jpeg_psnr = psnr(CODECS["jpeg"].decode(data), image)
        facts.update(jpeg_bytes=len(data), jpeg_quality=quality, jpeg_psnr=jpeg_psnr)
        write_atomic(out / f"{name}_jpeg_q{quality}.jpg", data)
        echo(f"  JPEG at the same size (quality {quality}, {len(data)} bytes): "
             f"PSNR {jpeg_psnr:.2f} dB -> {'inr ahead' if facts['psnr'] > jpeg_psnr else 'JPEG ahead'}"
             f" by {abs(facts['psnr'] - jpeg_psnr):.2f} dB")
    return facts

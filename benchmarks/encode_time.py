"""How an encode's time splits and grows with the image: the measurements behind
``inrcodec.pace`` (the estimate before a long encode and the time left during one).

    python benchmarks/encode_time.py MOSAIC.png --sizes 768x512,1536x1024,3072x2048 \
        --families latent,gridded,residual,dct,siren --effort fast

Each (family, size) is one encode of a top-left crop of the image, in a fresh process (as a
user's ``inr encode``; in one process, a compiled step is compiled again for every new shape),
on all cores, traced through the progress callback: the seconds before the first training step's
report (``setup``: loading, sizing, compiling the step), the seconds per training step (the
slope of time against steps over the fit, evaluations and rate control's measurements
included), and the seconds after the last step (``tail``: quantisation, entropy coding, the
final render). Run it on an idle machine: torch's threads slow down sharply when anything else
runs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def trace(pixels: np.ndarray, **settings) -> dict:
    """One encode's (time, step) reports and its result."""
    import inrcodec
    reports: list[tuple[float, int, int]] = []
    start = time.perf_counter()
    result = inrcodec.compress(pixels, progress=lambda p: reports.append(
        (time.perf_counter() - start, p.step, p.total)), **settings)
    end = time.perf_counter() - start
    training = [(t, s) for t, s, _ in reports if s > 0]
    (t0, s0), (t1, s1) = training[0], training[-1]
    per_step = (t1 - t0) / max(1, s1 - s0)
    return {"pixels": int(pixels.shape[0] * pixels.shape[1]), "values": result.params,
            "steps": reports[-1][2], "setup": t0 - s0 * per_step, "per_step": per_step,
            "tail": end - t1, "seconds": end, "psnr": result.psnr, "bpp": result.bpp}


def main() -> None:
    import subprocess
    import sys

    from PIL import Image
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--sizes", default="768x512,1536x1024,3072x2048")
    parser.add_argument("--families", default="latent,gridded,residual,dct,siren")
    parser.add_argument("--effort", default="fast")
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--one", action="store_true", help="one family and size, here")
    args = parser.parse_args()
    if not args.one:
        for family in args.families.split(","):
            for size in args.sizes.split(","):
                subprocess.run([sys.executable, __file__, args.image, "--one", "--families",
                                family, "--sizes", size, "--effort", args.effort, "--bpp",
                                str(args.bpp)], check=True)
        return
    image = np.asarray(Image.open(args.image).convert("RGB"))
    w, h = (int(v) for v in args.sizes.split("x"))
    row = trace(np.ascontiguousarray(image[:h, :w]), model=args.families, effort=args.effort,
                bpp=args.bpp)
    print(json.dumps({"family": args.families, "effort": args.effort, **row}), flush=True)


if __name__ == "__main__":
    main()

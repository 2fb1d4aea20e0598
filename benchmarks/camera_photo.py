"""Issue 35's target 5: a camera-sized photo against its own 768x512 centre crop, per effort.

    python benchmarks/camera_photo.py PHOTO.jpg --out /tmp/camera --bpp 0.5 --efforts default,fast

The photo's 4000x3000 centre (12 MP) and the 768x512 centre of that are each encoded by the
library in a fresh process (its import not timed), which reports the encode's seconds and its
peak memory (the process's maximum resident set, imports included); WebP (method 6) is then
taken at the largest file no larger, as the Kodak benchmark does. One JSON line per encode, then
per effort: seconds per megapixel of the photo over the crop's (target: at most 1.25), the
photo's peak memory (at most 2 GiB), and the photo's PSNR lead over WebP less the crop's (at
least -0.3 dB). Run it on an idle machine; a default-effort encode of 12 MP takes about half an
hour on two cores.

The photo used for the figures in docs/experiments.md: alfred-schrock-shoE2y51uX0-unsplash.jpg
(4607x3648) of the public repository SqueezeSoftware/test_files (Unsplash/jpg_original), one of
the held-out photos that no setting was tuned on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

#: The child process: one encode, timed without the imports, then WebP at its size.
CHILD = """
import json, resource, sys, time
import numpy as np
from PIL import Image
import inrcodec
from inrcodec.bench.classical import CODECS, at_size
from inrcodec.metrics import psnr
path, bpp, effort = sys.argv[1], float(sys.argv[2]), sys.argv[3]
image = np.asarray(Image.open(path).convert("RGB"))
start = time.perf_counter()
result = inrcodec.compress(image, bpp=bpp, effort=effort)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
webp = at_size(CODECS["webp"], image, result.bytes)
pixels = image.shape[0] * image.shape[1]
print(json.dumps({"bpp": result.bpp, "psnr": result.psnr, "seconds": seconds,
                  "s_per_mp": seconds / pixels * 1e6, "peak_mib": peak,
                  "webp_bpp": 8 * len(webp[0]) / pixels if webp else None,
                  "webp_psnr": psnr(CODECS["webp"].decode(webp[0]), image) if webp else None}))
"""


def centre(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < height or w < width:
        raise SystemExit(f"the photo is {w}x{h}, smaller than {width}x{height}")
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(image[top:top + height, left:left + width])


def encode(path: Path, bpp: float, effort: str) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(bpp), effort],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"the encode of {path} failed: {run.stderr.strip()[-500:]}")
    row = json.loads(run.stdout.strip().splitlines()[-1])
    row["lead"] = row["psnr"] - row["webp_psnr"] if row["webp_psnr"] is not None else None
    return row


def main() -> None:
    from PIL import Image
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--out", type=Path, default=Path("camera-photo"))
    parser.add_argument("--bpp", type=float, default=0.5)
    parser.add_argument("--efforts", default="default,fast")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photo = centre(np.asarray(Image.open(args.photo).convert("RGB")), 4000, 3000)
    paths = {"photo": args.out / "photo-4000x3000.png", "crop": args.out / "crop-768x512.png"}
    Image.fromarray(photo).save(paths["photo"])
    Image.fromarray(centre(photo, 768, 512)).save(paths["crop"])
    for effort in args.efforts.split(","):
        rows = {}
        for name, path in paths.items():
            rows[name] = encode(path, args.bpp, effort)
            print(json.dumps({"image": name, "effort": effort, "target": args.bpp,
                              **rows[name]}), flush=True)
        photo_row, crop_row = rows["photo"], rows["crop"]
        print(json.dumps({
            "effort": effort,
            "s_per_mp_over_crop": photo_row["s_per_mp"] / crop_row["s_per_mp"],
            "peak_mib": photo_row["peak_mib"],
            "lead_less_crop_lead": photo_row["lead"] - crop_row["lead"]
            if None not in (photo_row["lead"], crop_row["lead"]) else None,
            "landed": photo_row["bpp"] / args.bpp}), flush=True)


if __name__ == "__main__":
    main()

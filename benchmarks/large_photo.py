"""A camera-sized photo through the codec, as a user runs it: the warning before a long encode,
the time left while it runs against the real time, and the file decoded by ``inr decode`` and
the Pillow plugin.

    python benchmarks/large_photo.py ../shared/datasets/kodak --out /tmp/large

The photo is 4000x3000 (12 MP), a mosaic of the eighteen landscape Kodak images (768x512 each,
six by six, cut to size): real photographic content at a camera's pixel count, built here from
the data set rather than stored. It is encoded in this process with the defaults, through the
library's progress reports (whose ``eta`` is what ``inr encode``'s bar shows), then decoded by
``inr decode`` and by the Pillow plugin in fresh processes, each timed with its peak memory. The
time left is compared with the real time left at every report from 10% of the steps on (and to
90%: near the end a few seconds are a large share). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def mosaic(kodak: Path, width: int = 4000, height: int = 3000) -> np.ndarray:
    from PIL import Image
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(kodak.glob("kodim*.png"))]
    tiles = [t for t in tiles if t.shape[:2] == (512, 768)]
    rows, cols = -(-height // 512), -(-width // 768)
    grid = [np.concatenate([tiles[(r * cols + c) % len(tiles)] for c in range(cols)], axis=1)
            for r in range(rows)]
    return np.ascontiguousarray(np.concatenate(grid, axis=0)[:height, :width])


def measured(args: list[str]) -> dict:
    """A command in a fresh process: exit status, seconds, peak memory (MiB), stderr."""
    wrapper = ("import resource, subprocess, sys, time\nstart = time.perf_counter()\n"
               "run = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "print(run.returncode, time.perf_counter() - start,"
               " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.stderr.write(run.stderr + run.stdout)")
    run = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True)
    status, seconds, peak = run.stdout.split()
    return {"status": int(status), "seconds": float(seconds), "peak_mib": int(peak) / 1024,
            "output": run.stderr.strip()[-300:]}


def main() -> None:
    from PIL import Image

    import inrcodec
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kodak", type=Path)
    parser.add_argument("--out", type=Path, default=Path("large-photo"))
    parser.add_argument("--effort", default="default")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photo = mosaic(args.kodak)
    png = args.out / "mosaic-4000x3000.png"
    Image.fromarray(photo).save(png)

    reports: list[tuple[float, int, int, float | None]] = []
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", inrcodec.InrWarning)
        result = inrcodec.compress(photo, effort=args.effort, progress=lambda p: reports.append(
            (time.perf_counter() - start, p.step, p.total, p.eta)))
    end = time.perf_counter() - start
    inr = args.out / "mosaic-4000x3000.inr"
    inr.write_bytes(result.data)
    first_step = next(t for t, step, _, _ in reports if step > 0)
    total = reports[-1][2]
    errors = [(step, t, eta, end - t) for t, step, _, eta in reports
              if eta is not None and 0.1 * total <= step <= 0.9 * total and step > 0]
    worst = max(errors, key=lambda e: abs(e[2] - e[3]) / e[3])
    summary = {
        "image": "4000x3000 mosaic of the landscape Kodak images",
        "effort": args.effort,
        "warning": [str(w.message) for w in caught],
        "estimate_seconds": reports[0][3],
        "first_step_at": first_step,
        "encode_seconds": end,
        "bytes": result.bytes, "bpp": result.bpp, "psnr": result.psnr,
        "eta_worst_relative_error_10_to_90": (worst[2] - worst[3]) / worst[3],
        "eta_worst_at": {"step": worst[0], "seconds": worst[1], "eta": worst[2],
                         "real_left": worst[3]},
        "eta_at_10_percent": next({"step": s, "eta": e, "real_left": r} for s, _, e, r in errors),
        "decode": measured([sys.executable, "-m", "inrcodec_cli", "decode", str(inr), "-o",
                            str(args.out / "decoded.png")]),
        "pillow": measured([sys.executable, "-c", "import sys, inrcodec\nfrom PIL import Image\n"
                            f"im = Image.open({str(inr)!r}); im.load(); print(im.size)"]),
    }
    (args.out / "reports.json").write_text(json.dumps(reports))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

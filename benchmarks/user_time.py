"""Encode time as a user meets it: ``inr encode`` in a fresh process, on every core, start-up,
imports and compilation included, one run at a time.

    python benchmarks/user_time.py ../shared/datasets/kodak --images kodim01,kodim02,kodim03,\\
        kodim04,kodim05,kodim06 --bpp 0.25,0.5,1.0 --model gridded

Prints one line per encode (wall seconds, bytes, bpp, PSNR of the decoded file)
and the median. The benchmark's ``encode_seconds`` is another figure: a warm worker of one
thread, with another encode beside it. Run this on an idle machine: it warns when the load
average says something else is running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The ``inr`` command of this interpreter's environment (a venv need not be activated).
INR = str(Path(sys.executable).with_name("inr"))
#: A one-minute load average above this means something else is running.
BUSY_LOAD = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="folder of images")
    parser.add_argument("--images", required=True, help="comma-separated file stems")
    parser.add_argument("--bpp", default="0.25,0.5,1.0", help="comma-separated rates")
    parser.add_argument("--model", default="gridded")
    parser.add_argument("--effort", default="default")
    args = parser.parse_args()

    import numpy as np

    import inrcodec
    from inrcodec.imageio import load_image
    from inrcodec.metrics import psnr

    if os.getloadavg()[0] > BUSY_LOAD:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is not idle, "
              "the times will not hold", file=sys.stderr)
    files = {p.stem: p for p in args.dataset.iterdir()}
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for stem in args.images.split(","):
            source = files[stem]
            for bpp in args.bpp.split(","):
                out = Path(tmp) / f"{stem}-{bpp}.inr"
                command = [INR, "encode", str(source), "-o", str(out), "--bpp", bpp,
                           "--model", args.model, "--effort", args.effort, "-q"]
                start = time.perf_counter()
                subprocess.run(command, check=True)
                took = time.perf_counter() - start
                seconds.append(took)
                data = out.read_bytes()
                original = load_image(source)
                quality = psnr(np.asarray(inrcodec.decode(data)), original)
                pixels = original.shape[0] * original.shape[1]
                print(f"{stem} {bpp} bpp: {took:6.1f} s  {len(data)} bytes  "
                      f"{8 * len(data) / pixels:.3f} bpp  {quality:.2f} dB", flush=True)
    print(f"median of {len(seconds)}: {statistics.median(seconds):.1f} s "
          f"(min {min(seconds):.1f}, max {max(seconds):.1f})")


if __name__ == "__main__":
    main()

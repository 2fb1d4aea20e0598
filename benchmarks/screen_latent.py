"""Screening for the latent family's rate control and training recipe (issue 35): where a rate
lands, the PSNR there, and how lambda and the rate moved during the fit.

    python benchmarks/screen_latent.py ../shared/datasets/kodak \\
        --images kodim05,kodim13,kodim16,kodim23 --bpp 0.25,1.0 --jobs 2
    python benchmarks/screen_latent.py ../shared/datasets/kodak --set lr=0.2 --jobs 2
    python benchmarks/screen_latent.py ../shared/datasets/kodak --controller GAIN=2,STEP=0.1

Each encode is the default effort's (seed 0) with ``--set`` settings (as ``inr encode``'s
``+key=value``) and rate control's :class:`~inrcodec.ratecontrol.LambdaController` constants
overridden by ``--controller``; with ``--jobs`` above 1 the encodes run in parallel processes
of one thread each (their bytes may differ from a two-thread encode in the last float bits).
One JSON line an encode: the file's rate as a share of the target, its PSNR, the seconds, and
at each tenth of the steps the latents' measured rate over their plan and lambda over its first
guess.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def encode(path: str, bpp: float, settings: dict, controller: dict) -> dict:
    import inrcodec
    from inrcodec import ratecontrol
    from inrcodec.training import latent
    from inrcodec.options import EncodeOptions

    for key, value in controller.items():
        setattr(ratecontrol.LambdaController, key, float(value))
    trace: list[str] = []
    control = latent.LatentFit.control

    def traced(self, step: int, total: int) -> None:
        control(self, step, total)
        if self.controller is not None and step % max(1, total // 10) == 0:
            rate = self.latent_bits() * self.rate_model.scale / self.controller.target
            trace.append(f"{rate:.2f}/{self.controller.value / self.controller.guess:.2f}")

    latent.LatentFit.control = traced
    pixels = np.asarray(Image.open(path).convert("RGB"))
    options = EncodeOptions.from_settings({"model": "latent", "bpp": bpp, **settings})
    result = inrcodec.compress(pixels, options)
    return {"image": Path(path).stem, "target": bpp, "landed": round(result.bpp / bpp, 4),
            "psnr": round(result.psnr, 3), "seconds": round(result.seconds, 1),
            "rate/plan, lambda/guess": " ".join(trace)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--images", default="kodim05,kodim13,kodim16,kodim23")
    parser.add_argument("--bpp", default="0.25,1.0")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--controller", default="", metavar="NAME=VALUE,...")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    controller = dict(item.split("=", 1) for item in args.controller.split(",") if item)
    if args.jobs > 1:
        settings.setdefault("threads", "1")
    work = [(str(args.dataset / f"{name}.png"), float(bpp), settings, controller)
            for name in args.images.split(",") for bpp in args.bpp.split(",")]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(encode, *zip(*work)):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())

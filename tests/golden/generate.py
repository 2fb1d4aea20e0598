"""How the golden files were made (each run once, with the format version it stands for: 1, and 2
for the ``-layers`` files; never regenerate them to make a test pass: they stand for files users
already have).

    python tests/golden/generate.py
"""

from pathlib import Path

import numpy as np

import inrcodec
from inrcodec.imageio import image_bytes

HERE = Path(__file__).resolve().parent

CASES = {
    "siren": dict(model="siren"),
    "siren-fourier": dict(model="siren", encoding="fourier:16:4:7"),
    "gridded": dict(model="gridded", hparams={"rows": 2, "cols": 2, "overlap": 0.25}),
    "residual": dict(model="residual", hparams={"rows": 2, "cols": 2, "cells": 2}),
    "dct": dict(model="dct"),
    "siren-grey": dict(model="siren", grey=True),
    "latent": dict(model="latent", steps=300, hparams={"upsampling": 1}, coder="rans"),
    # Coder 2 (the latent family's default since it was added): a spatial context model.
    "latent-context": dict(model="latent", steps=300),
    # Coder 3 (issue 35): a learned entropy model of the grids, in integer arithmetic.
    "latent-arm": dict(model="latent", steps=300, coder="arm"),
    # Learned upsampling (issue 35): each grid channel filtered by its own learned filter.
    "latent-learned": dict(model="latent", steps=300, hparams={"upsampling": 2}),
    # Format version 2 (issue 36): the SIREN families' sine layers (derived phases, a frequency
    # per neuron, tapered widths).
    "siren-layers": dict(model="siren", hparams={"phases": 1, "spread": 0.25, "ratio": 3,
                                                 "taper": 2}),
    "gridded-layers": dict(model="gridded", hparams={"rows": 2, "cols": 2, "overlap": 0.25,
                                                     "phases": 1, "spread": 0.2, "ratio": 2}),
}


def source() -> np.ndarray:
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[160:184, 210:242])


def main() -> None:
    for name, options in CASES.items():
        inr = HERE / f"{name}.inr"
        if inr.exists():
            print(f"{inr} exists; golden files are never regenerated")
            continue
        options = dict(options)
        image = source()[..., 1] if options.pop("grey", False) else source()
        options.setdefault("steps", 60)
        data = inrcodec.encode(image, bpp=4.0, effort="fast", compile=False, **options)
        inr.write_bytes(data)
        (HERE / f"{name}.png").write_bytes(image_bytes(inrcodec.decode(data)))
        (HERE / f"{name}@2x.png").write_bytes(image_bytes(inrcodec.decode(data, scale=2)))
        print(inr, len(data), "bytes")


if __name__ == "__main__":
    main()

"""Fixed-seed encodes whose bytes a refactor must not change: every family (the latent one with
three interpolations), the best efforts
(cycles, starts, rounding one tensor at a time), fine-tuning through the quantisers, fixed bit
depths, a grey image, both coders, an input encoding, a quality target and a compiled step.

    python benchmarks/same_bytes.py > after.json      # in this checkout
    git stash; python benchmarks/same_bytes.py > before.json; git stash pop
    diff before.json after.json                        # nothing: the same bytes

Small crops and few steps (about a minute on one thread); the settings are passed as keyword
arguments, which every version of ``inrcodec.compress`` has taken.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import torch

import inrcodec


def images() -> dict[str, np.ndarray]:
    from skimage import data
    astronaut = data.astronaut()
    return {"face": np.ascontiguousarray(astronaut[150:198, 200:264]),
            "wide": np.ascontiguousarray(astronaut[100:164, 180:260]),
            "grey": np.ascontiguousarray(data.camera()[200:248, 200:264])[..., None]}


FAST = dict(compile=False)
CASES = {
    "siren": ("face", dict(model="siren", bpp=2.0, steps=300, effort="fast")),
    "siren-zstd-hp": ("face", dict(model="siren", bpp=2.0, steps=200, effort="fast",
                                   coder="zstd", hparams={"width": 16},
                                   encoding="fourier:16:5")),
    "siren-best": ("face", dict(model="siren", bpp=1.0, steps=200, effort="best")),
    "gridded-default": ("wide", dict(model="gridded", bpp=1.0, steps=200)),
    "gridded-best": ("wide", dict(model="gridded", bpp=1.0, steps=300, effort="best")),
    "gridded-bits8": ("face", dict(model="gridded", bpp=1.0, steps=100, effort="fast", bits=8)),
    "gridded-qat": ("face", dict(model="gridded", bpp=1.0, steps=100, effort="fast",
                                 qat_steps=20, seed=3)),
    "gridded-grey": ("grey", dict(model="gridded", bpp=1.5, steps=100, effort="fast")),
    "residual": ("wide", dict(model="residual", bpp=2.0, steps=200, effort="fast")),
    "residual-best": ("wide", dict(model="residual", bpp=2.0, steps=200, effort="best",
                                   allocation="uniform")),
    "dct": ("wide", dict(model="dct", bpp=2.0, steps=200, effort="fast")),
    "dct-quality": ("wide", dict(model="dct", quality=60, steps=200, color="rgb")),
    "latent": ("wide", dict(model="latent", bpp=1.0, steps=150, effort="fast")),
    "latent-bicubic": ("face", dict(model="latent", bpp=2.0, steps=100, upsampling=1)),
    "latent-learned": ("face", dict(model="latent", bpp=2.0, steps=100)),  # upsampling 2
}
COMPILED = {"gridded-compiled": ("face", dict(model="gridded", bpp=1.0, steps=60,
                                              effort="fast", compile=True))}


def main() -> None:
    torch.set_num_threads(1)
    pictures = images()
    out = {}
    for name, (picture, settings) in {**{k: (p, {**FAST, **s}) for k, (p, s) in CASES.items()},
                                      **COMPILED}.items():
        result = inrcodec.compress(pictures[picture], **settings)
        out[name] = {"bytes": len(result.data),
                     "sha256": hashlib.sha256(result.data).hexdigest()[:16],
                     "psnr": round(result.psnr, 4)}
        print(name, out[name], file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

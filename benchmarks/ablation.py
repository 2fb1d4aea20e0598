"""Ablations: one lever at a time, measured on the same Kodak images, as a markdown table.

    python benchmarks/ablation.py                       # every variant below
    python benchmarks/ablation.py --variants gridded,lr2x      # some of them
    python benchmarks/ablation.py --steps 6000 --variants screen-previous,screen-depth2

Each variant is an ``inr bench`` codec spec; results are cached in ``--out`` like any benchmark
job, so a run resumes and only new variants cost time. The table gives, per variant, the mean
PSNR and bits per pixel over the images at each target rate, and the median encode seconds.
The default images are every sixth Kodak image (kodim01, 07, 13, 19), chosen by that rule
before any result was seen.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from inrcodec.bench.main import BenchConfig, plan
from inrcodec.bench.runner import Cache, run_jobs

IMAGES = ["kodim01", "kodim07", "kodim13", "kodim19"]

#: name -> (codec spec, what the variant changes)
VARIANTS: dict[str, tuple[str, str]] = {
    "gridded": ("inr:gridded", "gridded SIREN, the family's defaults (the base of the levers below)"),
    "uniform": ("inr:gridded+allocation=uniform",
                "one quantiser step for every tensor (no sensitivity probe)"),
    "no-qat": ("inr:gridded+qat_steps=0", "no quantisation-aware fine-tuning"),
    "no-qat-2x": ("inr:gridded+qat_steps=0+steps=24000",
                  "no fine-tuning, its time given to training: 24,000 steps"),
    "cells64": ("inr:gridded+qat_steps=0+steps=24000+rows=8+cols=12",
                "as no-qat-2x, 8x12 cells of 64 px (for landscape images)"),
    "cells85": ("inr:gridded+qat_steps=0+steps=24000+rows=6+cols=9",
                "as no-qat-2x, 6x9 cells of 85 px (for landscape images)"),
    "cells171": ("inr:gridded+qat_steps=0+steps=24000+rows=3+cols=4",
                 "as no-qat-2x, 3x4 cells of 171x192 px (for landscape images)"),
    "cells256": ("inr:gridded+qat_steps=0+steps=24000+rows=2+cols=3",
                 "as no-qat-2x, 2x3 cells of 256 px (for landscape images)"),
    "no-qat-2x-lr15": ("inr:gridded+qat_steps=0+steps=24000+lr=0.0015",
                       "as no-qat-2x, learning rate 1.5e-3"),
    "w0f20": ("inr:gridded+w0_first=20", "first sine layer's frequency factor 20 instead of 30"),
    "pe5": ("inr:gridded+encoding=positional:5",
            "positional encoding with 5 levels instead of 4"),
    "w0f20-pe5": ("inr:gridded+w0_first=20+encoding=positional:5",
                  "both: first-layer factor 20 and 5 levels of positional encoding"),
    "no-window": ("inr:gridded+window_weights=false",
                  "overlap samples not weighted by the blend window"),
    "no-pe": ("inr:gridded+encoding=none", "raw coordinates instead of positional encoding (L=4)"),
    "ycbcr": ("inr:gridded+color=ycbcr", "fit in YCbCr instead of RGB"),
    "eager": ("inr:gridded+compile=false", "no torch.compile of the training step"),
    "lr2x": ("inr:gridded+lr=0.002", "learning rate 2e-3 instead of 1e-3"),
    "bits5": ("inr:gridded+bits_per_weight=5",
              "network sized for 5 bits per weight instead of 6.5 (more, coarser weights)"),
    "bits8": ("inr:gridded+bits_per_weight=8",
              "network sized for 8 bits per weight (fewer, finer weights)"),
    "siren": ("inr:siren", "plain SIREN, the family's defaults"),
    "residual": ("inr:residual", "residual SIREN, the family's defaults"),
    "dct": ("inr:dct", "DCT-head SIREN, the family's defaults"),
    "floor01": ("inr:gridded+lr_floor=0.01",
                "learning rate decays to 1% of its peak instead of 5%"),
    "depth4": ("inr:gridded+depth=4", "4 sine layers instead of 3 (narrower networks)"),
    "residual-w0f20-pe5": ("inr:residual+w0_first=20+encoding=positional:5",
                           "residual, first-layer factor 20 and 5 levels of positional encoding"),
}
#: The other families' first-layer factor, from the 30 they all had before.
for _family, _label, _factors in (("residual", "residual", (20,)),
                                  ("siren", "plain SIREN", (20, 45, 60, 90)),
                                  ("dct", "DCT head", (20, 15))):
    for _factor in _factors:
        VARIANTS[f"{_family}-w0f{_factor}"] = (
            f"inr:{_family}+w0_first={_factor}",
            f"{_label}, first-layer factor {_factor} instead of 30")

#: The gridded family's defaults before the first-layer factor and the encoding changed: the base
#: of a screen of the network's shape and frequencies (run with ``--steps 6000``). A variant's
#: options follow in the spec, and a later option overrides an earlier one.
PREVIOUS = "inr:gridded+w0_first=30+encoding=positional:4"
SCREEN: dict[str, tuple[str, str]] = {
    "previous": ("", "first-layer factor 30, 4 octaves of positional encoding, depth 3"),
    "depth2": ("+depth=2", "2 sine layers instead of 3 (wider networks)"),
    "depth4": ("+depth=4", "4 sine layers instead of 3 (narrower networks)"),
    "octaves3": ("+encoding=positional:3", "3 octaves of positional encoding"),
    "octaves5": ("+encoding=positional:5", "5 octaves of positional encoding"),
    "first10": ("+w0_first=10", "first-layer factor 10"),
    "first15": ("+w0_first=15", "first-layer factor 15"),
    "first20": ("+w0_first=20", "first-layer factor 20"),
    "first45": ("+w0_first=45", "first-layer factor 45"),
    "hidden20": ("+w0=20", "hidden layers' factor 20 instead of 30"),
    "hidden40": ("+w0=40", "hidden layers' factor 40 instead of 30"),
    "floor01": ("+lr_floor=0.01", "learning rate decays to 1% of its peak instead of 5%"),
    "first20-octaves5": ("+w0_first=20+encoding=positional:5", "first-layer factor 20, 5 octaves"),
}
VARIANTS.update({f"screen-{name}": (PREVIOUS + change, what)
                 for name, (change, what) in SCREEN.items()})


def with_steps(spec: str, steps: int | None) -> str:
    return f"{spec}+steps={steps}" if steps else spec


def table(rows: list[dict], names: list[str], bpps: list[float], steps: int | None = None
          ) -> str:
    head = ["variant", "change"]
    for b in bpps:
        head += [f"PSNR @ {b} (dB)", f"bpp @ {b}"]
    head += ["median encode s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        spec, what = VARIANTS[name]
        mine = [r for r in rows if r["codec"] == with_steps(spec, steps) and not r.get("error")]
        cells = [name, what]
        for b in bpps:
            at = [r for r in mine if r["setting"] == b]
            cells += [f"{statistics.fmean(r['psnr'] for r in at):.2f}" if at else "-",
                      f"{statistics.fmean(r['bpp'] for r in at):.3f}" if at else "-"]
        cells.append(f"{statistics.median(r['encode_seconds'] for r in mine):.1f}"
                     if mine else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument("--bpp", default="0.25,0.5")
    parser.add_argument("--effort", default="default")
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-out/ablation"))
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of every variant (a quick screen), instead of the "
                             "effort's")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s): {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    bpps = [float(b) for b in args.bpp.split(",")]
    specs = [with_steps(VARIANTS[n][0], args.steps) for n in names]
    config = BenchConfig(dataset=args.dataset, codecs=specs,
                         out=args.out, bpps=bpps, effort=args.effort,
                         names=args.images.split(","))
    _, images, _, jobs = plan(config)
    done = 0

    def tick(row: dict, cached: bool) -> None:
        nonlocal done
        done += 1
        if not cached:
            print(f"  [{done}/{len(jobs)}] {row['codec']} {row['image']} {row['setting']}: "
                  f"{row['psnr']:.2f} dB, {row['bpp']:.3f} bpp, {row['encode_seconds']:.1f} s",
                  file=sys.stderr, flush=True)

    rows = run_jobs(jobs, Cache(args.out / "cache"), args.jobs, on_done=tick)
    steps = f"{args.steps} training steps" if args.steps else f"effort {args.effort}"
    print(f"Images: {', '.join(im.name for im in images)}; {steps}.\n")
    print(table(rows, names, bpps, args.steps))


if __name__ == "__main__":
    main()

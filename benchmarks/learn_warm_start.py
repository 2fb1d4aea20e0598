"""Learn a warm start from a training set: the latent family's synthesis (issue 35, screened
and not kept: docs/experiments.md, "The training recipe, lever by lever"), or a SIREN family's
network of one shape (issue 36, ``--model gridded``: "The SIREN families with NIF25's levers: the taper in
the sizing, the warm start").
Reptile over short fits, each image's fit starting from the shared weights and the shared
weights moving a step towards where the fits ended.

    python benchmarks/learn_warm_start.py PHOTOS_FOLDER --rounds 3 --jobs 2 --set beta2=0.99 \\
        --out /tmp/warm

Each photo (any size, JPEG or PNG) is reduced by an area filter until it just covers 768x512
(512x768 if it is portrait) and cut to that centre, so that its detail is at Kodak's scale.
A round fits every photo once (the fast effort's schedule, one thread a fit, ``--jobs`` at a
time) at a rate taken in turn from ``--bpp``, from the shared weights; after each batch of
``--jobs`` fits the shared weights move ``epsilon`` of the way to the fits' mean (epsilon
falling linearly from 1 to 0.1 over the rounds). The synthesis is the one that sizing gives a
768x512 image (the default seven levels of two channels, two hidden layers of 24): the shape
every Kodak-sized or larger encode at 0.12 bpp or more uses. Printed per round: the fits' mean
PSNR and the seconds (each photo's rate moves on by one each round, so rounds' means are not
comparable with each other; whether a start pays is screened by encodes from it).

With ``--model`` a SIREN family (siren, gridded), the shape is the one that sizing gives a
768x512 image at the default effort at the one rate ``--bpp`` (every rate whose shape is the
same shares it); each fit is ``--steps`` steps of the family's own training (its default
schedule's learning rate, warm-up and cosine, no quantisation), all of a grid's cells from the
shared start, and the start moves towards the mean of the cells' ends. The weights are written
as ``<key>.npy`` (``inrcodec.training.warmstart``: float32, one network's parameters flat),
the file an encode with ``+warm_start=true`` looks for in ``inrcodec/training/warmstart/``.

The photos must not be ones the codec is measured on (never Kodak, CLIC or scikit-image's): the
screened weights came from the public SqueezeSoftware/test_files Unsplash photos that
docs/experiments.md names. The weights are written as ``synthesis-14-24-24-3.npy`` (float32,
the parameters flat in the synthesis's order).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIZE = (768, 512)
#: The synthesis learned (``Synthesis``'s inputs, width, depth, outputs): what sizing gives a
#: Kodak-sized or larger image at 0.12 bpp or more.
SHAPE = (14, 24, 2, 3)


def prepared(path: Path) -> np.ndarray:
    """The photo reduced by an area filter to just cover 768x512 (or 512x768) and cut to it."""
    from PIL import Image
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = SIZE if image.width >= image.height else SIZE[::-1]
        scale = max(w / image.width, h / image.height)
        size = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
        left, top = (size[0] - w) // 2, (size[1] - h) // 2
        return np.asarray(image.crop((left, top, left + w, top + h)))


def fit_from(pixels: np.ndarray, bpp: float, start: np.ndarray | None, seed: int,
             settings: dict) -> tuple[np.ndarray, float]:
    """One fast-effort fit of the latent family from the synthesis ``start`` (flat, in the
    order of its parameters; None: its random initialisation): where its synthesis ended
    (float, before quantisation) and the file's PSNR."""
    import torch
    from inrcodec.decoder import render
    from inrcodec.fit import fit
    from inrcodec.metrics import psnr

    torch.set_num_threads(1)
    plan, target, options = sized(pixels, bpp, seed,
                                  {"model": "latent", "effort": "fast", **settings})
    model = plan.model
    if start is not None:
        torch.nn.utils.vector_to_parameters(torch.from_numpy(start), model.synthesis.parameters())
    report = fit(model, target, options.schedule(), seed=seed, quantiser=plan.quantiser)
    end = torch.nn.utils.parameters_to_vector(model.synthesis.parameters()).detach().numpy()
    plan.finish(dict(report.quants))
    return end.copy(), psnr(render(model, *pixels.shape[:2]), pixels)


def siren_fit_from(pixels: np.ndarray, bpp: float, start: np.ndarray | None, seed: int,
                   settings: dict, steps: int) -> tuple[np.ndarray, float]:
    """``steps`` steps of a SIREN family's training from the network ``start`` in every cell
    (None: the seed's initialisation): the cells' mean network where it ended (flat) and the
    fit's PSNR before quantisation."""
    import torch
    from inrcodec.fit import Stage, Training
    from inrcodec.metrics import psnr_of_mse
    from inrcodec.training import warmstart

    torch.set_num_threads(1)
    plan, target, options = sized(pixels, bpp, seed, settings)
    model = plan.model
    net = model.field.net
    if start is not None:
        warmstart.apply(net, start)
    schedule = options.schedule().with_steps(steps)
    task = next(iter(model.fit_tasks(target, schedule)))
    mse = Training(schedule, task).run(Stage(task, schedule, torch.Generator().manual_seed(seed),
                                             compile=False))
    return warmstart.mean_network(net), psnr_of_mse(mse)


def sized(pixels: np.ndarray, bpp: float, seed: int, settings: dict):
    """The rate plan (the model as sizing gives it, its quantiser) of an encode of ``pixels``
    at ``bpp`` with ``settings``, the target in the model's colour space, and the options."""
    import torch
    from inrcodec.encoder import signal_path
    from inrcodec.options import EncodeOptions
    from inrcodec.ratecontrol import RatePlan
    from inrcodec.training import get_trainable

    options = EncodeOptions.from_settings({"bpp": bpp, "seed": seed, **settings})
    family = get_trainable(options.model)
    height, width, channels = pixels.shape
    transform, enc = signal_path(family, options, channels)
    plan = RatePlan.make(family, options, height, width, transform, enc)
    target = transform.forward(torch.from_numpy(pixels.astype(np.float32) / 255.0))
    return plan, target, options


def random_start() -> np.ndarray:
    """A random synthesis of the shape the warm start is for (flat): where learning starts."""
    import torch
    from inrcodec.models.latent import Synthesis
    synthesis = Synthesis(*SHAPE, torch.Generator().manual_seed(0))
    return torch.nn.utils.parameters_to_vector(synthesis.parameters()).detach().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder of the weights")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--bpp", default="0.25,0.5,1.0")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", default="latent", help="latent, or a SIREN family (one "
                        "--bpp: the rate whose shape is learned)")
    parser.add_argument("--steps", type=int, default=2000, help="a SIREN family's steps a fit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the fits, as inr encode's +key=value")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    rates = [float(b) for b in args.bpp.split(",")]
    paths = sorted(p for p in args.photos.iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.stat().st_size)
    photos = [prepared(p) for p in paths]
    print(f"{len(photos)} photos: {', '.join(p.stem for p in paths)}", flush=True)
    siren = args.model != "latent"
    if siren:
        from inrcodec.training import warmstart
        if len(rates) != 1:
            parser.error("a SIREN family's start is learned for one shape: give one --bpp")
        settings["model"] = args.model
        model = sized(photos[0], rates[0], 0, settings)[0].model
        theta = first_network(model.field.net)
        name = warmstart.key(model.name, model.field.net)
        print(f"shape {name} ({theta.size} weights): {model.describe()}", flush=True)
    else:
        theta = random_start()
    rng = np.random.default_rng(0)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in range(args.rounds):
            start = time.perf_counter()
            epsilon = 1.0 - 0.9 * r / max(1, args.rounds - 1)
            order = rng.permutation(len(photos))
            scores = []
            for b in range(0, len(order), args.jobs):
                batch = order[b:b + args.jobs]
                work = [(photos[i], rates[(i + r) % len(rates)], theta, 1000 * r + int(i),
                         settings) for i in batch]
                if siren:
                    ends = list(pool.map(siren_fit_from, *zip(*work),
                                         [args.steps] * len(work)))
                else:
                    ends = list(pool.map(fit_from, *zip(*work)))
                theta = theta + epsilon * (np.mean([e for e, _ in ends], axis=0) - theta)
                scores += [s for _, s in ends]
            print(f"round {r + 1}: epsilon {epsilon:.2f}, mean PSNR of its fits "
                  f"{np.mean(scores):.3f} dB, {time.perf_counter() - start:.0f} s", flush=True)
    dims = [SHAPE[0]] + [SHAPE[1]] * SHAPE[2] + [SHAPE[3]]
    out = args.out / (f"{name}.npy" if siren else f"synthesis-{'-'.join(map(str, dims))}.npy")
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(out, theta.astype("<f4"), allow_pickle=False)
    print(f"wrote {out} ({theta.size} weights)")


def first_network(stack) -> np.ndarray:
    """The stack's first network, flat (a random start is one network's draw, not a mean)."""
    return np.concatenate([p[0].detach().flatten().numpy() for p in stack.parameters()])


if __name__ == "__main__":
    sys.exit(main())

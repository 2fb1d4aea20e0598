"""The experiments behind docs/experiments.md. Each sub-command prints one markdown table.

    python benchmarks/experiments.py encodings   # ReLU MLP +- encodings vs SIREN, 256x256
    python benchmarks/experiments.py grid        # plain vs gridded SIRENs, equal time and size
    python benchmarks/experiments.py seams       # PSNR along grid cell edges vs elsewhere
    python benchmarks/experiments.py dct-speed   # DCT-head vs plain SIREN training step time
    python benchmarks/experiments.py profile     # where a training step's time goes
    python benchmarks/experiments.py large       # peak memory of a 4096x4096 encode
    python benchmarks/experiments.py coders      # zstd against rans on a benchmark's files

Timings are medians over repeats where stated, measured on the machine that runs the script;
nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import inrcodec
from inrcodec.color import ColorTransform
from inrcodec.encodings import Encoding
from inrcodec.fit import train
from inrcodec.metrics import psnr_of_mse as psnr
from inrcodec.models.base import ImageModel, sample_positions
from inrcodec.training import TRAINABLE
from inrcodec.training.base import FitTask, rgb_mse, rgb_mse_loss
from inrcodec.models.tiling import Tiling
from inrcodec.presets import PRESETS, Schedule

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "kodak"
RGB = ColorTransform("rgb", 3)


def astronaut_512() -> np.ndarray:
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def astronaut_256() -> np.ndarray:
    """scikit-image's astronaut, area-downsampled to 256 x 256."""
    a = astronaut_512().astype(np.float64)
    return (a.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def as_target(image: np.ndarray) -> torch.Tensor:
    return RGB.forward(torch.from_numpy(image.astype(np.float32) / 255))


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# -- encodings ----------------------------------------------------------------------------------
class ReluMlp(torch.nn.Module):
    """The baseline of the encoding studies: a ReLU MLP on (encoded) coordinates."""

    def __init__(self, encoding: Encoding, width: int, hidden: int, out: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.encoding = encoding
        dims = [encoding.out_dim] + [width] * hidden
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, out))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoding(coords))


@torch.no_grad()
def render_module(module: torch.nn.Module, h: int, w: int, out_h: int, out_w: int
                  ) -> torch.Tensor:
    """A whole-image coordinate network sampled on an out_h x out_w grid (the codec's frame)."""
    tiling = Tiling(h, w)
    gy, gx = torch.meshgrid(sample_positions(h, out_h), sample_positions(w, out_w), indexing="ij")
    return module(tiling.local(gy.reshape(1, -1), gx.reshape(1, -1)))[0].reshape(out_h, out_w, -1)


def whole_image_task(module: torch.nn.Module, target: torch.Tensor) -> FitTask:
    """Random pixels of the whole image, coordinates in [-1, 1]."""
    h, w, _ = target.shape
    tiling = Tiling(h, w)

    def assemble(data, draws):
        iy, ix, coords, _ = tiling.assemble(data, draws)
        return coords, data["target"][iy, ix]

    return FitTask(module=module, draw=tiling.draw, assemble=assemble,
                   data=tiling.training_data(target), loss=rgb_mse_loss(RGB),
                   evaluate=lambda *_: rgb_mse(RGB, render_module(module, h, w, h, w), target),
                   samples=h * w)


def encodings_experiment(steps: int, batch: int) -> str:
    image = astronaut_256()
    target = as_target(image)
    full = as_target(astronaut_512())
    width, hidden = 256, 3
    configs = [
        ("ReLU MLP", "none", {}, "relu", 1e-3),
        ("ReLU MLP", "positional", {"levels": 8}, "relu", 1e-3),
        ("ReLU MLP", "fourier", {"features": 256, "scale": 10.0, "seed": 0}, "relu", 1e-3),
        ("SIREN", "none", {}, "siren", 1e-4),
        ("SIREN", "positional", {"levels": 8}, "siren", 1e-4),
    ]
    rows = []
    for label, kind, params, net, lr in configs:
        enc = Encoding(kind, 2, **params)
        if net == "relu":
            module = ReluMlp(enc, width, hidden, 3, seed=0)
        else:
            hp = {"width": width, "depth": hidden + 1, "w0_first": 30.0, "w0": 30.0}
            model = TRAINABLE["siren"](256, 256, RGB, hp, enc,
                                      generator=torch.Generator().manual_seed(0))
            module = model.field
        task = whole_image_task(module, target)
        schedule = Schedule(steps=steps, batch=batch, lr=lr, eval_every=max(1, steps // 20))
        result = train(task, schedule, compile=True)
        n = sum(p.numel() for p in module.parameters())
        held_out = psnr(rgb_mse(RGB, render_module(module, 256, 256, 512, 512), full))
        rows.append([label, enc.describe(), n, round(result.psnr, 2), round(held_out, 2),
                     round(result.seconds, 1)])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    caption = (f"Fitted to scikit-image's astronaut area-downsampled to 256x256: {steps} Adam "
               f"steps of {batch} random pixels, cosine schedule, best of {20} evaluations. "
               "'fit' is PSNR on the 256x256 training image; 'held out' renders the network at "
               "512x512 and compares with the original 512x512 image, i.e. what the network "
               "puts between the training pixels (the published numbers are held-out ones).\n\n")
    return caption + table(["network", "encoding", "params", "fit PSNR (dB)",
                            "held-out PSNR at 2x (dB)", "train s"], rows)


# -- grid -------------------------------------------------------------------------------------
def calibrated_steps(make_task, schedule: Schedule, budget: float) -> int:
    """Steps that take ``budget`` seconds, from the median step time of a short run."""
    times = []
    for _ in range(3):
        times.append(train(make_task(), schedule, steps=30, compile=True).seconds / 29)
    return max(30, int(budget / statistics.median(times)))


def grid_experiment(budget: float, batch: int) -> str:
    image = astronaut_256()
    target = as_target(image)
    enc = Encoding("none")
    configs = [("plain", 1, w) for w in (512, 256, 128, 64, 32)]
    configs += [("gridded", 2, w) for w in (128, 64, 32)]
    configs += [("gridded", 4, 128), ("gridded", 8, 128)]
    rows = []
    for kind, ratio, total_width in configs:
        width = total_width // ratio

        def make_task():
            if kind == "plain":
                hp = {"width": width, "depth": 4, "w0_first": 30.0, "w0": 30.0}
                model = TRAINABLE["siren"](256, 256, RGB, hp, enc,
                                          generator=torch.Generator().manual_seed(0))
            else:
                hp = {"rows": ratio, "cols": ratio, "overlap": 0.0, "width": width, "depth": 4,
                      "w0_first": 30.0, "w0": 30.0}
                model = TRAINABLE["gridded"](256, 256, RGB, hp, enc,
                                            generator=torch.Generator().manual_seed(0))
            task = next(model.fit_tasks(target, Schedule()))
            task.model = model
            return task

        schedule = Schedule(batch=batch, lr=1e-4 if kind == "plain" and width >= 256 else 1e-3,
                            eval_every=100)
        steps = calibrated_steps(make_task, schedule, budget)
        schedule = dataclasses.replace(schedule, eval_every=max(1, steps // 20))
        task = make_task()
        result = train(task, schedule, steps=steps, compile=True)
        n = task.model.n_params()
        label = "plain SIREN" if kind == "plain" else f"gridded, ratio {ratio}"
        rows.append([label, total_width, width, n, steps, f"{result.mse:.2e}",
                     round(result.psnr, 2), round(result.seconds, 1)])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return table(["model", "width", "width per network", "params", "steps", "MSE", "PSNR (dB)",
                  "train s"], rows)


# -- seams ------------------------------------------------------------------------------------
def edge_band(height: int, width: int, rows: int, cols: int, band: int) -> np.ndarray:
    """Mask of the pixels within ``band`` pixels of an interior cell edge."""
    mask = np.zeros((height, width), bool)
    for r in range(1, rows):
        y = round(r * height / rows)
        mask[max(0, y - band):y + band] = True
    for c in range(1, cols):
        x = round(c * width / cols)
        mask[:, max(0, x - band):x + band] = True
    return mask


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[mask].mean()
    return 10 * math.log10(255 ** 2 / err)


def seams_experiment(steps: int, bpp: float) -> str:
    name = "kodim23"
    path = KODAK / f"{name}.png"
    original = inrcodec.load_image(path) if path.exists() else None
    if original is None:
        from skimage import data
        name, original = "astronaut", data.astronaut()
    h, w = original.shape[:2]
    half = (original.reshape(h // 2, 2, w // 2, 2, 3).astype(np.float64).mean(axis=(1, 3))
            + 0.5).astype(np.uint8)
    rows, cols = 4, 6
    out = []
    everywhere = np.ones((h, w), bool)
    for overlap, weighted in ((0.0, False), (0.0625, False), (0.0625, True), (0.125, False),
                              (0.125, True)):
        hp = {"rows": rows, "cols": cols, "overlap": overlap}
        for scale, source in ((1, original), (2, half)):
            result = inrcodec.compress(source, model="gridded", bpp=bpp * scale * scale,
                                       steps=steps, hparams=hp, window_weights=weighted)
            decoded = inrcodec.decode(result.data, scale=scale)
            mask = edge_band(h, w, rows, cols, band=2 * scale)
            edge, rest = masked_psnr(decoded, original, mask), masked_psnr(decoded, original,
                                                                           ~mask)
            whole = masked_psnr(decoded, original, everywhere)
            out.append([overlap, "yes" if weighted else "no", scale, round(whole, 2),
                        round(edge, 2), round(rest, 2), round(edge - rest, 2)])
            print(f"  {out[-1]}", file=sys.stderr, flush=True)
    caption = (f"{name}, gridded {rows}x{cols}, {steps} steps, {bpp} bpp at scale 1 (the "
               f"half-size image at the same bits per original pixel for scale 2, decoded at 2x "
               f"and compared with the full-size original). Edge band: pixels within 2 (scale 1) "
               f"or 4 (scale 2) pixels of an interior cell edge.\n\n")
    return caption + table(["overlap", "loss weighted by blend window", "scale", "PSNR (dB)",
                            "PSNR edge band (dB)", "PSNR elsewhere (dB)", "band - elsewhere (dB)"],
                           out)


# -- DCT step time ----------------------------------------------------------------------------
def family_task(name: str, params: int, image: np.ndarray) -> tuple[ImageModel, FitTask]:
    """A family's model of about ``params`` weights, with its defaults, and its first fit task."""
    h, w = image.shape[:2]
    family = TRAINABLE[name]
    kind, enc_params = family.default_encoding
    enc = Encoding(kind, 2, **enc_params)
    color = ColorTransform(family.default_color, 3)
    hp = family.hparams_for_params(params, h, w, 3, enc.out_dim)
    model = family(h, w, color, hp, enc, generator=torch.Generator().manual_seed(0))
    return model, next(model.fit_tasks(color.forward(torch.from_numpy(image / 255.0).float()),
                                       PRESETS[name]["default"].schedule))


def dct_speed_experiment(params: int, repeats: int) -> str:
    path = KODAK / "kodim23.png"
    if path.exists():
        image = inrcodec.load_image(path)
    else:
        from skimage import data
        image = np.ascontiguousarray(data.astronaut()[:, :, :])
    h, w = image.shape[:2]
    rows = []
    for name in ("siren", "dct"):
        model, task = family_task(name, params, image)
        schedule = Schedule(batch=4096, eval_every=10 ** 9)
        samples = round(schedule.batch * task.batch_factor)
        per_sample = 1 if name == "siren" else model.block ** 2
        step_ms = statistics.median(train(task, schedule, steps=60, compile=True).step_seconds
                                    * 1000 for _ in range(repeats))
        pixels = samples * per_sample
        epoch_s = step_ms / 1000 * h * w / pixels
        rows.append([name, model.n_params(), f"{samples} {'pixels' if name == 'siren' else 'blocks'}",
                     pixels, round(step_ms, 2), round(epoch_s, 3)])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return table(["family", "params", "samples per step", "pixels covered per step",
                  "ms per step (median)", "s per pass over the image"], rows)


# -- profile ---------------------------------------------------------------------------------
CATEGORIES = [
    ("matrix products", ("bmm", "baddbmm", "mm", "addmm", "matmul", "linear")),
    ("sine and its derivative", ("sin", "cos")),
    ("Adam update", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("batch sampling and indexing", ("index", "rand", "gather", "floor", "randint")),
    ("element-wise rest (encoding, loss, scaling)", ("mul", "add", "sub", "cat", "pow", "square",
                                                     "mean", "div", "pad", "stack", "sum")),
]


def kodak_or_astronaut() -> np.ndarray:
    path = KODAK / "kodim07.png"
    if path.exists():
        return inrcodec.load_image(path)
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def profile_experiment(family_name: str, params: int, steps: int) -> str:
    """Where one training step's time goes (eager, by op category), and the compiled step."""
    from torch.profiler import ProfilerActivity, profile

    image = kodak_or_astronaut()
    h, w = image.shape[:2]
    model, task = family_task(family_name, params, image)
    schedule = Schedule(batch=4096, eval_every=10 ** 9)
    eager_ms = statistics.median(train(task, schedule, steps=steps, compile=False).step_seconds
                                 * 1000 for _ in range(3))
    compiled_ms = statistics.median(train(task, schedule, steps=steps, compile=True).step_seconds
                                    * 1000 for _ in range(3))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(task, schedule, steps=steps, compile=False)
    totals = {name: 0.0 for name, _ in CATEGORIES}
    totals["other"] = 0.0
    for event in prof.key_averages():
        if event.key.startswith("aten::") is False:
            continue
        op = event.key[len("aten::"):].lower()
        for name, keys in CATEGORIES:
            if any(k in op for k in keys):
                totals[name] += event.self_cpu_time_total
                break
        else:
            totals["other"] += event.self_cpu_time_total
    all_time = sum(totals.values()) or 1.0
    rows = [[name, f"{100 * t / all_time:.0f}%"] for name, t in totals.items()]
    caption = (f"{family_name}, {model.n_params()} weights ({model.describe()}), on a "
               f"{w}x{h} image, 4096 samples per step. Median step: {eager_ms:.1f} ms eager, "
               f"{compiled_ms:.1f} ms compiled with torch.compile "
               f"({eager_ms / compiled_ms:.2f}x faster). Share of the eager step's aten time:\n\n")
    return caption + table(["category", "share of eager step"], rows)


def kodak_mosaic(side: int) -> np.ndarray:
    """A side x side image tiled from the Kodak images in order (cropped at the edges)."""
    images = [inrcodec.load_image(p) for p in sorted(KODAK.glob("*.png"))]
    if not images:
        raise SystemExit(f"no Kodak images in {KODAK}")
    out = np.empty((side, side, 3), dtype=np.uint8)
    tile_h, tile_w = 512, 768
    n = 0
    for y in range(0, side, tile_h):
        for x in range(0, side, tile_w):
            im = images[n % len(images)]
            n += 1
            im = im if im.shape[0] == tile_h else im.transpose(1, 0, 2)
            out[y:y + tile_h, x:x + tile_w] = im[:side - y, :side - x]
    return out


def large_experiment(side: int, bpp: float, steps: int) -> str:
    """Peak resident memory and time of a gridded encode of a side x side Kodak mosaic. The
    step count does not change the memory (batches are the same size at every step)."""
    import resource

    image = kodak_mosaic(side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = inrcodec.compress(image, model="gridded", bpp=bpp, steps=steps)
    encoded = time.perf_counter()
    decoded = inrcodec.decode(result.data)
    decode_s = time.perf_counter() - encoded
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert decoded.shape == image.shape
    rows = [[f"{side}x{side}", result.description, steps, f"{result.bpp:.3f}",
             f"{result.psnr:.2f}", f"{encoded - start:.0f}", f"{decode_s:.1f}",
             f"{before:.0f}", f"{peak:.0f}"]]
    return table(["image", "model", "steps", "bpp", "PSNR (dB)", "encode s", "decode s",
                  "RSS before (MiB)", "peak RSS (MiB)"], rows)


# -- coders -------------------------------------------------------------------------------------
def order0_bytes(symbols: np.ndarray) -> float:
    """The symbols' empirical (order-0) entropy in bytes: a bound that no per-tensor model
    reaches, since it ignores the cost of describing the distribution."""
    counts = np.unique(symbols, return_counts=True)[1].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum() / 8)


def coders_experiment(out: Path, specs: list[str], bpps: list[float]) -> str:
    """The payloads of the files a Kodak benchmark wrote (read from its cache, for the current
    code), re-coded with each entropy coder: the same symbols, so only the coder differs."""
    from inrcodec import bitstream, entropy
    from inrcodec.bench.main import BenchConfig, plan
    from inrcodec.bench.runner import Cache

    _, _, _, jobs = plan(BenchConfig(codecs=specs, bpps=bpps, out=out))
    cache = Cache(out / "cache")
    groups: dict[tuple[str, float], list[list[float]]] = {}
    for job in jobs:
        data = cache.file(job)
        if data is None:
            continue
        f = bitstream.read(data)
        sizes = [math.prod(s) for s in f.shapes()]
        bits = [q.bits for q in f.quants]
        symbols = entropy.decode(f.payload, sizes, bits, f.coder)
        times = {}
        for coder in ("zstd", "rans"):
            payload = entropy.encode(symbols, bits, coder)
            start = time.perf_counter()
            entropy.decode(payload, sizes, bits, coder)
            times[coder] = (len(payload), time.perf_counter() - start)
        bound = sum(order0_bytes(s) for s in symbols)
        groups.setdefault((job.spec, job.setting), []).append(
            [len(data), times["zstd"][0], times["rans"][0], bound,
             times["zstd"][1], times["rans"][1]])
    rows = []
    for (spec, bpp), values in groups.items():
        file_b, zstd_b, rans_b, bound, zstd_s, rans_s = (statistics.fmean(c) for c in zip(*values))
        rows.append([spec, bpp, len(values), f"{file_b:.0f}", f"{zstd_b:.0f}", f"{rans_b:.0f}",
                     f"{bound:.0f}", f"{100 * (rans_b / zstd_b - 1):+.1f}%",
                     f"{100 * (zstd_b / bound - 1):+.1f}%", f"{100 * (rans_b / bound - 1):+.1f}%",
                     f"{1000 * zstd_s:.0f}", f"{1000 * rans_s:.0f}"])
    return table(["codec", "bpp", "files", "file bytes", "zstd payload", "rans payload",
                  "order-0 entropy", "rans vs zstd", "zstd vs entropy", "rans vs entropy",
                  "zstd decode ms", "rans decode ms"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    e = sub.add_parser("encodings")
    e.add_argument("--steps", type=int, default=2000)
    e.add_argument("--batch", type=int, default=8192)
    g = sub.add_parser("grid")
    g.add_argument("--seconds", type=float, default=120.0, help="training time per model")
    g.add_argument("--batch", type=int, default=8192)
    s = sub.add_parser("seams")
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--bpp", type=float, default=1.0)
    pr = sub.add_parser("profile")
    pr.add_argument("--family", default="siren")
    pr.add_argument("--params", type=int, default=20000)
    pr.add_argument("--steps", type=int, default=60)
    d = sub.add_parser("dct-speed")
    d.add_argument("--params", type=int, default=30000)
    d.add_argument("--repeats", type=int, default=5)
    lg = sub.add_parser("large")
    lg.add_argument("--side", type=int, default=4096)
    lg.add_argument("--bpp", type=float, default=0.3)
    lg.add_argument("--steps", type=int, default=300)
    co = sub.add_parser("coders")
    co.add_argument("--out", type=Path, default=Path("docs/results/kodak"),
                    help="a benchmark's output folder, whose cache holds the files")
    co.add_argument("--codecs", default="inr:gridded,inr:residual,inr:dct,inr:siren")
    co.add_argument("--bpp", default="0.12,0.25,0.5,1.0")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.experiment == "encodings":
        print(encodings_experiment(args.steps, args.batch))
    elif args.experiment == "grid":
        print(grid_experiment(args.seconds, args.batch))
    elif args.experiment == "seams":
        print(seams_experiment(args.steps, args.bpp))
    elif args.experiment == "profile":
        print(profile_experiment(args.family, args.params, args.steps))
    elif args.experiment == "large":
        print(large_experiment(args.side, args.bpp, args.steps))
    elif args.experiment == "coders":
        print(coders_experiment(args.out, args.codecs.split(","),
                                [float(b) for b in args.bpp.split(",")]))
    else:
        print(dct_speed_experiment(args.params, args.repeats))
    print(f"\n({time.perf_counter() - start:.0f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()

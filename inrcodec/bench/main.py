"""``inr bench``: rate-distortion reports against the classical codecs, and the upscale task.

The ``rd`` task encodes every image with every codec at every setting and writes, into the
output folder: ``results.csv`` / ``results.json`` (one row per image, codec and setting),
``report.md`` (PSNR at 0.25 / 0.5 / 1 bpp, BD-rates against JPEG, timings, machine, versions,
the command), ``rd_psnr.png`` and ``rd_msssim.png`` (with the published Kodak curves, dashed),
and ``visual.png`` (one crop decoded by every codec at about 0.25 bpp).

The ``upscale`` task downsamples each image by 2 (area average), encodes the small image with
each inr codec, decodes it at scale 2, and compares with the original, next to bicubic and
Lanczos upscales of our own scale-1 decode and of JPEG at the same file size.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import InrInputError
from ..imageio import to_pil
from ..metrics import psnr
from . import report
from .report import REFERENCE
from .classical import CODECS, at_size, jpeg_at_size
from .codecs import BenchCodec, parse_codec
from .datasets import BenchImage, centre_crop, load_dataset
from .runner import Cache, Job, run_jobs

VISUAL_BPP = 0.25
VISUAL_CROP = (192, 192)


@dataclass
class BenchConfig:
    dataset: Path | None = None
    codecs: list[str] | None = None
    out: Path = Path("bench-out")
    bpps: list[float] | None = None
    points: int | None = None
    effort: str = "default"
    limit: int | None = None
    crop: tuple[int, int] | None = None
    names: list[str] | None = None
    jobs: int = 1
    #: A Dask scheduler to run the jobs on (``parallel.run_unordered``) instead of ``jobs``
    #: local processes.
    scheduler: str | None = None
    task: str = "rd"
    command: str = ""
    #: Where the markdown report goes (default OUT/report.md, or OUT/upscale.md for the upscale
    #: task); its plots stay in OUT and are linked relative to it.
    report: Path | None = None
    #: Report from the cache alone: jobs never run are left out (a setting of a codec then
    #: appears only if it was measured on every image).
    cached_only: bool = False
    #: The codec (a spec of this run) that BD-rates are measured against.
    reference: str = REFERENCE


def _report_path(config: BenchConfig, default: str) -> Path:
    return config.report if config.report is not None else config.out / default


def _link(config: BenchConfig, path: Path, picture: str) -> str:
    """The markdown link to a plot in OUT, relative to the report at ``path``."""
    return Path(os.path.relpath(config.out / picture, path.parent)).as_posix()


def with_reference(config: BenchConfig) -> tuple[BenchConfig, str | None]:
    """The config with its reference codec among its codecs (BD-rates need its curve): added
    if the run's codecs do not list it, and then a line saying so; the config as it is for
    the upscale task, which has no reference."""
    from .codecs import default_codecs
    specs = list(config.codecs or default_codecs())
    if config.task != "rd" or config.reference in specs:
        return config, None
    added = dataclasses.replace(config, codecs=specs + [config.reference])
    return added, (f"{config.reference} added to the codecs: it is the reference of the "
                   "BD-rates (--reference chooses another)")


def plan(config: BenchConfig) -> tuple[str, list[BenchImage], list[BenchCodec], list[Job]]:
    from .codecs import default_codecs
    name, images = load_dataset(config.dataset, config.limit, config.crop, config.names)
    codecs = [parse_codec(s) for s in (config.codecs or default_codecs())]
    if config.task == "upscale":
        codecs = [c for c in codecs if c.kind == "inr"]
        if not codecs:
            raise InrInputError("the upscale task needs at least one inr: codec")
        images = [BenchImage(im.name, downsample(im.pixels)) for im in images]
    jobs = []
    for codec in codecs:
        fingerprint = codec.fingerprint
        for setting in codec.settings(config.points, config.bpps):
            for image in images:
                jobs.append(Job(image, codec.spec, setting, codec.effort(config.effort),
                                fingerprint))
    return name, images, codecs, jobs


def downsample(pixels: np.ndarray) -> np.ndarray:
    """Half size by averaging 2 x 2 blocks (an odd last row or column is dropped)."""
    h, w, c = pixels.shape
    even = pixels[:h - h % 2, :w - w % 2].astype(np.float64)
    half = even.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))
    return np.clip(half + 0.5, 0, 255).astype(np.uint8)


#: What the report needs beyond the codec: module -> the package that brings it (the bench extra).
EXTRA = {"matplotlib": "matplotlib", "pytorch_msssim": "pytorch-msssim"}


def require_extra() -> None:
    """Refuse to start without the bench extra, naming what is missing and how to install it
    (rather than failing on the first MS-SSIM or after every job, at the plots)."""
    import importlib.util
    missing = [package for module, package in EXTRA.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise InrInputError(f"inr bench needs the bench extra ({', '.join(missing)} missing): "
                            "pip install 'inrcodec[bench]' (or -e '.[bench]' in a checkout)")


def run(config: BenchConfig, progress: Callable | None = None,
        note: Callable[[str], None] = lambda line: None) -> Path:
    """Run a benchmark and write its report; returns the report's path. The reference codec
    joins the codecs if they do not list it (:func:`with_reference`), ``note`` told so."""
    require_extra()
    config, added = with_reference(config)
    if added:
        note(added)
    name, images, codecs, jobs = plan(config)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(out / "cache")
    seeded = cache.seed(out / "results.json")
    started = time.perf_counter()
    planned = len(jobs)
    if config.cached_only:
        jobs = [job for job in jobs if cache.get(job) is not None]
    if progress is None:
        rows = run_jobs(jobs, cache, config.jobs, scheduler=config.scheduler)
    else:
        with progress(len(jobs)) as advance:
            rows = run_jobs(jobs, cache, config.jobs, on_done=lambda row, cached: advance(),
                            scheduler=config.scheduler)
    seconds = time.perf_counter() - started
    provenance = [f"- run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {seconds:.0f} s of "
                  f"work (cached results are not re-measured)"]
    reused = sum(job.key in seeded for job in jobs)
    if reused:
        provenance.append(f"- {reused} results taken from an earlier run's results.json in the "
                          f"output folder (same image, codec, setting, effort and code; not "
                          f"re-measured)")
    if len(jobs) < planned:
        provenance.append(f"- from the cache only: {planned - len(jobs)} planned jobs had not "
                          f"been run and are left out")
    if config.task == "upscale":
        return write_upscale(config, name, images, codecs, jobs, cache, out, provenance)
    return write_rd(config, name, images, rows, jobs, cache, out, provenance)


def _header(config: BenchConfig, name: str, images: list[BenchImage], title: str,
            provenance: list[str]) -> list[str]:
    crop = f", centre crop {config.crop[0]}x{config.crop[1]}" if config.crop else ""
    return [
        f"# {title}", "",
        f"Generated by `{config.command or 'inr bench'}`", "",
        f"- data set: {name}, {len(images)} images{crop}",
        f"- effort of inr codecs: {config.effort}; " + (
            f"jobs on the Dask scheduler {config.scheduler}" if config.scheduler
            else f"parallel jobs: {config.jobs}"),
        *provenance, "",
    ]


def _facts() -> list[str]:
    lines = ["## Machine and versions", ""]
    lines += [f"- {k}: {v}" for k, v in report.machine().items()]
    lines += [f"- {k}: {v}" for k, v in report.versions().items()]
    return lines


def write_rd(config, name, images, rows, jobs, cache, out, provenance) -> Path:
    if not any(not r.get("error") for r in rows):
        raise InrInputError("nothing was measured: " + rows[0]["error"] if rows else
                            "nothing was measured")
    report.write_rows(rows, out)
    curves = report.curves_from_rows(rows, len(images))
    report.write_compressai(curves, out)
    reference = next((c for c in curves if c.codec == config.reference), None)
    kodak = name.lower() == "kodak"  # the anchors are Kodak means
    anchors = report.load_anchors() if kodak else []
    title = f"Rate-distortion on {name} ({len(images)} images)"
    report.plot_curves(curves, anchors, out, "psnr", title)
    report.plot_curves(curves, anchors, out, "msssim", title)
    visual_image, no_file = write_visual(images, rows, jobs, cache, out)

    lines = _header(config, name, images, title, provenance)
    lines += ["## Summary", "",
              "PSNR over RGB on 8-bit values; a codec's point per setting is the mean bpp and "
              "mean PSNR over the images. PSNR at a rate is interpolated linearly in log-rate "
              "between measured points, never extrapolated (- where the curve does not reach). "
              "BD-rate and BD-PSNR (Bjontegaard, cubic fits over the overlapping range, never "
              "beyond it; the BD-rate also with a monotone piecewise cubic through the points, "
              f"PCHIP) are against the live `{config.reference}` curve; negative BD-rate "
              "means fewer bits for the same PSNR (or MS-SSIM in dB, in its column). Times are "
              "medians per image and setting; peak memory is the largest resident set of an "
              "encode (interpreter and libraries included).", "",
              report.summary_table(
                  curves, reference, report.per_image_bd_rates(rows, config.reference),
                  report.per_image_bd_rates(rows, config.reference, "pchip")), "",
              "The per-image column is the mean over images of each image's BD-rate against "
              "the reference on that image (a typical image), where the BD-rate column is that "
              "of the mean curves. `compressai/` holds the mean curves in CompressAI's results "
              "layout.", ""]
    if kodak and len(images) == 24 and not config.crop:  # the published curves are of all 24
        checked = report.reference_check(curves)
        if checked.count("\n") > 1:
            lines += ["## The live references against their published curves", "",
                      "A benchmark is as honest as its references: each classical codec runs at "
                      "its best standard settings, and its live curve is checked against the "
                      "published Kodak curve of the same codec in `../shared/anchors/kodak` "
                      "(positive: the live curve is higher; BD-rate negative: the live codec "
                      "needs fewer bits).", "", checked, ""]
    if anchors:
        note = "" if len(images) == 24 and not config.crop else (
            " They are means over all 24 Kodak images at full size; this run measured "
            f"{len(images)} images{' (cropped)' if config.crop else ''}, so compare with care.")
        lines += ["## Published curves (not re-measured)", "",
                  "From `../shared/anchors/kodak` (sources in its README), with BD-rates "
                  "against this run's live JPEG curve." + note, "",
                  report.summary_table(anchors, reference), ""]
    path = _report_path(config, "report.md")
    lines += ["## Plots", "", f"![PSNR]({_link(config, path, 'rd_psnr.png')})", "",
              f"![MS-SSIM]({_link(config, path, 'rd_msssim.png')})", ""]
    if visual_image:
        lines += ["## The same crop at about 0.25 bpp", "",
                  f"Centre crop of {visual_image}; each inr codec at its setting nearest to "
                  f"{VISUAL_BPP} bpp on this image, each classical codec at the largest file "
                  "no larger than the first inr codec's (its setting searched for it), so that "
                  "the crops compare files of the same size (bpp and PSNR of the whole image "
                  "in the captions).", "", f"![visual]({_link(config, path, 'visual.png')})",
                  ""]
        if no_file:
            lines += [f"Not in the crops, for want of an encoded file in the cache (their "
                      f"results came from results.json): {', '.join(no_file)}.", ""]
    failed = report.failures(rows)
    if failed:
        lines += ["## Jobs the codecs refused (left out of the curves)", "", failed, ""]
    per_image = report.per_image_seconds(rows)
    if per_image:
        lines += ["## Encode seconds per image (inr codecs, median over settings)", "",
                  per_image, ""]
    lines += ["## Curves", "", report.curve_tables(curves)]
    lines += _facts()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _decoded(job: Job, row: dict, cache: Cache) -> np.ndarray | None:
    from ..decoder import decode
    if row["kind"] == "inr":
        data = cache.file(job)
        return None if data is None else np.atleast_3d(decode(data))
    codec = CODECS[row["codec"]]
    return codec.decode(codec.encode(job.image.pixels, job.setting))


def write_visual(images, rows, jobs, cache, out) -> tuple[str | None, list[str]]:
    """The crops of the first image, one per codec; its name (None if no crop was made) and the
    labels of the codecs left out for want of their encoded file. Each inr codec is shown at its
    setting nearest to VISUAL_BPP; each classical codec at the largest file no larger than the
    first inr codec's (a search over its setting, :func:`classical.at_size`), so that the crops
    compare equal sizes; without an inr codec, at its own setting nearest to VISUAL_BPP."""
    from ..decoder import decode
    image = images[0]
    by_key = {(r["image"], r["codec"], r["setting"]): r for r in rows}
    panels = [("original", centre_crop(image.pixels, *VISUAL_CROP))]
    best: dict[str, tuple[float, Job, dict]] = {}
    for job in jobs:
        row = by_key.get((image.name, job.spec, job.setting))
        if row is None:
            continue
        distance = abs(math.log(row["bpp"] / VISUAL_BPP))
        if job.spec not in best or distance < best[job.spec][0]:
            best[job.spec] = (distance, job, row)
    no_file, size = [], None
    for _, job, row in sorted(best.values(), key=lambda b: b[2]["kind"] != "inr"):
        if row["kind"] == "inr":
            data = cache.file(job)
            if data is None:
                no_file.append(row["label"])
                continue
            decoded = np.atleast_3d(decode(data))
            size = size or len(data)
            caption = f"{row['label']}\n{row['bpp']:.3f} bpp, {row['psnr']:.2f} dB"
        elif size is not None:
            found = at_size(CODECS[row["codec"]], image.pixels, size)
            if found is None:
                continue
            decoded = CODECS[row["codec"]].decode(found[0])
            bpp = 8 * len(found[0]) / (image.pixels.shape[0] * image.pixels.shape[1])
            caption = (f"{row['label']} (same size)\n{bpp:.3f} bpp, "
                       f"{psnr(decoded, image.pixels):.2f} dB")
        else:
            decoded = _decoded(job, row, cache)
            caption = f"{row['label']}\n{row['bpp']:.3f} bpp, {row['psnr']:.2f} dB"
        panels.append((caption, centre_crop(decoded, *VISUAL_CROP)))
    if len(panels) < 2:
        return None, no_file
    report.visual(panels, out, "visual.png")
    return image.name, no_file


# -- the upscale task -----------------------------------------------------------------------
def _resize(pixels: np.ndarray, size: tuple[int, int], method) -> np.ndarray:
    out = np.asarray(to_pil(pixels).resize(size, method))
    return out if out.ndim == 3 else out[..., None]


def write_upscale(config, name, images, codecs, jobs, cache, out, provenance) -> Path:
    from ..decoder import decode
    originals = {im.name: im.pixels for im in load_dataset(config.dataset, config.limit,
                                                           config.crop, config.names)[1]}
    methods = ["inr --scale 2", "inr 1x + bicubic", "inr 1x + Lanczos", "inr 1x + nearest",
               "JPEG same size + bicubic", "JPEG same size + Lanczos",
               "lossless half + bicubic"]
    table: dict[tuple[str, float], dict[str, list[float]]] = {}
    crops = []
    for job in jobs:
        data = cache.file(job)
        if data is None:
            continue
        full = originals[job.image.name]
        h, w = (full.shape[0] // 2) * 2, (full.shape[1] // 2) * 2
        full = full[:h, :w]
        small = job.image.pixels
        scores = table.setdefault((job.spec, job.setting), {m: [] for m in methods})
        two, one = np.atleast_3d(decode(data, scale=2)), np.atleast_3d(decode(data))
        jpeg = jpeg_at_size(small, len(data))
        results = {
            "inr --scale 2": two,
            "inr 1x + bicubic": _resize(one, (w, h), Image.BICUBIC),
            "inr 1x + Lanczos": _resize(one, (w, h), Image.LANCZOS),
            "inr 1x + nearest": _resize(one, (w, h), Image.NEAREST),
            "lossless half + bicubic": _resize(small, (w, h), Image.BICUBIC),
        }
        if jpeg is not None:
            j = CODECS["jpeg"].decode(jpeg[0])
            results["JPEG same size + bicubic"] = _resize(j, (w, h), Image.BICUBIC)
            results["JPEG same size + Lanczos"] = _resize(j, (w, h), Image.LANCZOS)
        for method, pixels in results.items():
            scores[method].append(psnr(pixels, full))
        if job.image.name == images[0].name and not crops:
            crops = [("original", centre_crop(full, *VISUAL_CROP))] + [
                (f"{m}\n{psnr(p, full):.2f} dB", centre_crop(p, *VISUAL_CROP))
                for m, p in results.items()]
    path = _report_path(config, "upscale.md")
    lines = _header(config, name, images, f"Upscaling by 2 on {name} ({len(images)} images)",
                    provenance)
    lines += ["Each image is downsampled by 2 (2x2 area average), encoded, and brought back to "
              "full size; PSNR against the original full-size image (mean over images). The "
              "rate is the target bits per pixel of the half-size image; JPEG gets the largest "
              "file no larger than ours. `lossless half + bicubic` is the ceiling of "
              "interpolation without any compression.", "",
              "| codec | target bpp (half size) | " + " | ".join(methods) + " |",
              "|" + "---|" * (len(methods) + 2)]
    for (spec, setting), scores in sorted(table.items()):
        cells = [f"{statistics.fmean(v):.2f}" if v else "-" for v in scores.values()]
        lines.append(f"| {spec} | {setting} | " + " | ".join(cells) + " |")
    if crops:
        report.visual(crops, out, "upscale.png")
        lines += ["", f"Centre crop of {images[0].name}:", "",
                  f"![upscale]({_link(config, path, 'upscale.png')})", ""]
    lines += [""] + _facts()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path

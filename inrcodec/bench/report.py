"""Turning benchmark rows into a report: curves, Bjontegaard deltas, plots and a visual.

A codec's curve has one point per setting: the mean bits per pixel and the mean PSNR (and
MS-SSIM) over the images, as the published anchors are computed. Only settings measured on every
image count. BD-rates are against the live JPEG 4:2:0 curve of the same run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bdrate import bd_psnr, bd_rate, psnr_at
from ..metrics import ms_ssim_db

RATES = (0.25, 0.5, 1.0)
REFERENCE = "jpeg"

#: Published curves drawn beside ours (file stem -> label), from shared/anchors/kodak.
ANCHORS = {
    "coin": "COIN",
    "coinpp": "COIN++",
    "strumpler_basic_8bit": "Struempler et al. 8-bit",
    "strumpler_meta_7bit": "Struempler et al. meta 7-bit",
    "coolchic_v5": "Cool-chic v5",
    "c3": "C3",
    "bpg444_compressai": "BPG 4:4:4",
    "vtm_intra_compressai": "VTM intra",
}


#: The live classical codecs, each with the published Kodak curve it is checked against (a file
#: of shared/anchors/kodak) and what that run was.
PUBLISHED_REFERENCES = {
    "jpeg": ("jpeg_compressai", "CompressAI's JPEG (Pillow 7.1.2, 4:2:0, quality only)"),
    "webp": ("webp_compressai", "CompressAI's WebP (Pillow 7.1.2, quality only)"),
    "jpeg2000": ("jpeg2000_compressai", "CompressAI's JPEG 2000 (OpenJPEG through ffmpeg, "
                 "yuv444p, compression level swept)"),
    "avif": ("av1_aom_compressai", "CompressAI's AV1 intra (aomenc, slowest speed)"),
    "jpegxl": ("jpegxl_nif25", "NIF25's JPEG XL (libjxl)"),
}
#: A live reference more than this many dB under its published curve at a usual rate is
#: flagged: explained in the report, or fixed.
REFERENCE_TOLERANCE = 0.3
#: Why a live reference stays under its published curve, where it does (what was tried).
REFERENCE_NOTES: dict[str, str] = {}


@dataclass
class Curve:
    codec: str
    label: str
    kind: str  # "inr", "classical" or "published"
    points: list[tuple[float, float, float]]  # (bpp, psnr, ms-ssim), sorted by bpp
    encode_seconds: float | None = None
    decode_seconds: float | None = None
    peak_memory_mb: float | None = None

    def rd(self) -> list[tuple[float, float]]:
        return [(b, p) for b, p, _ in self.points]

    def rd_msssim(self) -> list[tuple[float, float]]:
        return [(b, ms_ssim_db(m)) for b, _, m in self.points if math.isfinite(m)]


def anchors_folder() -> Path | None:
    project = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), project):
        candidate = root.parent / "shared" / "anchors" / "kodak"
        if candidate.is_dir():
            return candidate
    return None


def load_anchors(folder: Path | None = None) -> list[Curve]:
    folder = folder or anchors_folder()
    curves = []
    if folder is None:
        return curves
    for stem, label in ANCHORS.items():
        path = folder / f"{stem}.csv"
        if not path.exists():
            continue
        with path.open() as f:
            points = [(float(r["bpp"]), float(r["psnr"]), float("nan")) for r in csv.DictReader(f)]
        curves.append(Curve(stem, label + " (published)", "published", sorted(points)))
    return curves


def load_published(stem: str, folder: Path | None = None) -> list[tuple[float, float]]:
    """The (bpp, PSNR) points of a published curve of shared/anchors/kodak ([] if absent)."""
    folder = folder or anchors_folder()
    path = folder / f"{stem}.csv" if folder else None
    if path is None or not path.exists():
        return []
    with path.open() as f:
        return sorted((float(r["bpp"]), float(r["psnr"])) for r in csv.DictReader(f))


def reference_check(curves: list[Curve], folder: Path | None = None) -> str:
    """Each live classical codec against its published Kodak curve (PUBLISHED_REFERENCES): the
    PSNR difference at the usual rates and the BD-rate, flagged where the live curve is more
    than REFERENCE_TOLERANCE dB under; the notes on those that are."""
    head = ["codec", "published curve"] + [f"live - published @ {r} bpp" for r in RATES] + [
        "BD-rate live vs published", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for c in curves:
        if c.codec not in PUBLISHED_REFERENCES:
            continue
        stem, source = PUBLISHED_REFERENCES[c.codec]
        published = load_published(stem, folder)
        if not published:
            continue
        gaps = [None if psnr_at(c.rd(), r) is None or psnr_at(published, r) is None
                else psnr_at(c.rd(), r) - psnr_at(published, r) for r in RATES]
        under = [g for g in gaps if g is not None and g < -REFERENCE_TOLERANCE]
        check = (f"never more than {REFERENCE_TOLERANCE} dB under" if not under
                 else f"more than {REFERENCE_TOLERANCE} dB under: see the note")
        if under and c.codec in REFERENCE_NOTES:
            notes.append(f"- **{c.label}**: {REFERENCE_NOTES[c.codec]}")
        lines.append("| " + " | ".join([c.label, f"{source} (`{stem}.csv`)"]
                                       + [fmt(g, 2, " dB") for g in gaps]
                                       + [fmt(bd_rate(c.rd(), published), 1, "%"), check]) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def curves_from_rows(rows: list[dict], n_images: int) -> list[Curve]:
    by_setting = _groups(rows)
    per_codec: dict[str, list[dict]] = defaultdict(list)
    for (codec, _), group in by_setting.items():
        if len({r["image"] for r in group}) == n_images:
            per_codec[codec].append(group)
    curves = []
    for codec, groups in per_codec.items():
        points = sorted((statistics.fmean(r["bpp"] for r in g),
                         statistics.fmean(r["psnr"] for r in g),
                         statistics.fmean(r["ms_ssim"] for r in g)) for g in groups)
        flat = [r for g in groups for r in g]
        curves.append(Curve(codec, flat[0]["label"], flat[0]["kind"], points,
                            statistics.median(r["encode_seconds"] for r in flat),
                            statistics.median(r["decode_seconds"] for r in flat),
                            max(r["peak_memory_mb"] for r in flat)))
    order = {"inr": 0, "classical": 1}
    return sorted(curves, key=lambda c: (order.get(c.kind, 2), c.codec))


def fmt(value, digits=2, suffix="") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


#: Curves with fewer points than this get a BD value from a straight line, flagged in reports.
FEW_POINTS = 3


def per_image_bd_rates(rows: list[dict], reference: str = REFERENCE,
                       interpolation: str = "cubic") -> dict[str, float]:
    """Per codec, the mean over images of each image's BD-rate against ``reference`` on that
    image (settings measured on every image, as the mean curves use; images without overlap
    left out), with ``interpolation`` as :func:`~.bdrate.bd_rate`'s. Mean curves hide how a
    typical image fares: a codec far ahead on a few images and behind on most can still lead
    on them."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    images = {r["image"] for r in rows}
    complete = {key for key, group in _groups(rows).items()
                if {r["image"] for r in group} == images}
    for row in rows:
        if not row.get("error") and (row["codec"], row["setting"]) in complete:
            curves[row["codec"]][row["image"]].append((row["bpp"], row["psnr"]))
    out = {}
    for codec, per_image in curves.items():
        if codec == reference or reference not in curves:
            continue
        values = [bd_rate(points, curves[reference][image], interpolation)
                  for image, points in per_image.items() if image in curves[reference]]
        values = [v for v in values if v is not None]
        if values:
            out[codec] = statistics.fmean(values)
    return out


def _groups(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for row in rows:
        if not row.get("error"):
            groups[(row["codec"], row["setting"])].append(row)
    return groups


def summary_table(curves: list[Curve], reference: Curve | None,
                  per_image: dict[str, float] | None = None,
                  per_image_pchip: dict[str, float] | None = None) -> str:
    """The summary: PSNR at the usual rates, BD-rate (cubic fit and monotone PCHIP) and BD-PSNR
    against ``reference`` on the mean curves (marked * where a curve has fewer than FEW_POINTS
    points: a straight-line fit), the BD-rate on MS-SSIM (in dB), and, given ``per_image``
    (and ``per_image_pchip``), the mean of the per-image BD-rates."""
    versus = f"vs {reference.label}" if reference else "vs reference"
    head = ["codec", "points", "bpp range"] + [f"PSNR @ {r} bpp" for r in RATES] + [
        f"BD-rate {versus}", f"BD-rate {versus} (PCHIP)", f"BD-PSNR {versus}",
        f"BD-rate (MS-SSIM) {versus}"]
    if per_image is not None:
        head.append(f"BD-rate {versus}, mean per image")
    if per_image_pchip is not None:
        head.append(f"BD-rate {versus}, mean per image (PCHIP)")
    head += ["median encode s", "median decode s", "peak memory MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in curves:
        rd = c.rd()
        bdr = bd_rate(rd, reference.rd()) if reference and c is not reference else None
        pchip = bd_rate(rd, reference.rd(), "pchip") \
            if reference and c is not reference else None
        bdp = bd_psnr(rd, reference.rd()) if reference and c is not reference else None
        bdm = bd_rate(c.rd_msssim(), reference.rd_msssim()) \
            if reference and c is not reference else None
        few = "*" if reference and min(len(rd), len(reference.rd())) < FEW_POINTS else ""
        cells = [c.label, str(len(rd)), f"{rd[0][0]:.3f}-{rd[-1][0]:.3f}" if rd else "-"]
        cells += [fmt(psnr_at(rd, r)) for r in RATES]
        if c is reference:
            cells += ["(reference)"] * (4 + (per_image is not None)
                                        + (per_image_pchip is not None))
        else:
            cells += [fmt(bdr, 1, "%") + (few if bdr is not None else ""),
                      fmt(pchip, 1, "%"),
                      fmt(bdp, 2, " dB") + (few if bdp is not None else ""),
                      fmt(bdm, 1, "%") + (few if bdm is not None else "")]
            if per_image is not None:
                cells.append(fmt(per_image.get(c.codec), 1, "%"))
            if per_image_pchip is not None:
                cells.append(fmt(per_image_pchip.get(c.codec), 1, "%"))
        cells += [fmt(c.encode_seconds, 3 if (c.encode_seconds or 0) < 1 else 1),
                  fmt(c.decode_seconds, 3), fmt(c.peak_memory_mb, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if any("*" in line for line in lines[2:]):
        lines += ["", f"\\* fewer than {FEW_POINTS} points on a curve: the BD value comes from a "
                  "straight line between them, a rough figure."]
    return "\n".join(lines)


def curve_tables(curves: list[Curve]) -> str:
    out = []
    for c in curves:
        out.append(f"**{c.label}** (`{c.codec}`)\n\n| mean bpp | mean PSNR (dB) | mean MS-SSIM |\n"
                   "|---|---|---|")
        out += [f"| {b:.4f} | {p:.3f} | {m:.5f} |" for b, p, m in c.points]
        out.append("")
    return "\n".join(out)


def failures(rows: list[dict]) -> str:
    failed = [r for r in rows if r.get("error")]
    if not failed:
        return ""
    lines = ["| image | codec | setting | error |", "|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['codec']} | {r['setting']} | {r['error']} |" for r in failed]
    return "\n".join(lines)


def per_image_seconds(rows: list[dict]) -> str:
    """Median encode seconds per image and inr codec (over its settings)."""
    inr = sorted({r["codec"] for r in rows if r["kind"] == "inr"})
    if not inr:
        return ""
    images = sorted({r["image"] for r in rows})
    cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "inr" and not r.get("error"):
            cell[(r["image"], r["codec"])].append(r["encode_seconds"])
    lines = ["| image | " + " | ".join(inr) + " |", "|" + "---|" * (len(inr) + 1)]
    for im in images:
        lines.append(f"| {im} | " + " | ".join(
            fmt(statistics.median(cell[(im, c)]), 1) if cell[(im, c)] else "-" for c in inr)
            + " |")
    return "\n".join(lines)


def machine() -> dict:
    facts = {"platform": platform.platform(), "python": sys.version.split()[0],
             "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory"] = f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
                break
    except OSError:
        pass
    import torch
    facts["torch threads"] = torch.get_num_threads()
    return facts


def versions() -> dict:
    import importlib.metadata as md

    from PIL import features
    out = {}
    for dist in ("inrcodec", "torch", "numpy", "pillow", "zstandard", "scikit-image",
                 "pytorch-msssim", "matplotlib", "imagecodecs"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    for feature, name in (("jpg", "libjpeg"), ("webp", "libwebp"), ("avif", "libavif"),
                          ("jpg_2000", "openjpeg")):
        out[name] = features.version(feature) or "unavailable"
    try:
        import imagecodecs
        out["libjxl"] = imagecodecs.jpegxl_version().removeprefix("libjxl ")
    except (ImportError, AttributeError):
        out["libjxl"] = "unavailable"
    return out


def write_compressai(curves: list[Curve], out: Path) -> Path:
    """The mean curves in CompressAI's results layout, one file per codec in OUT/compressai/:
    ``{"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim"}}``, for tools that
    plot and compare such files."""
    folder = out / "compressai"
    folder.mkdir(parents=True, exist_ok=True)
    for c in curves:
        stem = "".join(ch if ch.isalnum() else "-" for ch in c.codec).strip("-")
        document = {"name": c.label, "description": f"{c.codec} ({c.kind}), inr bench",
                    "results": {"bpp": [p[0] for p in c.points],
                                "psnr-rgb": [p[1] for p in c.points],
                                "ms-ssim": [p[2] for p in c.points]}}
        (folder / f"{stem}.json").write_text(json.dumps(document, indent=1))
    return folder


def write_rows(rows: list[dict], out: Path) -> None:
    rows = sorted(rows, key=lambda r: (r["codec"], r["image"], r["setting"]))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(curves: list[Curve], anchors: list[Curve], out: Path, metric: str,
                title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    styles = {"inr": dict(lw=2.2, ms=5), "classical": dict(lw=1.2, ms=5),
              "published": dict(lw=1.2, ls="--", ms=4, alpha=0.85)}
    # Every codec its own colour and marker (tab20 has 20 colours; markers tell the rest
    # apart); the anchors that have an MS-SSIM curve are on that plot too.
    colours = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xph<>"
    drawn = [(c, c.rd() if metric == "psnr" else c.rd_msssim()) for c in curves + anchors]
    for i, (c, rd) in enumerate((c, rd) for c, rd in drawn if rd):
        xs, ys = zip(*rd)
        ax.plot(xs, ys, label=c.label, color=colours[i % len(colours)],
                marker=markers[i % len(markers)], **styles[c.kind])
    ax.set_xlim(0, 2.0)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB, RGB)" if metric == "psnr" else "MS-SSIM (dB: -10 log10(1 - MS-SSIM))")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    path = out / f"rd_{metric}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def visual(panels: list[tuple[str, np.ndarray]], out: Path, name: str) -> Path:
    """A row of equally sized crops with their captions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    h, w = panels[0][1].shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w / 80, rows * (h / 80 + 0.5)), dpi=100,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (caption, crop) in zip(axes.ravel(), panels):
        ax.imshow(crop[..., 0] if crop.shape[-1] == 1 else crop, cmap="gray",
                  interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    fig.tight_layout()
    path = out / name
    fig.savefig(path)
    plt.close(fig)
    return path

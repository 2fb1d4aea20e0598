"""The ``inr`` command: a thin typer layer over the :mod:`inrcodec` library.

Every user-facing failure (a bad file, a bad option, a path that cannot be written) ends as one
line on stderr, ``inr: error: ...``, and a non-zero exit status; never a traceback. Set
``INR_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import json
import os
import warnings
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import typer

import inrcodec
from inrcodec import limits
from inrcodec.entropy import CODERS, DEFAULT_CODER
from inrcodec.errors import InrError, InrInputError
from inrcodec.batch import IMAGE_GLOBS, INR_GLOBS
from inrcodec.presets import DEFAULT_FAMILY, EFFORTS, FAMILY_NAMES

# Nothing here imports torch: --help, --version and completion stay instant. The commands load
# the library's encoder, decoder or benchmark when they run.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="inrcodec: a neural image codec. An image is stored as a small network "
                  "fitted to it (by default latent grids read by a small synthesis network) and "
                  "decodes at any resolution.")


def choice(values, default=None, *flags: str, help: str = ""):
    """An option with a fixed set of values: --help lists them and shell completion offers
    them; the library checks the value, so a wrong one is the usual one-line error."""
    return typer.Option(default, *flags, metavar="[" + "|".join(values) + "]", help=help,
                        autocompletion=lambda: list(values))


def quiet_option():
    return typer.Option(False, "--quiet", "-q", help="Print nothing but errors (and --json): no "
                        "progress bar, no summary.")


def setup_output(quiet: bool) -> None:
    """The library's warnings as one line each (``inr: warning: ...``); with ``quiet``, no
    progress bar, table, summary or warning on stderr (errors still print)."""
    from inrcodec.errors import InrWarning

    from .progress import stderr
    stderr.quiet = quiet  # each command says; a run in the same process (tests) starts afresh
    original = warnings.showwarning

    def show(message, category, *args, **kwargs) -> None:
        if not issubclass(category, InrWarning):
            original(message, category, *args, **kwargs)
        elif not stderr.quiet:
            typer.echo(f"inr: warning: {message}", err=True)

    warnings.showwarning = show


def note(message: str) -> None:
    """A line for the user on stderr, unless --quiet."""
    from .progress import stderr
    if not stderr.quiet:
        typer.echo(message, err=True)


DEVICES = ("auto", "cpu", "cuda")
TASKS = ("rd", "upscale")

EXIT_ERROR = 1


def fail(message: str, status: int = EXIT_ERROR) -> None:
    typer.echo(f"inr: error: {message}", err=True)
    raise typer.Exit(status)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's errors, and I/O errors, into one line and exit status 1."""
    try:
        yield
    except typer.Exit:
        raise
    except InrError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the promise is no traceback, ever
        if os.environ.get("INR_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set INR_DEBUG=1 for details)", 3)


#: The longest file list (--files-from) read.
MAX_LIST_BYTES = 64 << 20


def read_input(path: str, what: str, limit: int, check_start=None) -> bytes:
    """The bytes of ``path`` (- reads stdin), refused as they are read beyond ``limit``."""
    from inrcodec.imageio import read_binary
    return read_binary(sys.stdin.buffer if path == "-" else path, what, limit, check_start)


def inr_source(path: str):
    """What the decoder reads for ``path``: stdin's stream for -, else the path."""
    return sys.stdin.buffer if path == "-" else path


def check_output(output: str, *inputs: str) -> None:
    """Refuse to write over an input file."""
    if output == "-":
        return
    out = Path(output)
    for src in inputs:
        if src != "-" and out.exists() and Path(src).exists() and out.samefile(src):
            raise InrInputError(f"refusing to overwrite the input {src}")


def parse_size(text: str, aspect: bool = False) -> tuple[int | None, int | None]:
    """WIDTHxHEIGHT as (width, height); with ``aspect``, WIDTHx or xHEIGHT too (the other side
    None: kept in proportion)."""
    w, sep, h = text.strip().lower().partition("x")
    try:
        size = (int(w) if w else None, int(h) if h else None)
    except ValueError:
        size = (None, None)
    if not sep or size == (None, None) or (None in size and not aspect):
        forms = "WIDTHxHEIGHT, WIDTHx or xHEIGHT" if aspect else "WIDTHxHEIGHT"
        raise InrInputError(f"size must look like {forms}, not {text!r}")
    return size


def parse_settings(items: list[str], given: dict) -> dict:
    """``--hparam KEY=VALUE`` items as settings of an encode (EncodeOptions checks them), on top
    of the options ``given`` by their own flags; a key given both ways is refused."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InrInputError(f"--hparam takes KEY=VALUE, not {item!r}")
        if key in given or key in out:
            raise InrInputError(f"{key} is given twice")
        out[key] = value
    return {**given, **out}


def encode_options(hparam: list[str], **flags):
    """The EncodeOptions of ``inr encode``: its flags (those given) and ``--hparam`` items."""
    from inrcodec.options import EncodeOptions
    given = {k: v for k, v in flags.items() if v is not None}
    return EncodeOptions.from_settings(parse_settings(hparam, given))


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"inr {inrcodec.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=version_callback,
                                      is_eager=True, help="Print the version and exit.")) -> None:
    """Encode images to .inr files, decode them at any resolution, inspect and benchmark."""


def batch_target(inputs: list[str], output: str, files_from: str | None = None) -> bool:
    """Several inputs, a folder among them, a file list, or an output that names a folder,
    mean batch mode."""
    return (len(inputs) != 1 or files_from is not None or Path(inputs[0]).is_dir()
            or output.endswith(("/", os.sep)) or Path(output).is_dir())


# The options of a batch, shared by encode and decode.
def globs_option(default: tuple[str, ...]):
    return typer.Option([], "--glob", help="With a folder input: only its files matching this "
                        f"pattern (repeatable; default {' '.join(default)}).")


#: The other options of a batch: flag, default, metavar (None: typer's) and help.
BATCH_OPTIONS = {
    "files_from": ("--files-from", None, None, "Also take the files listed in this file, one "
                   "path per line (- reads stdin); their outputs keep the listed paths under "
                   "the output folder."),
    "skip_existing": ("--skip-existing", False, None, "Skip files whose output the manifest "
                      "records as done from the same source and options (a stale, partial or "
                      "missing one is redone)."),
    "shard": ("--shard", None, "i/N", "Only this shard of the files (0 <= i < N): independent "
              "runs with 0/N .. N-1/N cover them exactly once."),
    "manifest": ("--manifest", None, None, "The batch's JSON-lines record of every file "
                 "(default OUTDIR/manifest.jsonl)."),
    "scheduler": ("--scheduler", None, None, "Run on this Dask scheduler (tcp://HOST:PORT; "
                  "needs inrcodec\\[cluster]; workers must reach the same paths)."),
    "cluster": ("--cluster", None, "local:N", "Start a Dask LocalCluster of N one-thread "
                "workers for this run."),
}


def batch_option(name: str):
    flag, default, metavar, text = BATCH_OPTIONS[name]
    return typer.Option(default, flag, metavar=metavar, help=text)


def dask_scheduler(scheduler: str | None, cluster: str | None) -> str | None:
    """The scheduler that --scheduler or --cluster names, if any."""
    from inrcodec.parallel import parse_scheduler
    if scheduler and cluster:
        raise InrInputError("give --scheduler or --cluster, not both")
    if cluster and not cluster.startswith("local:"):
        raise InrInputError(f"--cluster takes local:N, not {cluster!r}")
    return parse_scheduler(scheduler or cluster) if scheduler or cluster else None


@dataclass
class BatchFlags:
    globs: list[str]
    files_from: Optional[str]
    skip_existing: bool
    shard: Optional[str]
    manifest: Optional[str]
    scheduler: Optional[str]
    cluster: Optional[str]

    def given(self) -> list[str]:
        """The batch-only flags that were given."""
        values = {"--glob": self.globs, **{flag: getattr(self, name)
                                           for name, (flag, *_) in BATCH_OPTIONS.items()}}
        return [flag for flag, value in values.items() if value]

    def where(self, jobs: int) -> dict:
        """Where the batch runs: ``jobs`` local processes, or a Dask scheduler."""
        return {"jobs": jobs, "scheduler": dask_scheduler(self.scheduler, self.cluster)}

    def prepare(self, inputs: list[str], output: str, suffix: str, default_globs, recorded):
        from inrcodec.batch import prepare, read_list
        listed = None
        if self.files_from is not None:
            text = read_input(self.files_from, "a file list", MAX_LIST_BYTES)
            listed = read_list(text.decode("utf-8", "replace"))
        return prepare(inputs, output, suffix, files_from=listed,
                       globs=tuple(self.globs) or default_globs, shard_spec=self.shard,
                       manifest=self.manifest, skip_existing=self.skip_existing,
                       recorded=recorded)


def run_files(flags: BatchFlags, work, inputs: list[str], output: str, suffix: str,
              default_globs, options: dict, recorded: dict, jobs: int, label: str):
    """A batch of ``inr encode`` or ``inr decode``: the files' outcomes and how many were
    skipped as done."""
    from .batch import run_batch
    where = flags.where(jobs)
    items, skipped, manifest = flags.prepare(inputs, output, suffix, default_globs, recorded)
    outcomes = run_batch(work, items, options, label, manifest=manifest, recorded=recorded,
                         **where)
    return outcomes, skipped


def single_file_only(flags: BatchFlags) -> None:
    if flags.given():
        raise InrInputError(f"{', '.join(flags.given())} apply to batches (several inputs, a "
                            "folder or a list, or an output folder)")


def finish_batch(outcomes, as_json: bool, columns, skipped: int = 0) -> None:
    from .batch import summary
    if as_json:
        typer.echo(json.dumps([{"input": o.source, "output": o.target, "ok": o.ok,
                                "error": o.error, **o.facts} for o in outcomes]))
    summary(outcomes, columns, skipped)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        fail(f"{len(failed)} of {len(outcomes)} files failed")


@app.command()
def encode(
    inputs: list[str] = typer.Argument(None, help="Image(s) to encode (PNG, JPEG, ...) or "
                                       "folders of them; - reads stdin."),
    output: str = typer.Option(..., "-o", "--output", help="The .inr file to write (- for "
                               "stdout), or a folder (OUTDIR/) for several inputs."),
    model: Optional[str] = choice(FAMILY_NAMES, None, "--model", "-m",
                                  help=f"Model family (default {DEFAULT_FAMILY})."),
    bpp: Optional[float] = typer.Option(None, help="Target bits per pixel (the file lands at "
                                        "most 5% above)."),
    quality: Optional[float] = typer.Option(None, min=1, max=100, help="1..100: 0.05 bpp at 1, "
                                            "2 bpp at 100, log-spaced; 50 if neither is given."),
    psnr: Optional[float] = typer.Option(None, help="Target PSNR in dB instead of a rate: the "
                                         "smallest file found that reaches it (several fits, "
                                         "up to 6)."),
    effort: Optional[str] = choice(EFFORTS, help="Training effort (default: default)."),
    steps: Optional[int] = typer.Option(None, help="Training steps (overrides the effort's)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initialisation and sampling "
                                       "(default 0)."),
    encoding: Optional[str] = typer.Option(None, help="Input encoding: none, positional:L, "
                                           "fourier:N:SCALE[:SEED]; the family's default if unset."),
    hparam: list[str] = typer.Option([], "--hparam", help="Any other setting, KEY=VALUE "
                                     "(repeatable): a hyper-parameter of the family (width=64), "
                                     "a training override (cycles=2, lr=5e-4) or an option "
                                     "(bits_per_weight=5.5). docs/cli.md lists the keys."),
    coder: Optional[str] = choice(CODERS, help=f"Entropy coder (default the family's: "
                                  f"{DEFAULT_CODER}, a geometric model per tensor, or context "
                                  "for latent grids)."),
    jobs: int = typer.Option(1, min=1, help="Files encoded in parallel (several inputs)."),
    globs: list[str] = globs_option(IMAGE_GLOBS),
    files_from: Optional[str] = batch_option("files_from"),
    skip_existing: bool = batch_option("skip_existing"),
    shard: Optional[str] = batch_option("shard"),
    manifest: Optional[str] = batch_option("manifest"),
    scheduler: Optional[str] = batch_option("scheduler"),
    cluster: Optional[str] = batch_option("cluster"),
    device: Optional[str] = choice(DEVICES, help="Where training runs (default auto: CUDA "
                                  "when present)."),
    max_pixels: Optional[int] = typer.Option(None, min=1, help="Allow images of up to this "
                                             f"many pixels (default {limits.MAX_PIXELS:,}, as "
                                             "for decoding; the format holds "
                                             f"{limits.FORMAT_MAX_PIXELS:,})."),
    max_work: Optional[float] = typer.Option(None, min=1, help="Allow files that cost a "
                                             "decoder up to this many multiply-adds (default "
                                             f"{limits.MAX_WORK:.3g}, as for decoding)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (a "
                                 "list of them for several inputs)."),
    quiet: bool = quiet_option(),
) -> None:
    """Fit a network to an image and write it as a .inr file (or many, into a folder)."""
    setup_output(quiet)
    with user_errors():
        options = encode_options(hparam, model=model, bpp=bpp, quality=quality, psnr=psnr,
                                 effort=effort, steps=steps, seed=seed, encoding=encoding,
                                 coder=coder, device=device, max_pixels=max_pixels,
                                 max_work=max_work)
        flags = BatchFlags(globs, files_from, skip_existing, shard, manifest, scheduler, cluster)
        inputs = inputs or []
        if batch_target(inputs, output, files_from):
            from inrcodec.batch import encode_file, options_record
            outcomes, skipped = run_files(flags, encode_file, inputs, output, ".inr",
                                          IMAGE_GLOBS, {"options": options},
                                          options_record(options), jobs, "encoding")
            finish_batch(outcomes, as_json, [("bytes", "bytes", "d"), ("bpp", "bpp", ".3f"),
                                             ("PSNR dB", "psnr", ".2f"),
                                             ("seconds", "seconds", ".1f")], skipped)
            return
        single_file_only(flags)
        input = inputs[0]
        if as_json and output == "-":
            raise InrInputError("--json prints to stdout, so the .inr file cannot go there too")
        check_output(output, input)
        from inrcodec.encoder import compress
        from inrcodec.imageio import check_writable, load_image, write_atomic
        check_writable(output)  # before minutes of training, not after

        from inrcodec.limits import image_file_limit

        from .progress import encode_progress
        data = read_input(input, "an image", image_file_limit(options.max_pixels))
        name = "stdin" if input == "-" else input
        image = load_image(data, name, options.max_pixels)
        with encode_progress(name) as progress:
            result = compress(image, options, progress=progress)
        write_atomic(output, result.data)
        if as_json:
            typer.echo(json.dumps(result.as_dict()))
        else:
            note(f"{output}: {result.bytes} bytes, {result.bpp:.3f} bpp, "
                 f"PSNR {result.psnr:.2f} dB, {result.seconds:.1f} s, {result.description}")


@app.command()
def decode(
    inputs: list[str] = typer.Argument(None, help="The .inr file(s) or folders of them; - "
                                       "reads stdin."),
    output: str = typer.Option(..., "-o", "--output", help="Image to write (format from the "
                               "extension, PNG by default; - writes PNG to stdout), or a folder "
                               "(OUTDIR/) for several inputs."),
    scale: Optional[float] = typer.Option(None, help="Render at this scale of the stored size."),
    size: Optional[str] = typer.Option(None, help="Render at exactly WIDTHxHEIGHT, or at "
                                       "WIDTHx / xHEIGHT keeping the aspect ratio."),
    jobs: int = typer.Option(1, min=1, help="Files decoded in parallel (several inputs)."),
    globs: list[str] = globs_option(INR_GLOBS),
    files_from: Optional[str] = batch_option("files_from"),
    skip_existing: bool = batch_option("skip_existing"),
    shard: Optional[str] = batch_option("shard"),
    manifest: Optional[str] = batch_option("manifest"),
    scheduler: Optional[str] = batch_option("scheduler"),
    cluster: Optional[str] = batch_option("cluster"),
    device: str = choice(DEVICES, "cpu", help="Where rendering runs: cpu (the same pixels on "
                         "every machine), cuda, or auto (CUDA when present, else the CPU)."),
    max_pixels: Optional[int] = typer.Option(None, min=1, help="Allow decodes of up to this "
                                             "many output pixels (default "
                                             f"{limits.MAX_PIXELS:,})."),
    max_work: Optional[float] = typer.Option(None, min=1, help="Allow decodes of up to this "
                                             "many multiply-adds, entropy decoding and "
                                             f"rendering (default {limits.MAX_WORK:.3g}, about "
                                             "a minute and a half on two cores)."),
    quiet: bool = quiet_option(),
) -> None:
    """Render .inr files to images, at their own size or any other."""
    setup_output(quiet)
    with user_errors():
        wanted = parse_size(size, aspect=True) if size else None
        allowed = {"max_pixels": max_pixels, "max_work": max_work}
        flags = BatchFlags(globs, files_from, skip_existing, shard, manifest, scheduler, cluster)
        inputs = inputs or []
        if batch_target(inputs, output, files_from):
            from inrcodec.batch import decode_file
            options = {"scale": scale, "size": wanted, "device": device, **allowed}
            outcomes, skipped = run_files(flags, decode_file, inputs, output, ".png", INR_GLOBS,
                                          options, {"scale": scale, "size": size}, jobs,
                                          "decoding")
            finish_batch(outcomes, False, [("width", "width", "d"), ("height", "height", "d"),
                                           ("seconds", "seconds", ".2f")], skipped)
            return
        single_file_only(flags)
        input = inputs[0]
        check_output(output, input)
        from inrcodec.decoder import decode as decode_pixels
        from inrcodec.imageio import check_writable, image_bytes, image_format, write_atomic
        fmt = image_format(output)
        check_writable(output)
        pixels = decode_pixels(inr_source(input), scale=scale, size=wanted, device=device,
                               **allowed)
        write_atomic(output, image_bytes(pixels, fmt))


@app.command()
def info(
    input: str = typer.Argument(..., help="The .inr file; - reads stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (docs/cli.md)."),
) -> None:
    """Show what a .inr file holds: size, model, hyper-parameters, weights, bits."""
    with user_errors():
        from inrcodec.decoder import info as file_info
        facts = file_info(inr_source(input))
        if as_json:
            typer.echo(json.dumps(facts))
            return
        hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in facts["hparams"].items())
        enc = facts["encoding"]
        enc_text = enc["kind"] + "".join(f" {k}={v:g}" for k, v in enc.items() if k != "kind")
        bits = sorted({t["bits"] for t in facts["tensors"]})
        typer.echo(f"image       {facts['width']}x{facts['height']}, {facts['channels']} "
                   f"channel(s), colour {facts['color']}\n"
                   f"model       {facts['model']} ({hp})\n"
                   f"encoding    {enc_text}\n"
                   f"weights     {facts['params']} in {len(facts['tensors'])} tensors, "
                   f"{'/'.join(map(str, bits))} bits, coder {facts['coder']}\n"
                   f"size        {facts['bytes']} bytes ({facts['header_bytes']} header, "
                   f"{facts['payload_bytes']} payload, 4 checksum), {facts['bpp']:.4f} bpp\n"
                   f"format      version {facts['format_version']}")


@app.command()
def bench(
    dataset: Optional[Path] = typer.Argument(None, help="Folder of images; default "
                                             "../shared/datasets/kodak if it exists, else "
                                             "scikit-image's samples."),
    codecs: Optional[str] = typer.Option(None, help="Comma-separated: "
                                         + ", ".join(f"inr:{f}" for f in FAMILY_NAMES)
                                         + " (settings with +key=value, as --hparam takes "
                                         "them), jpeg, jpeg444, webp, avif, jpeg2000, jpegxl. "
                                         "Default: all."),
    out: Path = typer.Option(Path("bench-out"), "--out", help="Folder for the report and the "
                             "result cache."),
    bpp: Optional[str] = typer.Option(None, help="Comma-separated rate targets of inr codecs."),
    points: Optional[int] = typer.Option(None, min=1, help="Points per curve (inr targets "
                                         "log-spaced 0.15-1.1 bpp; classical sweeps thinned)."),
    effort: str = choice(EFFORTS, "default", help="Effort of inr codecs."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images."),
    images: Optional[str] = typer.Option(None, help="Only these images (comma-separated file "
                                         "names without extension)."),
    crop: Optional[str] = typer.Option(None, help="Centre-crop images to WIDTHxHEIGHT."),
    jobs: int = typer.Option(1, min=1, help="Parallel worker processes."),
    scheduler: Optional[str] = batch_option("scheduler"),
    cluster: Optional[str] = batch_option("cluster"),
    task: str = choice(TASKS, "rd", help="rd (rate-distortion) or upscale."),
    report: Optional[Path] = typer.Option(None, help="Where the markdown report goes (default "
                                          "OUT/report.md; plots stay in OUT)."),
    cached_only: bool = typer.Option(False, "--cached-only", help="Report from the cache "
                                     "alone; jobs never run are left out."),
    reference: str = typer.Option("jpeg", help="The codec that BD-rates are measured against "
                                  "(added to --codecs when they do not list it)."),
    quiet: bool = quiet_option(),
) -> None:
    """Rate-distortion report (bpp vs PSNR, MS-SSIM, BD-rate, plots) against JPEG, WebP, AVIF
    and JPEG 2000."""
    setup_output(quiet)
    from inrcodec.bench.main import BenchConfig, run as run_bench

    from .progress import count_progress
    with user_errors():
        if task not in TASKS:
            raise InrInputError(f"unknown task {task!r}; use rd or upscale")
        if effort not in EFFORTS:
            raise InrInputError(f"unknown effort {effort!r}; choose from {', '.join(EFFORTS)}")
        try:
            bpps = [float(b) for b in bpp.split(",")] if bpp else None
        except ValueError:
            raise InrInputError(f"--bpp takes numbers separated by commas, not {bpp!r}") from None
        config = BenchConfig(dataset=dataset, codecs=codecs.split(",") if codecs else None,
                             out=out, bpps=bpps, points=points, effort=effort,
                             limit=limit,
                             crop=parse_size(crop) if crop else None,
                             names=images.split(",") if images else None, jobs=jobs,
                             scheduler=dask_scheduler(scheduler, cluster),
                             task=task,
                             command="inr " + " ".join(sys.argv[1:]), report=report,
                             cached_only=cached_only, reference=reference)
        path = run_bench(config, progress=count_progress, note=lambda line: note(f"inr: {line}"))
        note(f"report: {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("inr-demo"), help="Folder for the demo's files."),
    effort: str = choice(EFFORTS, "default", help="Training effort."),
    bpp: float = typer.Option(0.5, help="Target bits per pixel."),
) -> None:
    """Encode a sample image that ships with scikit-image, decode it at 1x and 2x, and compare
    with JPEG at the same file size."""
    from .demo import run_demo
    from .progress import encode_progress
    with user_errors():
        run_demo(out, effort=effort, bpp=bpp, echo=typer.echo, progress=encode_progress)


def run() -> None:
    app(prog_name="inr")


if __name__ == "__main__":
    run()

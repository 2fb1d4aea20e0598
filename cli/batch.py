"""Many files at once: ``inr encode a.png b.png -o OUTDIR/`` and ``inr decode *.inr -o OUTDIR/``.

Each file is one task; ``--jobs N`` runs N worker processes (each with its share of the CPU
threads). One progress bar covers the batch, a failed file is reported and the others go on, and
a table summarises the batch at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.table import Table

from inrcodec.errors import InrError, InrInputError

from .progress import bar, stderr


@dataclass
class FileResult:
    source: str
    target: str
    ok: bool
    facts: dict = field(default_factory=dict)
    error: str = ""


def plan_outputs(inputs: list[str], folder: str, suffix: str) -> list[tuple[str, str]]:
    """(input, output) pairs: OUTDIR/<input stem><suffix>; refuses clashes and overwrites."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InrInputError(f"{folder} is not a folder; several inputs need an output folder")
    out.mkdir(parents=True, exist_ok=True)
    pairs, seen = [], {}
    for src in inputs:
        if src == "-":
            raise InrInputError("- (stdin) cannot be one of several inputs")
        target = out / (Path(src).stem + suffix)
        if target in seen:
            raise InrInputError(f"{src} and {seen[target]} would both be written to {target}")
        seen[target] = src
        if target.exists() and Path(src).exists() and target.samefile(src):
            raise InrInputError(f"refusing to overwrite the input {src}")
        pairs.append((src, str(target)))
    return pairs


def _guard(work: Callable[..., dict], source: str, target: str, options: dict) -> FileResult:
    start = time.perf_counter()
    try:
        facts = work(source, target, **options)
    except (InrError, OSError) as exc:
        message = str(exc) if isinstance(exc, InrError) else (exc.strerror or str(exc))
        return FileResult(source, target, False, error=message)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return FileResult(source, target, False, error=f"unexpected {type(exc).__name__}: {exc}")
    facts.setdefault("seconds", time.perf_counter() - start)
    return FileResult(source, target, True, facts)


def encode_file(source: str, target: str, options) -> dict:
    from inrcodec.encoder import compress
    from inrcodec.imageio import write_atomic
    result = compress(source, options)
    write_atomic(target, result.data)
    return result.as_dict()


def decode_file(source: str, target: str, scale=None, size=None, device="cpu",
                max_pixels=None, max_work=None) -> dict:
    from inrcodec.decoder import decode
    from inrcodec.imageio import image_bytes, image_format, write_atomic
    start = time.perf_counter()
    data = Path(source).read_bytes()
    pixels = decode(data, scale=scale, size=size, device=device, max_pixels=max_pixels,
                    max_work=max_work)
    write_atomic(target, image_bytes(pixels, image_format(target)))
    h, w = pixels.shape[:2]
    return {"width": w, "height": h, "seconds": time.perf_counter() - start}


def run_batch(work: Callable[..., dict], pairs: list[tuple[str, str]], options: dict,
              jobs: int, label: str) -> list[FileResult]:
    """Every pair through ``work(source, target, **options)``, in ``jobs`` processes; the
    results in the order of ``pairs``."""
    from inrcodec.parallel import run_unordered
    results: list[FileResult | None] = [None] * len(pairs)
    with bar() as progress:
        task = progress.add_task(label, total=len(pairs))
        calls = [(work, src, dst, options) for src, dst in pairs]
        for i, result in run_unordered(_guard, calls, jobs):
            results[i] = result
            progress.advance(task)
    return results


def summary(outcomes: list[FileResult], columns: list[tuple[str, str, str]]) -> None:
    """Print the batch as a table on stderr; ``columns`` are (title, fact key, format)."""
    table = Table(title=f"{sum(o.ok for o in outcomes)} of {len(outcomes)} files done")
    table.add_column("file")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    table.add_column("status")
    for o in outcomes:
        cells = [format(o.facts[key], fmt) if o.ok and key in o.facts else "-"
                 for _, key, fmt in columns]
        table.add_row(o.source, *cells, "ok" if o.ok else f"[red]failed: {o.error}")
    stderr.print(table)

"""Rich progress bars on stderr for the library's progress callbacks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from inrcodec.fit import Progress as FitProgress

stderr = Console(stderr=True)


def bar(*extra_columns) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *extra_columns, TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=stderr, transient=False)


@contextmanager
def encode_progress(name: str) -> Iterator[Callable[[FitProgress], None]]:
    """A callback for ``inrcodec.compress(progress=...)`` that drives one bar: step, PSNR, ETA."""
    with bar(TextColumn("{task.fields[stage]}"), TextColumn("{task.fields[psnr]}")) as progress:
        task = progress.add_task(name, total=None, stage="", psnr="")

        def update(p: FitProgress) -> None:
            psnr = f"{p.psnr:.2f} dB" if p.psnr is not None else ""
            progress.update(task, completed=p.step, total=p.total, stage=p.stage, psnr=psnr)

        yield update

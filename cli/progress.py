"""Rich progress bars on stderr for the library's progress callbacks."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

if TYPE_CHECKING:
    from inrcodec.fit import Progress as FitProgress

stderr = Console(stderr=True)


#: Redraws a second. Rich's own refresh thread (10 a second) competes with torch's threads for
#: the two cores and made a fresh `inr encode` of kodim05 at 0.5 bpp 20% slower (79 s against
#: 66 s); an encode's bar is redrawn from its callback, at most this often.
REDRAWS_PER_SECOND = 2


def bar(*extra_columns, auto_refresh: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *extra_columns, TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=stderr, transient=False,
                    auto_refresh=auto_refresh, refresh_per_second=REDRAWS_PER_SECOND)


@contextmanager
def encode_progress(name: str) -> Iterator[Callable[[FitProgress], None]]:
    """A callback for ``inrcodec.compress(progress=...)`` that drives one bar: step, PSNR, ETA.

    The bar appears at the first report, so an error found before training is the only output.
    """
    progress = bar(TextColumn("{task.fields[stage]}"), TextColumn("{task.fields[psnr]}"),
                   auto_refresh=False)
    task = None
    drawn = 0.0

    def update(p: FitProgress) -> None:
        nonlocal task, drawn
        if task is None:
            progress.start()
            task = progress.add_task(name, total=p.total, stage="", psnr="")
        psnr = f"{p.psnr:.2f} dB" if p.psnr is not None else ""
        progress.update(task, completed=p.step, total=p.total, stage=p.stage, psnr=psnr)
        now = time.monotonic()
        if now - drawn >= 1 / REDRAWS_PER_SECOND or p.step == p.total:
            progress.refresh()
            drawn = now

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()


@contextmanager
def count_progress(total: int) -> Iterator[Callable[[], None]]:
    """A bar over ``total`` jobs; yields the function that advances it by one."""
    with bar() as progress:
        task = progress.add_task("benchmark", total=total)
        yield lambda: progress.advance(task)

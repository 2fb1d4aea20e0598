"""Rich progress bars on stderr for the library's progress callbacks."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
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


#: The widest the file's name is shown in an encode's bar (its start elided beyond that), so
#: that the bar's numbers fit 80 columns.
NAME_WIDTH = 18


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A file's name (not its folders), elided at the start to ``width`` characters."""
    name = Path(name).name or name
    return name if len(name) <= width else "…" + name[-(width - 1):]


def clock(seconds: float | None) -> str:
    """H:MM:SS, or -:--:-- for an unknown time."""
    if seconds is None:
        return "-:--:--"
    seconds = int(math.ceil(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@contextmanager
def encode_progress(name: str) -> Iterator[Callable[[FitProgress], None]]:
    """A callback for ``inrcodec.compress(progress=...)`` that drives one bar: the steps, the
    training's PSNR (the network before its weights are quantised; the summary line after the
    bar gives the file's), the time spent and the library's estimate of the time left.

    The clock is the encode's own, from the first report, so it runs on through every fit of a
    quality search; the time left is the library's (``Progress.eta``: the model's estimate
    until the pace of the steps is measured), never blank. The bar appears at the first report,
    so an error found before training is the only output."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=None),
                        MofNCompleteColumn(), TextColumn("{task.fields[stage]}"),
                        TextColumn("{task.fields[psnr]}"), TextColumn("{task.fields[clock]}"),
                        console=stderr, transient=False, auto_refresh=False, expand=True)
    task = None
    started = time.monotonic()
    drawn = 0.0
    eta: float | None = None

    def update(p: FitProgress) -> None:
        nonlocal task, drawn, eta
        if task is None:
            progress.start()
            task = progress.add_task(short_name(name), total=p.total, stage="", psnr="",
                                     clock="")
        now = time.monotonic()
        eta = p.eta if p.eta is not None else eta
        psnr = f"train {p.psnr:.2f} dB" if p.psnr is not None else ""
        times = f"{clock(now - started)} ETA {clock(eta)}"
        progress.update(task, completed=p.step, total=p.total, stage=p.stage, psnr=psnr,
                        clock=times)
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

"""Many files at once: ``inr encode FILES/FOLDERS -o OUTDIR/`` and ``inr decode ... -o OUTDIR/``.

The library (:mod:`inrcodec.batch`) finds the files, plans the outputs, keeps the manifest and
runs the files on a local pool or a Dask cluster; this module shows it: one progress bar for
the batch (results stream in as they finish, wherever they ran) and a table at the end.
"""

from __future__ import annotations

from rich.table import Table

from inrcodec.batch import FileResult

from .progress import bar, stderr


def run_batch(work, items, options: dict, label: str, **where) -> list[FileResult]:
    """``inrcodec.batch.run`` under a progress bar; ``where``: jobs, scheduler, manifest,
    recorded."""
    from inrcodec.batch import run
    with bar() as progress:
        task = progress.add_task(label, total=len(items))
        return run(work, items, options, on_result=lambda _: progress.advance(task), **where)


def summary(outcomes: list[FileResult], columns: list[tuple[str, str, str]],
            skipped: int = 0) -> None:
    """Print the batch as a table on stderr; ``columns`` are (title, fact key, format)."""
    title = f"{sum(o.ok for o in outcomes)} of {len(outcomes)} files done"
    if skipped:
        title += f" ({skipped} already done, skipped)"
    if not outcomes:
        stderr.print(title)
        return
    table = Table(title=title)
    table.add_column("file")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    table.add_column("status")
    for o in outcomes:
        cells = [format(o.facts[key], fmt) if o.ok and key in o.facts else "-"
                 for _, key, fmt in columns]
        table.add_row(o.source, *cells, "ok" if o.ok else f"[red]failed: {o.error}")
    stderr.print(table)

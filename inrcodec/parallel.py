"""Running independent jobs (files of a batch, benchmark jobs) in worker processes.

One process pool for the whole project: ``jobs`` workers, each with its share of the CPU
threads for torch (torch's threads slow down sharply when more run than there are cores).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def run_unordered(work: Callable[..., Any], calls: Sequence[tuple], jobs: int = 1
                  ) -> Iterator[tuple[int, Any]]:
    """``work(*args)`` for every ``args`` of ``calls``, as (index, result) in the order they
    finish: in this process for ``jobs`` <= 1, else in ``jobs`` worker processes."""
    if jobs <= 1:
        for i, args in enumerate(calls):
            yield i, work(*args)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(work, *args): i for i, args in enumerate(calls)}
        for future in as_completed(futures):
            yield futures[future], future.result()

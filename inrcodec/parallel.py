"""Running independent jobs (files of a batch, benchmark jobs) in worker processes.

One process pool for the whole project: ``jobs`` workers, each with its share of the CPU
threads for torch (torch's threads slow down sharply when more run than there are cores).

An interrupt stops everything at once: Ctrl-C reaches the whole process group, but workers
ignore it and the parent decides. On KeyboardInterrupt (or when the caller stops reading) the
jobs not yet started are cancelled and the workers are terminated; a worker leaves through
SystemExit, so the job it was running unwinds (an atomic write removes its temporary file) and
no output appears after the interrupt.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence


def _leave(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave)


def _in_worker(work: Callable[..., Any], args: tuple) -> Any:
    try:
        return work(*args)
    except SystemExit:  # terminated: the job has unwound; leave rather than take another
        os._exit(1)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the jobs not started and end the workers now."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=30)


def run_unordered(work: Callable[..., Any], calls: Sequence[tuple], jobs: int = 1
                  ) -> Iterator[tuple[int, Any]]:
    """``work(*args)`` for every ``args`` of ``calls``, as (index, result) in the order they
    finish: in this process for ``jobs`` <= 1, else in ``jobs`` worker processes."""
    if jobs <= 1:
        for i, args in enumerate(calls):
            yield i, work(*args)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(_in_worker, work, args): i for i, args in enumerate(calls)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BaseException:  # an interrupt, or the caller closing the generator
        _stop(pool)
        raise
    pool.shutdown()

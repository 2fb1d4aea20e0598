"""Running independent jobs (files of a batch, benchmark jobs) in worker processes.

One entry point, :func:`run_unordered`, for the two places jobs can run:

- a local process pool (the default, no extra needed): ``jobs`` workers, each with its share of
  the CPU threads for torch (torch's threads slow down sharply when more run than there are
  cores);
- a Dask cluster (``scheduler``: the address of a running scheduler, ``tcp://HOST:PORT``, or
  ``local:N`` for a ``LocalCluster`` of N one-thread worker processes started here and closed
  after), with the optional extra ``inrcodec[cluster]``. Dask reschedules the jobs of a worker
  that dies; a job that keeps killing its workers ends as :class:`LostJob` after Dask's
  ``allowed-failures``. Each job sets torch to one thread on its worker.

An interrupt stops everything at once: Ctrl-C reaches the whole process group, but workers
ignore it and the parent decides. On KeyboardInterrupt (or when the caller stops reading) the
jobs not yet started are cancelled and the workers are terminated; a worker leaves through
SystemExit, so the job it was running unwinds (an atomic write removes its temporary file) and
no output appears after the interrupt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from .errors import InrInputError

#: How long to wait for a scheduler to answer before giving up (seconds).
CONNECT_TIMEOUT_S = 20


class LostJob(Exception):
    """A job whose worker died (every time it was tried): not the job's own error."""


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


def run_unordered(work: Callable[..., Any], calls: Sequence[tuple], jobs: int = 1,
                  scheduler: str | None = None,
                  lost: Callable[[tuple, Exception], Any] | None = None
                  ) -> Iterator[tuple[int, Any]]:
    """``work(*args)`` for every ``args`` of ``calls``, as (index, result) in the order they
    finish: on the Dask cluster at ``scheduler`` if given, else in this process for ``jobs``
    <= 1, else in ``jobs`` worker processes. A job lost with its worker process raises
    (:class:`LostJob` on a cluster), or gives ``lost(args, error)`` as its result if given."""
    if scheduler:
        yield from _run_on_cluster(work, calls, scheduler, lost)
        return
    if jobs <= 1:
        for i, args in enumerate(calls):
            yield i, work(*args)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(_in_worker, work, args): i for i, args in enumerate(calls)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool as exc:  # a worker died: the pool takes no more jobs
                if lost is None:
                    raise
                result = lost(calls[futures[future]], LostJob(f"worker process died: {exc}"))
            yield futures[future], result
    except BaseException:  # an interrupt, or the caller closing the generator
        _stop(pool)
        raise
    pool.shutdown()


def parse_scheduler(text: str) -> str:
    """Check a scheduler given by the user: ``local:N`` or an address (``tcp://HOST:PORT``,
    ``HOST:PORT``, or any protocol Dask speaks); the text as given."""
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or not 1 <= int(count) <= 1024:
            raise InrInputError(f"a local cluster is local:N with N in 1..1024, not {text!r}")
    elif ":" not in text:
        raise InrInputError(f"a scheduler address looks like tcp://HOST:PORT, not {text!r}")
    return text


#: What a Dask nanny sets before it starts a worker (``distributed.nanny.pre-spawn-environ``)
#: and what it costs torch: a fixed trim threshold turns off glibc's dynamic mmap threshold, so
#: every tensor above 128 KiB is a fresh mmap and its pages faulted in again. Measured here: a
#: loop of 4096x64 matmuls, sines and backward passes ran 2.0-2.2x slower in a worker (8.9-10.2 s
#: against 4.4), and a fast-effort Kodak encode 2.1x (22-25 s against 10.5-11.4).
MALLOC_TRIM_ENV = "MALLOC_TRIM_THRESHOLD_"
#: glibc's own limits of the dynamic regime on 64-bit (mmap threshold 32 MiB, trim twice that).
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 64 << 20


#: glibc's mallopt parameters.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


def _glibc() -> Any:
    """The C library, where it is glibc (None elsewhere)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def mallopt(settings: dict[int, int]) -> bool:
    """Set glibc's allocator parameters (process-wide); False where the C library is not glibc."""
    libc = _glibc()
    return libc is not None and all(libc.mallopt(param, value) == 1
                                    for param, value in settings.items())


def _restore_malloc() -> None:
    """Give back to torch the allocator that the nanny's environment took (see above): the
    thresholds of glibc's dynamic regime, set once per process. Elsewhere a no-op."""
    if not os.environ.get(MALLOC_TRIM_ENV) or getattr(_restore_malloc, "done", False):
        return
    mallopt({M_MMAP_THRESHOLD: MMAP_THRESHOLD, M_TRIM_THRESHOLD: TRIM_THRESHOLD})
    _restore_malloc.done = True


#: The largest trim threshold mallopt takes (a C int): the heap is trimmed only when 2 GiB at
#: its top are free.
NEVER = (1 << 31) - 1
#: glibc's default most mappings (M_MMAP_MAX).
MMAP_MAX = 65536


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """While the block runs (a fit), make glibc serve every allocation from its heap and keep
    what is freed there. A training step allocates tensors the size of the latents (128 MB for
    a 12 MP image) every step; glibc serves allocations above its mmap threshold (32 MiB at
    most) with fresh mappings, whose pages the kernel zeroes at first touch: a 6 MP latent step
    spent 0.2 of its 0.3 s in the kernel, and that share shrank as the kernel warmed up, so the
    pace drifted. With the heap reused: 0.14-0.20 s a step, nothing in the kernel, a steady pace;
    Kodak encodes 5-15% faster at the same bytes, for 25-35 MiB more peak memory
    (docs/experiments.md, "Encode time"). After the block, the limits of glibc's dynamic regime
    again and the free heap given back: a process that goes on to decode file after file kept
    the fit's heap and grew with its fragments (a fuzzing worker that had encoded its seeds, 25
    MB for every 2,000 new inputs against 3 without). Where the C library is not glibc, a
    no-op."""
    kept = mallopt({M_MMAP_MAX: 0, M_TRIM_THRESHOLD: NEVER})
    try:
        yield
    finally:
        if kept:
            mallopt({M_MMAP_MAX: MMAP_MAX, M_MMAP_THRESHOLD: MMAP_THRESHOLD,
                     M_TRIM_THRESHOLD: TRIM_THRESHOLD})
            _glibc().malloc_trim(0)


def _on_worker(work: Callable[..., Any], args: tuple) -> Any:
    import torch
    _restore_malloc()
    torch.set_num_threads(1)
    return work(*args)


def _connect(scheduler: str):
    """A Dask client for ``scheduler`` and the LocalCluster it started (or None)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InrInputError("running on a Dask cluster needs the cluster extra: "
                            "pip install 'inrcodec[cluster]'") from None
    if scheduler.startswith("local:"):
        import dask
        # Not the trim threshold either: the nanny would also put it in this process's
        # environment, for every program it starts after.
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_TRIM_ENV}": None}):
            cluster = LocalCluster(n_workers=int(scheduler.removeprefix("local:")),
                                   threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(parse_scheduler(scheduler), timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError) as exc:
        raise InrInputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def _run_on_cluster(work: Callable[..., Any], calls: Sequence[tuple], scheduler: str,
                    lost: Callable[[tuple, Exception], Any] | None) -> Iterator[tuple[int, Any]]:
    from distributed import as_completed as completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    client, cluster = _connect(scheduler)
    futures = []
    try:
        futures = [client.submit(_on_worker, work, args, pure=False) for args in calls]
        index = {future.key: i for i, future in enumerate(futures)}
        for future in completed(futures):
            i = index[future.key]
            try:
                result = future.result()
            except (KilledWorker, FutureCancelledError) as exc:
                error = LostJob(f"lost with its worker: {exc}")
                if lost is None:
                    raise error from None
                result = lost(calls[i], error)
            yield i, result
    except BaseException:  # an interrupt, or the caller closing the generator
        client.cancel(futures)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

"""Running benchmark jobs: one per (image, codec, setting), cached, optionally in parallel.

Every finished job is written to ``DIR/cache/<key>.json`` at once (and an inr job's file to
``<key>.inr``), so an interrupted run resumes where it stopped. The key covers the image's
pixels, the codec spec, the setting, the effort and the codec's fingerprint (library versions;
for inr codecs a hash of the codec's source), so a changed encoder is measured again.

Each result row carries its job's key and fingerprint, so the ``results.json`` a run leaves (and
a project commits, where the cache folder is not) can fill an empty cache again
(:meth:`Cache.seed`): a later run measures only what that file lacks or what has changed since.

Peak memory of an encode is the resident-set high-water mark of the process that ran it, reset
before the job where Linux allows (``/proc/self/clear_refs``), so it includes the interpreter and
its libraries (about 0.3 GiB with torch).
"""

from __future__ import annotations

import hashlib
import json
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InrError
from ..metrics import ms_ssim, psnr
from ..parallel import run_unordered
from .codecs import parse_codec
from .datasets import BenchImage


@dataclass(frozen=True)
class Job:
    image: BenchImage
    spec: str
    setting: float
    effort: str
    fingerprint: str

    @property
    def key(self) -> str:
        text = json.dumps([self.image.digest, self.spec, self.setting, self.effort,
                           self.fingerprint])
        return hashlib.sha1(text.encode()).hexdigest()[:20]


def reset_peak_memory() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_job(job: Job) -> tuple[dict, bytes | None]:
    """Encode, decode and measure one job; the result row and, for inr codecs, the file.

    A job the codec refuses (say, a rate too low for an image this small) gives a row with its
    ``error`` and no measurements; the report lists it and leaves its setting out of the curve.
    """
    codec = parse_codec(job.spec)
    pixels = job.image.pixels
    h, w = pixels.shape[:2]
    row = {
        "image": job.image.name, "codec": job.spec, "label": codec.label, "kind": codec.kind,
        "setting": job.setting, "effort": job.effort if codec.kind == "inr" else "",
        "width": w, "height": h, "error": ""}
    reset_peak_memory()
    try:
        outcome = codec.run(pixels, job.setting, job.effort)
    except InrError as exc:
        nan = float("nan")
        row.update(bytes=0, bpp=nan, psnr=nan, ms_ssim=nan, encode_seconds=nan,
                   decode_seconds=nan, peak_memory_mb=nan, error=str(exc))
        return row, None
    peak = peak_memory_bytes()
    row.update({
        "bytes": len(outcome.data),
        "bpp": 8 * len(outcome.data) / (w * h),
        "psnr": psnr(outcome.decoded, pixels), "ms_ssim": ms_ssim(outcome.decoded, pixels),
        "encode_seconds": outcome.encode_seconds, "decode_seconds": outcome.decode_seconds,
        "peak_memory_mb": peak / 2 ** 20,
    })
    return row, outcome.data if codec.kind == "inr" else None


class Cache:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, job: Job) -> dict | None:
        path = self.folder / f"{job.key}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, job: Job, row: dict, data: bytes | None) -> None:
        self._write(job.key, row, data)

    def _write(self, key: str, row: dict, data: bytes | None) -> None:
        from ..imageio import write_atomic
        if data is not None:
            write_atomic(self.folder / f"{key}.inr", data)
        write_atomic(self.folder / f"{key}.json", json.dumps(row).encode())

    def seed(self, results: Path) -> set[str]:
        """Fill the cache from an earlier run's ``results.json``: every row with a key that is
        not yet cached (all of them, so that a narrower run that rewrites the file loses none).
        Rows without a key (older runs) and a file that cannot be read are passed over. Returns
        the keys taken; their jobs have no encoded file here (a report leaves them out of its
        crops)."""
        try:
            rows = json.loads(results.read_text())
        except (OSError, ValueError):
            return set()
        taken = set()
        for row in rows if isinstance(rows, list) else []:
            key = row.get("key") if isinstance(row, dict) else None
            if isinstance(key, str) and len(key) == 20 and key.isalnum() \
                    and not (self.folder / f"{key}.json").exists():
                self._write(key, row, None)
                taken.add(key)
        return taken

    def file(self, job: Job) -> bytes | None:
        path = self.folder / f"{job.key}.inr"
        return path.read_bytes() if path.exists() else None


def run_jobs(jobs: list[Job], cache: Cache, workers: int = 1,
             on_done: Callable[[dict, bool], None] | None = None,
             scheduler: str | None = None) -> list[dict]:
    """Results of every job, from the cache where present; ``on_done(row, cached)`` after each.
    Each row names its job's key and fingerprint. The jobs run in ``workers`` local processes,
    or on the Dask ``scheduler`` (``parallel.run_unordered``); results are cached here, as
    they arrive."""
    rows: list[dict] = []

    def done(job: Job, row: dict, cached: bool) -> None:
        row = {**row, "key": job.key, "fingerprint": job.fingerprint}
        rows.append(row)
        if on_done:
            on_done(row, cached)

    todo = []
    for job in jobs:
        row = cache.get(job)
        if row is None:
            todo.append(job)
        else:
            done(job, row, True)
    for i, (row, data) in run_unordered(run_job, [(job,) for job in todo], workers,
                                        scheduler=scheduler):
        cache.put(todo[i], row, data)
        done(todo[i], row, False)
    return rows

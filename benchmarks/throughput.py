"""Batch throughput: files per minute through ``inrcodec.batch`` on a local pool and on a Dask
LocalCluster, with 1 and 2 workers, the same files and options each time.

    python benchmarks/throughput.py ../shared/datasets/kodak --images 8 --effort fast --bpp 0.5

Each configuration runs in a fresh process (so that none inherits another's compiled training
step) and encodes the first ``--images`` files of the folder into a fresh temporary folder; it
is timed from the call to the last result, start-up included (a LocalCluster's scheduler and
workers, a pool's processes, torch's import and the step's compilation in each). Every
configuration must give the same bytes (one torch thread per encode everywhere; checked).
Prints one row per configuration: wall seconds, files per minute, the median of the per-file
encode seconds, and the ratio to one worker. Run it on an idle machine: it warns when
the load average says something else is running.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: A one-minute load average above this means something else is running.
BUSY_LOAD = 0.5
#: (label, local jobs, scheduler): jobs=2 on two cores gives each encode one thread, as the
#: cluster's workers have; jobs=1 runs in this process at one thread too (set below).
CONFIGS = [("local pool, 1 process", 1, None), ("local pool, 2 processes", 2, None),
           ("Dask LocalCluster, 1 worker", 1, "local:1"),
           ("Dask LocalCluster, 2 workers", 1, "local:2")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="folder of images")
    parser.add_argument("--images", type=int, default=8, help="how many files (sorted names)")
    parser.add_argument("--effort", default="fast")
    parser.add_argument("--bpp", type=float, default=0.5)
    parser.add_argument("--model", default=None, help="family (default: the default family)")
    parser.add_argument("--config", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config is not None:
        return measure(args, *CONFIGS[args.config])

    if os.getloadavg()[0] > BUSY_LOAD:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is not idle, "
              "the times will not hold", file=sys.stderr)
    print(f"first {args.images} files of {args.dataset}, effort {args.effort}, {args.bpp} bpp, "
          f"{os.cpu_count()} CPUs")
    print("| configuration | wall s | files/min | median encode s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    digest, base = None, None
    for i, (label, _, _) in enumerate(CONFIGS):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--config", str(i)],
                             capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{label}: {run.stderr.strip().splitlines()[-1:]}")
        wall, count, median, files = run.stdout.split()
        if digest not in (None, files):
            sys.exit(f"{label}: different bytes from {CONFIGS[0][0]}")
        digest = files
        rate = 60 * int(count) / float(wall)
        base = base or rate
        print(f"| {label} | {float(wall):.1f} | {rate:.2f} | {float(median):.1f} | "
              f"{rate / base:.2f}x |", flush=True)


def measure(args, label: str, jobs: int, scheduler: str | None) -> None:
    """One configuration: prints wall seconds, files, median encode seconds, bytes' hash."""
    import torch

    from inrcodec import batch
    from inrcodec.options import EncodeOptions

    torch.set_num_threads(1)
    settings = {"effort": args.effort, "bpp": args.bpp, "threads": 1}
    if args.model:
        settings["model"] = args.model
    options = EncodeOptions.from_settings(settings)
    sources = sorted(p for p in args.dataset.iterdir() if p.suffix.lower() == ".png")
    sources = [str(p) for p in sources[:args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        items, _, _ = batch.prepare(sources, tmp, ".inr")
        start = time.perf_counter()
        results = batch.run(batch.encode_file, items, {"options": options}, jobs=jobs,
                            scheduler=scheduler)
        wall = time.perf_counter() - start
        failed = [r.error for r in results if not r.ok]
        if failed:
            sys.exit(f"{label}: {failed}")
        files = hashlib.sha256(b"".join(Path(i.target).read_bytes() for i in items))
    median = statistics.median(r.facts["seconds"] for r in results)
    print(wall, len(items), median, files.hexdigest()[:16])


if __name__ == "__main__":
    main()

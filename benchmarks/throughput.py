"""Batch throughput: files per minute through ``inrcodec.batch`` on a local pool and on a Dask
LocalCluster, with 1 and 2 workers, the same files and options each time.

    python benchmarks/throughput.py ../shared/datasets/kodak --images 8 --effort fast --bpp 0.5

Each configuration encodes the first ``--images`` files of the folder into a fresh temporary
folder and is timed from the call to the last result, start-up included (a LocalCluster's
scheduler and workers, a pool's processes, torch's import in each); every configuration must
give the same bytes for a file (one torch thread per encode everywhere, which the check
enforces). Prints one row per configuration: wall seconds, files per minute, the median of the
per-file encode seconds, and the ratio to one worker. Run it on an idle machine: it warns when
the load average says something else is running.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    args = parser.parse_args()

    import torch

    from inrcodec import batch
    from inrcodec.options import EncodeOptions

    torch.set_num_threads(1)
    if os.getloadavg()[0] > BUSY_LOAD:
        print(f"warning: load average {os.getloadavg()[0]:.2f}: the machine is not idle, "
              "the times will not hold", file=sys.stderr)
    settings = {"effort": args.effort, "bpp": args.bpp, "threads": 1}
    if args.model:
        settings["model"] = args.model
    options = EncodeOptions.from_settings(settings)
    sources = sorted(p for p in args.dataset.iterdir() if p.suffix.lower() == ".png")
    sources = [str(p) for p in sources[:args.images]]
    print(f"{len(sources)} files of {args.dataset}, {options.model}, effort {options.effort}, "
          f"{options.bpp} bpp, {os.cpu_count()} CPUs")
    print("| configuration | wall s | files/min | median encode s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    first_bytes, base = None, None
    for label, jobs, scheduler in CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            items, _, _ = batch.prepare(sources, tmp, ".inr")
            start = time.perf_counter()
            results = batch.run(batch.encode_file, items, {"options": options}, jobs=jobs,
                                scheduler=scheduler)
            wall = time.perf_counter() - start
            failed = [r.error for r in results if not r.ok]
            if failed:
                sys.exit(f"{label}: {failed}")
            data = [Path(item.target).read_bytes() for item in items]
        if first_bytes is None:
            first_bytes = data
        elif data != first_bytes:
            sys.exit(f"{label}: different bytes from {CONFIGS[0][0]}")
        rate = 60 * len(items) / wall
        base = base or rate
        median = statistics.median(r.facts["seconds"] for r in results)
        print(f"| {label} | {wall:.1f} | {rate:.2f} | {median:.1f} | {rate / base:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()

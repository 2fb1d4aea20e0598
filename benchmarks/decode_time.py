"""Decode time and memory as issue 35's target 4 measures them: ``inrcodec.decode`` of a file
with the library already loaded, the median of ``--repeats`` decodes, and the peak memory of the
process that loaded the library and decoded it (a fresh one per file).

    python benchmarks/decode_time.py FILE.inr [FILE.inr ...] [--repeats 5]

One line per file (seconds, peak MiB, size), then the median over the files. Run it on an idle
machine: a decode uses every core for its rendering.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

ONE_FILE = """
import json, resource, statistics, sys, time
import inrcodec
data = open(sys.argv[1], "rb").read()
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    pixels = inrcodec.decode(data)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "shape": list(pixels.shape),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    seconds, peaks = [], []
    for path in args.files:
        out = subprocess.run([sys.executable, "-c", ONE_FILE, path, str(args.repeats)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        seconds.append(row["seconds"])
        peaks.append(row["peak_mib"])
        height, width = row["shape"][:2]
        print(f"{path}: {width}x{height}, {row['seconds']:.3f} s (median of {args.repeats}), "
              f"peak {row['peak_mib']:.0f} MiB", flush=True)
    print(f"median over {len(seconds)} files: {statistics.median(seconds):.3f} s, "
          f"largest peak {max(peaks):.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())

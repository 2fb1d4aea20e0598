"""Carry a report's inr results over to the current codec fingerprint, after a change that
does not change what the encoder writes.

A result row is keyed by the codec's fingerprint, a hash of the source of ``inrcodec/``
(outside ``inrcodec/bench/``), so any edit there, a docstring or a decoder fix, makes every
cached inr result stale. When ``benchmarks/same_bytes.py`` shows that the encoder writes the
same bytes as before, those results still hold: this rewrites the rows of the old fingerprint
with the current one and their keys to match, and says how many it carried.

    python benchmarks/same_bytes.py > after.json; diff before.json after.json   # first
    python benchmarks/carry_results.py docs/results/kodak ../shared/datasets/kodak \\
        --from inr-688378bbb618

An encoded file in the report's cache is copied to the new key too (for the report's crops).
``--codecs`` carries only the rows of some codecs (those whose encodes the change left alone).
Then name the new fingerprint in docs/results/README.md, and check with the report's own
``--cached-only`` command that every row is taken from the cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from inrcodec.bench.codecs import inr_fingerprint
from inrcodec.bench.datasets import load_dataset
from inrcodec.bench.report import write_rows
from inrcodec.bench.runner import Job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the report folder holding results.json")
    parser.add_argument("dataset", type=Path, help="the images the rows were measured on")
    parser.add_argument("--from", dest="old", required=True,
                        help="the fingerprint to carry over (e.g. inr-688378bbb618)")
    parser.add_argument("--codecs", help="only these codec specs (comma-separated, as the rows "
                        "name them, e.g. inr:gridded,inr:dct+effort=best); default: every inr row")
    args = parser.parse_args()
    only = set(args.codecs.split(",")) if args.codecs else None

    rows = json.loads((args.results / "results.json").read_text())
    digests = {image.name: image for image in load_dataset(args.dataset)[1]}
    new = inr_fingerprint()
    carried = 0
    for row in rows:
        if row["kind"] != "inr" or row["fingerprint"] != args.old:
            continue
        if only is not None and row["codec"] not in only:
            continue
        job = Job(digests[row["image"]], row["codec"], row["setting"], row["effort"], new)
        encoded = args.results / "cache" / f"{row['key']}.inr"
        if encoded.exists():  # the same bytes: the report's crops can still show them
            shutil.copyfile(encoded, encoded.with_name(f"{job.key}.inr"))
        row["key"], row["fingerprint"] = job.key, new
        carried += 1
    write_rows(rows, args.results)
    print(f"{carried} of {len(rows)} rows carried from {args.old} to {new}")


if __name__ == "__main__":
    main()

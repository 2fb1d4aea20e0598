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

The entries of the report's cache are carried too (their encoded files with them, for the
report's crops).
``--codecs`` carries only the rows of some codecs (those whose encodes the change left alone).
``--rename OLD NEW`` carries the rows of the codec spec OLD as NEW's, for a change that makes
NEW encode what OLD did (a preset that takes a measured override: ``--rename
inr:gridded+ratio=2 inr:gridded`` once the gridded preset has ``ratio=2``, after a check that
the new default writes the old override's bytes); NEW's own rows of the old fingerprint are then
dropped, as any row of a changed encode is, unless a rename carries them too (``--rename
inr:gridded inr:gridded+ratio=1``, the old default as the new preset with the override undone).
Then name the new fingerprint in docs/results/README.md, and check with the report's own
``--cached-only`` command that every row is taken from the cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from inrcodec.bench.codecs import inr_fingerprint, parse_codec
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
    parser.add_argument("--rename", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                        help="carry codec OLD's rows as codec NEW's (repeatable)")
    args = parser.parse_args()
    renames = dict(args.rename)
    only = set(args.codecs.split(",")) if args.codecs else None
    if only is not None:
        only |= set(renames)
    images = {image.name: image for image in load_dataset(args.dataset)[1]}
    new = inr_fingerprint()

    def job(row: dict, fingerprint: str) -> Job:
        return Job(images[row["image"]], row["codec"], row["setting"], row["effort"], fingerprint)

    def renamed(row: dict) -> dict:
        """The row as the codec it is carried as (its spec and label)."""
        if row["codec"] not in renames:
            return row
        spec = renames[row["codec"]]
        return {**row, "codec": spec, "label": parse_codec(spec).label}

    stale = set(renames.values()) - set(renames)  # the old rows of what a rename replaces

    def wanted(row: dict) -> bool:
        return row.get("kind") == "inr" and row.get("image") in images \
            and (only is None or row["codec"] in only)

    cache = args.results / "cache"
    carried = 0
    results = args.results / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    kept = []
    for row in rows:
        if wanted(row) and row["fingerprint"] == args.old:
            if row["codec"] in stale:
                continue
            row = renamed(row)
            row["key"], row["fingerprint"] = job(row, new).key, new
            carried += 1
        kept.append(row)
    rows = kept
    if rows:
        write_rows(rows, args.results)
    # The cache too (a narrower run's results.json lacks the rows of the runs before it): an
    # entry is of the old fingerprint when its row's job under that fingerprint has its key.
    entries = 0
    for path in sorted(cache.glob("*.json")) if cache.is_dir() else []:
        row = json.loads(path.read_text())
        if not wanted(row) or job(row, args.old).key != path.stem or row["codec"] in stale:
            continue
        row = renamed(row)
        key = job(row, new).key
        (cache / f"{key}.json").write_text(json.dumps({**row, **(
            {"key": key, "fingerprint": new} if "key" in row else {})}))
        if path.with_suffix(".inr").exists():  # the same bytes: the report's crops show them
            shutil.copyfile(path.with_suffix(".inr"), cache / f"{key}.inr")
        entries += 1
    print(f"{carried} of {len(rows)} rows and {entries} cache entries carried from {args.old} "
          f"to {new}")


if __name__ == "__main__":
    main()

"""Batches of files: which files, where their outputs go, what is already done, where they run.

A batch is a list of :class:`Item` (a source, its output, and its place in the corpus), made by
:func:`gather` and :func:`plan` from what a user has: files named one by one, folders (walked
recursively, filtered by glob patterns) and file lists. The output tree mirrors the input:

- a folder's files go to ``OUTDIR/<path inside the folder>`` (``photos/2024/a.png`` given as
  ``photos`` becomes ``OUTDIR/2024/a.inr``);
- a list's entries (``files_from``) keep the path they are given by (relative to the current
  folder), or, when some are absolute, their path from the folder all of them share;
- files named on the command line go to ``OUTDIR/<name>`` (as ``inr encode a.png b.png -o
  OUT/`` always did).

:func:`shard` splits a corpus among independent runs by a hash of each item's place, so any
listing order gives the same split and ``i/N`` for i in 0..N-1 cover it exactly once.

The **manifest** (:class:`Manifest`, JSON lines, one record per file done or failed) is the
memory of a batch: written by the process that runs the batch as each result arrives, one
``write`` of a whole line in append mode and an fsync, so a killed run leaves every finished
record (a torn last line is ignored on reading). With ``skip_existing`` an item is skipped when
its last record is a success with the same source hash and options, and its output is still
there with the hash recorded; anything else (stale, partial, missing, failed) is redone. Outputs
themselves are written atomically (``imageio.write_atomic``): a killed encode leaves no output,
at most a hidden ``.NAME.*.tmp`` beside it.

The work of one file (:func:`encode_file`, :func:`decode_file`) runs wherever
``parallel.run_unordered`` sends it: a local pool, or a Dask cluster whose workers reach the same
paths (shared storage; docs/scale-out.md). A file's own failure is its result (reported once,
never retried); a file whose worker died is rescheduled by the pool or cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import InrError, InrInputError

#: The files a folder contributes by default: the image formats ``imageio`` reads.
IMAGE_GLOBS = ("*.png", "*.jpg", "*.jpeg", "*.ppm", "*.pgm", "*.pnm", "*.bmp", "*.tif",
               "*.tiff", "*.webp", "*.gif")
INR_GLOBS = ("*.inr",)
#: A batch's manifest when none is named: in the output folder.
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class Item:
    source: str
    target: str
    #: The output's path inside the output folder: the item's name in the corpus.
    place: str


@dataclass
class FileResult:
    source: str
    target: str
    ok: bool
    facts: dict = field(default_factory=dict)
    error: str = ""


# -- which files --------------------------------------------------------------------------

def read_list(text: str) -> list[str]:
    """The entries of a file list: one path per line; blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _matches(path: Path, globs: Iterable[str]) -> bool:
    name = path.name.lower()
    return any(Path(name).match(g.lower()) for g in globs)


def _walk(folder: Path, globs: tuple[str, ...], skip: Path | None) -> Iterator[Path]:
    """The files under ``folder`` that match, in sorted order; hidden files and folders (a
    write's temporary files among them) and the folder ``skip`` (the outputs) left out."""
    for root, dirs, names in os.walk(folder, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or (here / d).resolve() != skip))
        for name in sorted(names):
            path = here / name
            if not name.startswith(".") and _matches(path, globs) and path.is_file():
                yield path


def gather(inputs: list[str], files_from: list[str] | None = None,
           globs: tuple[str, ...] = IMAGE_GLOBS, outdir: str | None = None
           ) -> list[tuple[str, str]]:
    """(source, place without suffix) of every input: files named, folders walked (files
    matching ``globs``), and list entries, in that order. Refuses names that do not exist."""
    skip = Path(outdir).resolve() if outdir else None
    found: list[tuple[str, str]] = []
    for name in inputs:
        if name == "-":
            raise InrInputError("- (stdin) cannot be one of several inputs")
        path = Path(name)
        if path.is_dir():
            files = list(_walk(path, globs, skip))
            if not files:
                raise InrInputError(f"{name}: no file matching {' '.join(globs)} in this folder")
            found += [(str(f), f.relative_to(path).with_suffix("").as_posix()) for f in files]
        elif path.exists():
            found.append((name, path.stem))
        else:
            raise InrInputError(f"{name}: no such file or folder")
    if files_from:
        found += _listed(files_from)
    return found


def _listed(entries: list[str]) -> list[tuple[str, str]]:
    paths = [Path(e) for e in entries]
    for p in paths:
        if not p.is_file():
            raise InrInputError(f"{p} (in the file list): no such file")
    if all(not p.is_absolute() and ".." not in p.parts for p in paths):
        return [(str(p), p.with_suffix("").as_posix()) for p in paths]
    full = [p.resolve() for p in paths]
    base = Path(os.path.commonpath([p.parent for p in full]))
    return [(str(p), f.relative_to(base).with_suffix("").as_posix())
            for p, f in zip(paths, full)]


def plan(found: list[tuple[str, str]], outdir: str, suffix: str) -> list[Item]:
    """An :class:`Item` for each (source, place): ``OUTDIR/<place><suffix>``. Refuses two
    inputs with one output and an output that is an input."""
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise InrInputError(f"{outdir} is not a folder; several inputs need an output folder")
    items, seen = [], {}
    for source, place in found:
        place = place + suffix
        target = out / place
        if place in seen:
            raise InrInputError(f"{source} and {seen[place]} would both be written to {target}")
        seen[place] = source
        if target.exists() and target.samefile(source):
            raise InrInputError(f"refusing to overwrite the input {source}")
        _check_no_linked_folder(out, target)
        items.append(Item(source, str(target), place))
    return items


def _check_no_linked_folder(out: Path, target: Path) -> None:
    """Refuse an output whose folder inside ``out`` is a symbolic link: its file would land
    wherever the link leads. (An output that is itself a link is replaced by the new file,
    which ``imageio.write_atomic`` renames over it, never written through.)"""
    for folder in list(target.relative_to(out).parents)[:-1]:
        if (out / folder).is_symlink():
            raise InrInputError(f"{out / folder} is a symbolic link; a batch writes only inside "
                                "its output folder, never through links")


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` (0 <= i < N) as (i, N)."""
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise InrInputError(f"a shard is i/N with 0 <= i < N, not {text!r}")
    return int(index), int(count)


def shard_of(place: str, count: int) -> int:
    """The shard (of ``count``) that an item belongs to: a hash of its place in the corpus."""
    digest = hashlib.sha256(place.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    return [item for item in items if shard_of(item.place, count) == index]


# -- what is done -------------------------------------------------------------------------

def digest_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def options_record(options: Any) -> dict:
    """What decides an output besides its source, as JSON values (compared by equality)."""
    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    return json.loads(json.dumps(options, sort_keys=True, default=str))


class Manifest:
    """A batch's JSON-lines record of every file done (see the module docstring).

    The default manifest, in the output folder, is never read or written through a symbolic
    link (``follow_links=False``: a link there is refused, and the appends open it with
    O_NOFOLLOW); one the user names (``--manifest PATH``) is written where the path leads."""

    def __init__(self, path: str | os.PathLike, follow_links: bool = True):
        self.path = Path(path)
        self.follow_links = follow_links

    def records(self) -> dict[str, dict]:
        """The last record of each output, by its place in the output folder."""
        out: dict[str, dict] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line torn by a kill
                continue
            if isinstance(record, dict) and isinstance(record.get("place"), str):
                out[record["place"]] = record
        return out

    def check_writable(self) -> None:
        from .imageio import check_writable
        if not self.follow_links and self.path.is_symlink():
            raise InrInputError(f"{self.path} is a symbolic link; a batch does not write through "
                                "links in its output folder: remove it, or name the manifest "
                                "with --manifest")
        check_writable(self.path)

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        if not self.follow_links:
            flags |= os.O_NOFOLLOW  # a link made since the batch started is not followed either
        fd = os.open(self.path, flags, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def is_done(item: Item, record: dict | None, options: dict) -> bool:
    """Whether ``record`` (the manifest's last for this output) says the output on disk is
    this source encoded with these options."""
    if not record or not record.get("ok") or record.get("options") != options:
        return False
    target = Path(item.target)
    try:
        return (record.get("source_sha256") == digest_file(item.source)
                and target.is_file() and record.get("output_sha256") == digest_file(target))
    except OSError:
        return False


def pending(items: list[Item], manifest: Manifest, options: dict) -> list[Item]:
    """The items whose output is not already done (:func:`is_done`)."""
    records = manifest.records()
    return [item for item in items if not is_done(item, records.get(item.place), options)]


# -- the work of one file -----------------------------------------------------------------

def encode_file(source: str, target: str, options) -> dict:
    from . import __version__
    from .encoder import compress
    from .imageio import load_image, read_binary, write_atomic
    from .limits import image_file_limit
    data = read_binary(source, "an image", image_file_limit(options.max_pixels))
    result = compress(load_image(data, source, options.max_pixels), options)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, result.data)
    return {**result.as_dict(), "source_sha256": hashlib.sha256(data).hexdigest(),
            "output_sha256": hashlib.sha256(result.data).hexdigest(), "version": __version__}


def decode_file(source: str, target: str, scale=None, size=None, device="cpu",
                max_pixels=None, max_work=None) -> dict:
    from .decoder import decode, read_inr
    from .imageio import image_bytes, image_format, write_atomic
    start = time.perf_counter()
    data = read_inr(source)
    pixels = decode(data, scale=scale, size=size, device=device, max_pixels=max_pixels,
                    max_work=max_work)
    out = image_bytes(pixels, image_format(target))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, out)
    h, w = pixels.shape[:2]
    return {"width": w, "height": h, "seconds": time.perf_counter() - start,
            "bytes": len(out), "source_sha256": hashlib.sha256(data).hexdigest(),
            "output_sha256": hashlib.sha256(out).hexdigest()}


def _guard(work: Callable[..., dict], source: str, target: str, options: dict) -> FileResult:
    """``work`` on one file, its failure as a result: a bad file must not stop the batch."""
    start = time.perf_counter()
    try:
        facts = work(source, target, **options)
    except (InrError, OSError) as exc:
        message = str(exc) if isinstance(exc, InrError) else (exc.strerror or str(exc))
        return FileResult(source, target, False, error=message)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return FileResult(source, target, False, error=f"unexpected {type(exc).__name__}: {exc}")
    facts.setdefault("seconds", time.perf_counter() - start)
    return FileResult(source, target, True, facts)


def _lost(call: tuple, error: Exception) -> FileResult:
    _, source, target, _ = call
    return FileResult(source, target, False, error=str(error))


def run(work: Callable[..., dict], items: list[Item], options: dict, *, jobs: int = 1,
        scheduler: str | None = None, manifest: Manifest | None = None,
        recorded: dict | None = None,
        on_result: Callable[[FileResult], None] | None = None) -> list[FileResult]:
    """Every item through ``work(source, target, **options)`` (:func:`encode_file`,
    :func:`decode_file`), on ``jobs`` local processes or the Dask ``scheduler``; each result
    goes to the ``manifest`` (with ``recorded``, the options as :func:`options_record` gives
    them) and to ``on_result`` as it arrives. The results in the order of ``items``."""
    from .parallel import run_unordered
    # A cluster's workers have their own working folder: they get absolute paths.
    where = os.path.abspath if scheduler else str
    results: list[FileResult | None] = [None] * len(items)
    calls = [(work, where(item.source), where(item.target), options) for item in items]
    for i, result in run_unordered(_guard, calls, jobs, scheduler=scheduler, lost=_lost):
        item = items[i]
        result = dataclasses.replace(result, source=item.source, target=item.target)
        results[i] = result
        if manifest is not None:
            manifest.append({"source": item.source, "output": item.target,
                             "place": item.place, "ok": result.ok, "error": result.error,
                             "options": recorded or {}, **result.facts})
        if on_result:
            on_result(result)
    return results


def prepare(inputs: list[str], outdir: str, suffix: str, *, files_from: list[str] | None = None,
            globs: tuple[str, ...] = IMAGE_GLOBS, shard_spec: str | None = None,
            manifest: str | None = None, skip_existing: bool = False,
            recorded: dict | None = None) -> tuple[list[Item], int, Manifest]:
    """The items a batch has to run (its shard, less what is done when ``skip_existing``),
    how many were skipped as done, and its manifest (``OUTDIR/manifest.jsonl`` unless named).
    Everything is checked here, before any work: the inputs exist, outputs do not clash or
    overwrite an input, the output folder and the manifest can be written."""
    from .imageio import check_writable
    spec = parse_shard(shard_spec) if shard_spec else None
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise InrInputError(f"{outdir} is not a folder; several inputs need an output folder")
    items = plan(gather(inputs, files_from, globs, outdir), outdir, suffix)
    if not items:
        raise InrInputError("no input files")
    if spec:
        items = shard(items, *spec)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / ".inr-write-check")
    book = Manifest(manifest, follow_links=True) if manifest \
        else Manifest(out / MANIFEST_NAME, follow_links=False)
    book.check_writable()
    todo = pending(items, book, recorded or {}) if skip_existing else items
    return todo, len(items) - len(todo), book

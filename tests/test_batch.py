"""Batches: folders and lists, shards, the manifest and --skip-existing, and a real Dask
LocalCluster on the loopback interface (same bytes as the local pool; a worker killed mid-run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import inrcodec
from inrcodec import batch
from inrcodec.errors import InrInputError
from inrcodec.options import EncodeOptions
from inrcodec_cli.main import app

from .helpers import crop

#: Small, quick encodes (a second or two each here).
ENCODE = ["--bpp", "2", "--effort", "fast", "--steps", "150", "-q"]
OPTIONS = EncodeOptions.from_settings({"bpp": 2, "effort": "fast", "steps": 150})
NAMES = ["a", "b", "sub/c", "sub/deeper/d", "sub/e", "f"]


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six small images in a nested folder (and things a walk must leave out)."""
    root = tmp_path_factory.mktemp("corpus") / "photos"
    base = crop(24, 32)
    for i, name in enumerate(NAMES):
        path = root / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, 3 * i, axis=1)).save(path)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes((root / "a.png").read_bytes())
    return root


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*.inr"))}


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- which files, where they go -----------------------------------------------------------

def test_a_folder_is_walked_and_mirrored(corpus, tmp_path):
    items = batch.plan(batch.gather([str(corpus)]), str(tmp_path / "out"), ".inr")
    assert sorted(i.place for i in items) == sorted(f"{n}.inr" for n in NAMES)
    assert all(Path(i.target) == tmp_path / "out" / i.place for i in items)
    only = batch.gather([str(corpus)], globs=("c.*", "d.png"))
    assert [place for _, place in only] == ["sub/c", "sub/deeper/d"]


def test_the_output_folder_inside_the_input_is_not_walked(corpus, tmp_path):
    out = corpus / "encoded"
    out.mkdir()
    (out / "x.png").write_bytes((corpus / "a.png").read_bytes())
    try:
        found = batch.gather([str(corpus)], outdir=str(out))
        assert all("encoded" not in place for _, place in found)
    finally:
        (out / "x.png").unlink()
        out.rmdir()


def test_a_file_list_keeps_its_paths(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    relative = batch.gather([], files_from=["photos/a.png", "photos/sub/c.png"])
    assert [p for _, p in relative] == ["photos/a", "photos/sub/c"]
    absolute = batch.gather([], files_from=[str(corpus / "a.png"), str(corpus / "sub/c.png")])
    assert [p for _, p in absolute] == ["a", "sub/c"]
    assert batch.read_list("# a list\nx.png\n\n  y.png \n") == ["x.png", "y.png"]
    with pytest.raises(InrInputError, match="no such file"):
        batch.gather([], files_from=["photos/missing.png"])


def test_clashes_and_overwrites_are_refused(corpus, tmp_path):
    twin = tmp_path / "a.png"
    twin.write_bytes((corpus / "a.png").read_bytes())
    with pytest.raises(InrInputError, match="both be written"):
        batch.plan(batch.gather([str(corpus / "a.png"), str(twin)]), str(tmp_path / "o"), ".inr")
    with pytest.raises(InrInputError, match="overwrite the input"):
        batch.plan([(str(twin), "a")], str(tmp_path), ".png")


def test_shards_cover_the_corpus_exactly_once():
    items = [batch.Item(f"s{i}", f"t{i}", f"dir{i % 7}/img{i}.inr") for i in range(500)]
    for count in (1, 2, 3, 8):
        parts = [batch.shard(items, i, count) for i in range(count)]
        assert sorted(p.place for part in parts for p in part) == sorted(i.place for i in items)
        assert all(len(part) > 500 / count / 2 for part in parts)  # not lopsided
    # the split depends on the item alone, not on the listing order
    assert batch.shard(items[::-1], 1, 3) == batch.shard(items, 1, 3)[::-1]
    for bad in ("2/2", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(InrInputError, match="i/N"):
            batch.parse_shard(bad)


# -- the manifest -------------------------------------------------------------------------

def test_the_manifest_skips_torn_lines_and_keeps_the_last_record(tmp_path):
    book = batch.Manifest(tmp_path / "m.jsonl")
    book.append({"place": "a.inr", "output": "o/a.inr", "ok": False})
    book.append({"place": "a.inr", "output": "o/a.inr", "ok": True})
    with open(book.path, "ab") as f:
        f.write(b'{"place": "b.inr", "ok": tr')  # a writer killed mid-line
    assert book.records() == {"a.inr": {"place": "a.inr", "output": "o/a.inr", "ok": True}}


def test_only_an_intact_output_of_the_same_source_and_options_is_done(corpus, tmp_path):
    out = tmp_path / "out"
    items, skipped, book = batch.prepare([str(corpus / "a.png")], str(out), ".inr",
                                         recorded=batch.options_record(OPTIONS))
    assert skipped == 0 and book.path == out / "manifest.jsonl"
    batch.run(batch.encode_file, items, {"options": OPTIONS}, manifest=book,
              recorded=batch.options_record(OPTIONS))
    item, record = items[0], book.records()["a.inr"]
    assert batch.is_done(item, record, batch.options_record(OPTIONS))
    assert not batch.is_done(item, record, batch.options_record(OPTIONS.replace(seed=1)))
    source = tmp_path / "a.png"
    source.write_bytes((corpus / "b.png").read_bytes())
    assert not batch.is_done(batch.Item(str(source), item.target, item.place), record,
                             record["options"])
    Path(item.target).write_bytes(Path(item.target).read_bytes()[:-1])  # damaged since
    assert not batch.is_done(item, record, record["options"])
    Path(item.target).unlink()
    assert not batch.is_done(item, record, record["options"])


def test_a_killed_batch_is_finished_by_skip_existing(corpus, tmp_path):
    """The real thing: a batch in its own process, SIGKILLed after two files; the rerun redoes
    only the files without a record, and every output decodes."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inrcodec_cli", "encode", str(corpus), "-o", f"{out}/",
               *ENCODE]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    done_before = {r["place"]: r for r in manifest_lines(manifest)}
    assert 2 <= len(done_before) < len(NAMES)
    before = outputs(out)
    # Every record has its output; an output without a record (killed between the rename and
    # the record) can only be complete: nothing partial is ever in place.
    assert set(done_before) <= set(before)
    for data in before.values():
        assert inrcodec.decode(data).shape == (24, 32, 3)

    rerun = subprocess.run(command + ["--skip-existing"], env=env, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()
    records = manifest_lines(manifest)
    redone = [r["place"] for r in records[len(done_before):]]
    assert sorted(redone) == sorted(set(f"{n}.inr" for n in NAMES) - set(done_before))
    after = outputs(out)
    assert all(after[place] == data for place, data in before.items())
    for place, data in after.items():
        assert inrcodec.decode(data).shape == (24, 32, 3), place


def test_shards_of_a_run_encode_each_file_once(corpus, tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        result = invoke("encode", corpus, "-o", f"{out}/", "--shard", f"{i}/2", "--manifest",
                        tmp_path / f"shard{i}.jsonl", *ENCODE)
        assert result.exit_code == 0, result.output
    places = [r["place"] for i in range(2) for r in manifest_lines(tmp_path / f"shard{i}.jsonl")]
    assert sorted(places) == sorted(f"{n}.inr" for n in NAMES)
    assert set(outputs(out)) == set(places)


def test_a_list_on_stdin_mirrors_its_paths(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    result = invoke("encode", "--files-from", "-", "-o", tmp_path / "out", *ENCODE,
                    input="# two of them\nphotos/sub/c.png\nphotos/a.png\n")
    assert result.exit_code == 0, result.output
    assert set(outputs(tmp_path / "out")) == {"photos/sub/c.inr", "photos/a.inr"}


def test_batch_flags_are_refused_for_one_file(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("inrcodec.parallel.CONNECT_TIMEOUT_S", 1)
    result = invoke("encode", corpus / "a.png", "-o", tmp_path / "a.inr", "--shard", "0/2")
    assert result.exit_code == 1 and "apply to batches" in result.stderr
    result = invoke("encode", corpus, "-o", f"{tmp_path}/o/", "--cluster", "remote")
    assert result.exit_code == 1 and "local:N" in result.stderr
    result = invoke("encode", corpus, "-o", f"{tmp_path}/o/", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the Dask scheduler" in result.stderr


# -- on a Dask cluster --------------------------------------------------------------------

def test_a_local_cluster_gives_the_bytes_of_the_local_pool(corpus, tmp_path):
    """The same files as two local processes; a broken input is reported once, not retried."""
    pool, cluster = tmp_path / "pool", tmp_path / "cluster"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = invoke("encode", corpus, broken, "-o", f"{pool}/", "--jobs", "2", *ENCODE)
    assert result.exit_code == 1 and "1 of 7 files failed" in result.stderr
    result = invoke("encode", corpus, broken, "-o", f"{cluster}/", "--cluster", "local:2",
                    *ENCODE)
    assert result.exit_code == 1 and "1 of 7 files failed" in result.stderr
    assert outputs(pool) == outputs(cluster) and len(outputs(pool)) == len(NAMES)
    records = manifest_lines(cluster / "manifest.jsonl")
    assert len(records) == len(NAMES) + 1
    assert all(r["ok"] and r["output_sha256"] for r in records if r["place"] != "broken.inr")
    [failed] = [r for r in records if r["place"] == "broken.inr"]
    assert not failed["ok"] and "not an image" in failed["error"]


def test_a_worker_killed_mid_run_loses_no_file(corpus, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        killed = []

        def kill_a_busy_worker(result) -> None:
            if killed:
                return
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        out = tmp_path / "out"
        items, _, book = batch.prepare([str(corpus)], str(out), ".inr")
        results = batch.run(batch.encode_file, items, {"options": OPTIONS},
                            scheduler=cluster.scheduler_address, manifest=book,
                            on_result=kill_a_busy_worker)
    assert killed, "no worker was busy to be killed"
    assert all(r.ok for r in results), [r.error for r in results]
    files = outputs(out)
    assert set(files) == {f"{n}.inr" for n in NAMES}
    for data in files.values():
        assert inrcodec.decode(data).shape == (24, 32, 3)
    assert len(book.records()) == len(NAMES)


def test_ctrl_c_on_a_local_cluster_stops_at_once_and_leaves_no_file(corpus, tmp_path):
    """Ctrl-C to the whole process group (as a terminal sends it) while the workers encode: the
    futures are cancelled, the cluster closed, and no output appears, then or later."""
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "inrcodec_cli", "encode", str(corpus), "-o", f"{out}/",
         "--cluster", "local:2", "--bpp", "2", "--effort", "fast", "--steps", "20000", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not out.exists():  # the batch has planned its outputs
        time.sleep(0.1)
    time.sleep(8)  # the cluster has started and its workers their first encodes
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and b"interrupted" in err, err.decode()
    time.sleep(3)  # long enough for a worker that went on to write something
    assert list(out.rglob("*")) == []
    import psutil  # Dask's own dependency
    survivors = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == run.pid:
                survivors.append(process.cmdline())
        except (OSError, psutil.Error):
            pass
    assert not survivors  # no worker, nanny or scheduler is left to write anything later

"""Files under concurrent writers: assembly, media materialisation, journals, stale temporary files."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd

from corpus.manifest import Sample
from flows.config import load_config
from flows.shards import Journal, read_shard
from media.files import HOST, remove_stale_temp, temp_path
from media.store import MediaStore

CONFIG = ("vision_teacher: {model: v, base_url: http://127.0.0.1:9/v1}\n"
          "audio_teacher: {model: a, base_url: http://127.0.0.1:9/v1}\n"
          "merger: {model: m, base_url: http://127.0.0.1:9/v1}\nmedia: {max_side: 160}\n")


def _rows(n: int, tag: str) -> list[dict]:
    return [{"id": f"s{i}", "split": "train", "status": "kept" if i % 3 else "rejected", "stage": "filter",
             "reason": "", "question": f"{tag} {i}", "choices": ["a", "b"], "answer": "A"} for i in range(n)]


def _assemble_many(outdir: str, tag: str, times: int, errors) -> None:
    from corpus.store import assemble

    try:
        for _ in range(times):
            assemble(Path(outdir), _rows(30, tag))
    except Exception as err:  # reported to the parent
        errors.put(f"{type(err).__name__}: {err}")


def test_concurrent_assembly_of_one_out(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    workers = [ctx.Process(target=_assemble_many, args=(str(tmp_path), f"p{k}", 15, errors)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    assert errors.empty(), errors.get()
    corpus = pd.read_parquet(tmp_path / "corpus" / "train.parquet")
    assert sorted(corpus["id"]) == sorted(f"s{i}" for i in range(30) if i % 3)
    assert len(set(corpus["question"].str.split().str[0])) == 1  # one writer's whole file, not a mix
    assert not [p for p in tmp_path.rglob("*.tmp")]


def _materialise_many(config_path: str, outdir: str, cache_dir: str, video: str, n: int, errors) -> None:
    cfg = load_config(config_path)
    store = MediaStore(Path(cache_dir), Path(outdir), cfg.media)

    def one(i: int) -> None:
        sample = Sample(id=f"s{i}", question="Q", choices=["a", "b"], answer="A", video=video)
        try:
            media, _ = store.get(sample.video)
            for rel in [*media["frames"], media["audio"]]:
                if (Path(outdir) / rel).stat().st_size == 0:
                    errors.put(f"empty file handed out: {rel}")
        except Exception as err:
            errors.put(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_materialisation_of_one_clip_by_many_samples(synthetic_data, tmp_path):
    video = str(synthetic_data / json.loads((synthetic_data / "manifest.jsonl").read_text().splitlines()[0])["video"])
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    # Three processes, two of them writing into the same output, all sharing one cache elsewhere.
    outs = [tmp_path / "out_a", tmp_path / "out_a", tmp_path / "out_b"]
    workers = [ctx.Process(target=_materialise_many, args=(str(config), str(out), str(tmp_path / "cache"), video, 8, errors))
               for out in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
    assert [w.exitcode for w in workers] == [0] * 3
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert len(list((tmp_path / "cache" / "media").glob("*/*"))) == 1  # one published folder
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_journal_drops_a_torn_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "shard.jsonl"
    journal = Journal(path)
    journal.append({"id": "a", "status": "kept"})
    journal.close()
    with open(path, "a") as handle:
        handle.write('{"id": "b", "sta')  # a kill in the middle of a line
    journal = Journal(path)
    journal.append({"id": "c", "status": "rejected", "reason": "vision teacher wrong"})
    journal.close()
    assert [r["id"] for r in read_shard(path)] == ["a", "c"]


def test_rows_of_older_versions_that_froze_an_outage_are_redone(tmp_path):
    path = tmp_path / "shard.jsonl"
    rows = [{"id": "a", "status": "rejected", "reason": "vision teacher call failed: m: gave up after 5 attempts (timed out)"},
            {"id": "b", "status": "rejected", "reason": "vision teacher call failed: m: HTTP 400"},
            {"id": "c", "status": "kept", "reason": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["id"] for r in read_shard(path)] == ["b", "c"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    folder = tmp_path / "calls" / "ab"
    folder.mkdir(parents=True)
    stale = folder / f".abc.json.{HOST}.{dead_pid}.1.tmp"
    live = temp_path(folder / "abd.json")  # ours: this process is alive
    other_host = folder / f".abe.json.elsewhere.{dead_pid}.1.tmp"
    stale_dir = folder / f".media.{HOST}.{dead_pid}.1.tmp"
    for path in (stale, live, other_host):
        path.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "frame_00.jpg").write_text("x")
    assert remove_stale_temp(tmp_path) == 2
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and other_host.exists()  # a live writer's and another host's (recent) are kept
    os.utime(other_host, (0, 0))
    assert remove_stale_temp(tmp_path) == 1 and not other_host.exists()

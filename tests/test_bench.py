"""The heavy-tailed bench's references (the ideal, a lower bound; the FIFO schedule) and its steady-state measure."""

from __future__ import annotations

import pytest

from bench.pipeline import busy_while_work_remains, fifo_schedule_seconds, ideal_seconds, server_spans

MODELS = {role: f"{role}-t" for role in ("vision", "audio", "merger")}


@pytest.mark.parametrize("in_flight", [1, 4, 32])
def test_the_fifo_schedule_never_beats_the_ideal(in_flight):
    assert fifo_schedule_seconds(300, in_flight, MODELS, 0.6, 0.8, 0) >= ideal_seconds(300, in_flight, MODELS, 0.6, 0.8, 0) - 1e-9


def test_with_a_slot_for_every_sample_the_fifo_schedule_is_the_longest_critical_path():
    n = 50
    assert fifo_schedule_seconds(n, n, MODELS, 0.6, 0.8, 0) == pytest.approx(ideal_seconds(n, 10**6, MODELS, 0.6, 0.8, 0))


def test_with_one_slot_the_merger_waits_for_the_teachers_in_turn():
    # one slot each: the busiest endpoint's sum is a lower bound, and the merger cannot start first
    n = 20
    fifo = fifo_schedule_seconds(n, 1, MODELS, 0.6, 0.8, 0)
    assert fifo > ideal_seconds(n, 1, MODELS, 0.6, 0.8, 0)


def test_busy_share_counts_idle_slots_only_while_work_remains():
    # 2 slots over [0, 4] (the last request starts at 4): slot 1 busy 0-4, slot 2 busy 0-2 then idle;
    # the span running past 4 is the drain and is not counted
    spans = [(0.0, 4.0), (0.0, 2.0), (4.0, 9.0)]
    assert busy_while_work_remains(spans, 2) == pytest.approx(6 / 8)
    # counted from an earlier moment (a command's launch), the start-up is idle time
    assert busy_while_work_remains(spans, 2, since=-4.0) == pytest.approx(6 / 16)
    assert busy_while_work_remains([(0.0, 1.0), (0.0, 1.0)], 2) == 1.0  # everything sent at once


def test_the_stub_server_reports_every_request_span_to_another_process():
    import asyncio

    from teachers.client import ModelClient
    from tests.scripted_server import ScriptedServer

    async def ask(url: str) -> None:
        client = ModelClient(model="timed", base_urls=[url], sampling={}, max_in_flight=4)
        try:
            await asyncio.gather(*(client.chat([{"role": "user", "content": f"Q{i}: ?"}]) for i in range(12)))
        finally:
            await client.close()

    with ScriptedServer(latency=0.05) as server:
        asyncio.run(ask(server.url))
        spans = server_spans(server.url)["timed"]
    assert len(spans) == 12 and all(end - start >= 0.05 for start, end in spans)
    assert 0.0 < busy_while_work_remains(spans, 4) <= 1.0


def test_demo_student_bench_subsets_are_seeded_and_share_the_media(tmp_path):
    import pandas as pd

    from bench.demo_student import write_subset

    corpus = tmp_path / "built"
    (corpus / "corpus").mkdir(parents=True)
    (corpus / "cache" / "media").mkdir(parents=True)
    pd.DataFrame({"id": [f"s{i}" for i in range(12)], "answer": list("ABCD") * 3}).to_parquet(
        corpus / "corpus" / "train.parquet")
    answers = write_subset(corpus, 5, seed=1, out=tmp_path / "one")
    again = write_subset(corpus, 5, seed=1, out=tmp_path / "again")
    write_subset(corpus, 5, seed=2, out=tmp_path / "other")
    ids = {name: list(pd.read_parquet(tmp_path / name / "corpus" / "train.parquet")["id"])
           for name in ("one", "again", "other")}
    assert sum(answers.values()) == 5 and answers == again
    assert ids["one"] == ids["again"] != ids["other"]
    assert (tmp_path / "one" / "cache" / "media").is_dir()  # the subset reads the built corpus's media
    write_subset(corpus, 50, seed=1, out=tmp_path / "all")  # larger than the corpus: every row
    assert len(pd.read_parquet(tmp_path / "all" / "corpus" / "train.parquet")) == 12


def test_demo_student_bench_refuses_a_folder_without_a_corpus(tmp_path):
    from bench.demo_student import write_subset

    with pytest.raises(SystemExit, match="no kept rows under .*build-avrt output folder"):
        write_subset(tmp_path, 5, seed=1, out=tmp_path / "subset")

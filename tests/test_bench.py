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


def test_demo_student_bench_tells_which_property_a_chosen_option_got_right(tmp_path):
    import json

    from bench.demo_student import property_hits
    from evaluation.evaluate import PREDICTIONS

    # gold D is blue + high: D both right, C (blue + low) the colour only, B (red + high) the pitch
    # only, A neither; a row with no letter counts for neither
    rows = [{"modality": "av", "gold": "D", "letter": letter} for letter in "DCBA"] + \
           [{"modality": "av", "gold": "D", "letter": None}, {"modality": "a", "gold": "A", "letter": "B"}]
    (tmp_path / PREDICTIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert property_hits(tmp_path) == {"a": {"colour": 1.0, "pitch": 0.0}, "av": {"colour": 0.4, "pitch": 0.4}}


def test_demo_student_bench_finds_when_the_sft_batches_became_perfect(tmp_path):
    import json

    from bench.demo_student import first_perfect_step

    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": 20, "mean_token_accuracy": 0.97}, {"step": 40, "loss": 0.1}, {"step": 60, "mean_token_accuracy": 1.0},
            {"step": 80, "mean_token_accuracy": 0.99}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert first_perfect_step(metrics) == 60
    metrics.write_text(json.dumps(rows[0]) + "\n")
    assert first_perfect_step(metrics) is None

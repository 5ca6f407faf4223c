"""The heavy-tailed bench's two references: the ideal (a lower bound) and the FIFO schedule."""

from __future__ import annotations

import pytest

from bench.pipeline import fifo_schedule_seconds, ideal_seconds

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

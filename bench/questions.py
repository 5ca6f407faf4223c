"""Benchmark build-questions against a heavy-tailed stub, as a share of the FIFO bound (as bench/pipeline.py
--heavy does for build-avrt):

    python bench/questions.py [--clips 600] [--in-flight 32] [--seed 0]

Every request's latency is lognormal (median 0.6 s, sigma 0.8), a seeded function of (model, clip): the
captioner's request is keyed by its audio, the writer's and the blind solver's by the mark the stub's
caption carries on (``tests.scripted_server.request_marker``). Each clip is a chain captioner -> writer
-> blind solver. ``fifo_bound`` is a zero-CPU simulation of the flow's own first-come-first-served
policy on those latencies (``bench.pipeline.fifo_dag_seconds``); achieved/fifo_bound is the
implementation's own efficiency. Each endpoint's slots busy while work for it remained to be sent
are reported too: only the captioner's measures the scheduler (the writer and the solver wait for the
stage before them when their queue runs dry, which the FIFO bound counts as well). The clips are distinct 2 s WAVs; their audio is extracted in a warm-up
run (the media cache is shared), so the measured run is the request pipeline.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import yaml  # noqa: E402

from bench.pipeline import busy_while_work_remains, fifo_dag_seconds, server_spans, start_server  # noqa: E402

ROLES = ("captioner", "writer", "solver")
NEEDS = {"captioner": (), "writer": ("captioner",), "solver": ("writer",)}


def write_clips(folder: Path, n: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        soundfile.write(folder / f"clip{i:05d}.wav", (0.1 * rng.standard_normal(32_000)).astype(np.float32), 16_000)
    return folder


def write_config(path: Path, url: str, in_flight: int, suffix: str, cache_dir: Path) -> tuple[Path, dict[str, str]]:
    models = {role: f"{role}-{suffix}" for role in ROLES}

    def ep(role: str) -> dict:
        return {"model": models[role], "base_url": url, "temperature": 0.0, "max_tokens": 64,
                "max_in_flight": in_flight, "timeout_s": 120}

    path.write_text(yaml.safe_dump({"audio_captioner": {**ep("captioner"), "media_only": True, "prompt": ""},
                                    "question_writer": ep("writer"), "blind_solver": ep("solver"),
                                    "cache_dir": str(cache_dir)}))
    return path, models


def clip_markers(out: Path) -> list[str]:
    """Each clip's mark (``media_marker`` of its extracted WAV's base64), in clip order, from a run's journals."""
    from tests.scripted_server import media_marker

    rows = {}
    for journal in (out / "work" / "shards").glob("*.jsonl"):
        for line in journal.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = media_marker(base64.b64encode((out / row["audio"]).read_bytes()).decode())
    return [rows[k] for k in sorted(rows)]


def run(args: argparse.Namespace) -> dict[str, float]:
    from prefect.testing.utilities import prefect_test_harness

    from flows.build_questions import build_questions
    from tests.scripted_server import lognormal_seconds

    median, sigma, seed = 0.6, 0.8, args.seed
    results: dict[str, float] = {"load_average_1min_at_start": os.getloadavg()[0], "clips": args.clips,
                                 "in_flight": args.in_flight}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = write_clips(tmp / "clips", args.clips, seed)
        cache = tmp / "cache"
        process, url = start_server(0.0, (median, sigma, seed))
        try:
            with prefect_test_harness(server_startup_timeout=120):
                warm, _ = write_config(tmp / "warm.yaml", url, 64, "warm", cache)
                build_questions(clips=str(clips), out=str(tmp / "warm"), config=str(warm))  # extracts every clip's audio
                markers = clip_markers(tmp / "warm")
                config, models = write_config(tmp / "run.yaml", url, args.in_flight, "run", cache)
                lat = {role: [lognormal_seconds(median, sigma, seed, models[role], m) for m in markers] for role in ROLES}
                fifo = fifo_dag_seconds(lat, NEEDS, args.in_flight)
                ideal = max(max(sum(v) / args.in_flight for v in lat.values()), max(map(sum, zip(*lat.values()))))
                wall, cpu = time.perf_counter(), time.process_time()
                stats = build_questions(clips=str(clips), out=str(tmp / "run"), config=str(config))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert stats["calls_sent"] == {
                    "audio_captioner": args.clips, "question_writer": args.clips, "blind_solver": args.clips}, stats
                spans = server_spans(url)
                busy = {f"{role}_slots_busy_while_work_remains": busy_while_work_remains(spans[models[role]], args.in_flight)
                        for role in ROLES}
        finally:
            process.terminate()
            process.wait()
    results.update({"ideal_s": ideal, "fifo_bound_s": fifo, "wall_s": wall, "achieved_vs_fifo_bound": fifo / wall,
                    "achieved_vs_ideal": ideal / wall, **busy,
                    "cpu_ms_per_clip": 1000 * cpu / args.clips})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in run(parser.parse_args()).items()}, indent=2))


if __name__ == "__main__":
    main()

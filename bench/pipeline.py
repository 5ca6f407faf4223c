"""Benchmark build-avrt; every figure is a ratio against a baseline measured in this same script.

    python bench/pipeline.py [--samples 128] [--latency 0.2] [--in-flight 16]

1. Throughput: samples/s achieved against a scripted OpenAI-compatible server (separate process)
   with fixed latency, vs the ideal ``in_flight / latency`` (each endpoint has ``in_flight`` slots,
   each call holds one for ``latency`` seconds). Media are cached beforehand so this measures the
   request pipeline, not decoding.
2. Pipeline CPU ms per sample in the flow's process (server excluded), for that same run.
3. Media extraction (decord seek to 8 frames + ffmpeg audio window) vs a decode-all baseline
   (ffmpeg decodes every frame, 8 are kept) on 10 s 640x360 H.264 clips.
4. An unchanged re-run vs the first run (every call and extraction a cache hit).

    python bench/pipeline.py --heavy [--samples 1200] [--in-flight 32 128] [--seed 0]

Heavy-tailed mode: every request's latency is lognormal (median 0.6 s, sigma 0.8), a seeded
function of (model, question), so the ideal is known: ``ideal time = max(busiest endpoint's summed
latency / in_flight, the longest sample's critical path max(vision, audio) + merger)``.

Reports, from one run:

* **Steady state** (in process: Prefect server up, media cached), at each ``--in-flight`` with
  default sharding: the share of each teacher endpoint's slots that were busy while work for it
  remained to be sent (from its first request to its last, as the stub server saw them). That is
  the endpoint's steady-state throughput as a fraction of the ideal ``in_flight / mean latency``;
  the lower of the two teachers is reported. The drain after the last request is sent is excluded:
  which requests end last is the heavy tail's doing, not the scheduler's.
* **Makespan**: the whole run's wall time against the ideal time above and against ``fifo_bound``, a
  zero-CPU simulation of the pipeline's own first-come-first-served policy on the same latencies.
  The ideal needs to know which requests will be slow (a longest-first order); the FIFO bound is
  what a scheduler without that knowledge reaches, and achieved/fifo_bound is the implementation's
  own efficiency.
* **CPU** ms per sample of the flow's process (server excluded) beyond start-up (a 1,200-sample run
  minus a 100-sample run), and of the stub server apart (it competes for the same cores). Where
  it goes: the official client alone (CPU ms per request) and the flow with every call answered
  at once, without HTTP.
* **Fixed cost of a cached run** of 4 samples through the CLI: the first run with a new
  ``PREFECT_HOME`` (Prefect creates its database, once per machine), the same command again
  (``--out`` up to date) and into a new ``--out`` (the flow runs on cached calls); ``--help``.
* **Through the CLI** (``python -m flows.build_avrt``), start-up included: the teacher slots' busy
  share from the moment the command is launched to the last request, the seconds to the first
  request and after the last answer, and the makespan ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = ("vision", "audio")  # the endpoints whose busy share is reported
SHORT = 100  # samples of the short run that measures a run's fixed CPU cost (--heavy)
sys.path.insert(0, str(ROOT))

import ffmpeg  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from media import MediaSettings, extract_audio, extract_frames, probe  # noqa: E402
from media.synthetic import ClipSpec, write_clip  # noqa: E402


def start_server(latency: float, lognormal: tuple[float, float, int] | None = None) -> tuple[subprocess.Popen, str]:
    extra = ["--lognormal", str(lognormal[0]), str(lognormal[1]), "--seed", str(lognormal[2])] if lognormal else []
    process = subprocess.Popen([sys.executable, "-m", "tests.scripted_server", "--latency", str(latency), *extra],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_manifest(clips: list[Path], n: int, path: Path) -> Path:
    rows = [{"id": f"s{i}", "video": str(clips[i % len(clips)]), "question": f"Q{i}: what happens?",
             "choices": ["a", "b", "c", "d"], "answer": "A"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path: Path, url: str, in_flight: int, suffix: str, shard_size: int) -> Path:
    def ep(role: str, prompt: str) -> dict:
        return {"model": f"{role}-{suffix}", "base_url": url, "prompt": prompt, "temperature": 0.0,
                "max_tokens": 64, "max_in_flight": in_flight, "timeout_s": 60}

    path.write_text(yaml.safe_dump({"vision_teacher": ep("vision", "vision_teacher"), "audio_teacher": ep("audio", "audio_teacher"),
                                    "merger": ep("merger", "merger"), "filter": "all", "shard_size": shard_size,
                                    "max_concurrent_shards": 2, "media": {"max_side": 320}}))
    return path


def timed_run(manifest: Path, out: Path, config: Path) -> tuple[float, float]:
    from flows.build_avrt import build_avrt

    wall, cpu = time.perf_counter(), time.process_time()
    build_avrt(manifest=str(manifest), out=str(out), config=str(config))
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_all_baseline(path: Path, settings: MediaSettings) -> np.ndarray:
    info = probe(path)
    w, h = info["width"], info["height"]
    out, _ = ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24").run(capture_stdout=True, quiet=True)
    frames = np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)
    idx = [int((i + 0.5) * len(frames) / settings.num_frames) for i in range(settings.num_frames)]
    extract_audio(path, settings, info)
    return frames[idx]


def ideal_seconds(n: int, in_flight: int, models: dict[str, str], median: float, sigma: float, seed: int) -> float:
    """``max(busiest endpoint's summed latency / in_flight, longest critical path)`` for samples Q0..Q{n-1}."""
    from tests.scripted_server import lognormal_seconds

    lat = {role: [lognormal_seconds(median, sigma, seed, model, str(i)) for i in range(n)] for role, model in models.items()}
    busiest = max(sum(values) for values in lat.values()) / in_flight
    critical = max(max(v, a) + m for v, a, m in zip(lat["vision"], lat["audio"], lat["merger"]))
    return max(busiest, critical)


def fifo_schedule_seconds(n: int, in_flight: int, models: dict[str, str], median: float, sigma: float, seed: int) -> float:
    """The makespan of build-avrt's own policy at zero CPU cost (``fifo_dag_seconds``): both teachers
    queued at once in manifest order, a sample's merger call queued the moment its second teacher answers.

    No scheduler that does not know latencies in advance can be expected to beat this; the gap to
    ``ideal_seconds`` is the heavy tail itself (requests sent late that take long), the gap to it is
    the implementation's overhead."""
    from tests.scripted_server import lognormal_seconds

    lat = {role: [lognormal_seconds(median, sigma, seed, model, str(i)) for i in range(n)] for role, model in models.items()}
    return fifo_dag_seconds(lat, {"vision": (), "audio": (), "merger": ("vision", "audio")}, in_flight)


def fifo_dag_seconds(lat: dict[str, list[float]], needs: dict[str, tuple[str, ...]], in_flight: int) -> float:
    """A discrete-event simulation of a flow's first-come-first-served policy: every endpoint (``lat``'s
    roles: item i's call takes ``lat[role][i]`` s) serves its FIFO queue with ``in_flight`` slots; the
    roles that need none are queued at once in item order, another the moment its ``needs`` answered."""
    import heapq
    from collections import deque

    n = len(next(iter(lat.values())))
    queue = {role: deque(range(n) if not needs[role] else ()) for role in lat}
    free = dict.fromkeys(lat, in_flight)
    answered: dict[tuple[str, int], int] = {}
    events: list[tuple[float, str, int]] = []
    now = end = 0.0
    while True:
        for role in lat:
            while free[role] and queue[role]:
                i = queue[role].popleft()
                free[role] -= 1
                heapq.heappush(events, (now + lat[role][i], role, i))
        if not events:
            return end
        now, role, i = heapq.heappop(events)
        free[role] += 1
        end = max(end, now)
        for later, wanted in needs.items():
            if role in wanted:
                answered[later, i] = answered.get((later, i), 0) + 1
                if answered[later, i] == len(wanted):
                    queue[later].append(i)


def server_spans(url: str) -> dict[str, list[tuple[float, float]]]:
    """Every request's (start, end) per model as the stub server saw them (``time.monotonic``, one
    clock for every process of the machine)."""
    import httpx

    spans: dict[str, list[tuple[float, float]]] = {}
    for model, start, end in httpx.get(url + "/_spans", timeout=60).json()["spans"]:
        spans.setdefault(model, []).append((start, end))
    return spans


def busy_while_work_remains(spans: list[tuple[float, float]], slots: int, since: float | None = None) -> float:
    """The share of an endpoint's ``slots`` busy from ``since`` (default: its first request) until
    its last request started, i.e. while work for it remained to be sent. Completions in that window
    are busy time / mean latency, so this is the steady-state throughput over the ideal
    ``slots / mean latency``; 1.0 means no slot idled while work remained."""
    first = min(start for start, _ in spans) if since is None else since
    last = max(start for start, _ in spans)
    if last <= first:
        return 1.0
    busy = sum(max(0.0, min(end, last) - max(start, first)) for start, end in spans)
    return busy / (slots * (last - first))


def client_cpu_ms_per_request(url: str, n: int = 2000, in_flight: int = 128) -> float:
    """CPU ms per request of the official client alone (``teachers.client.ModelClient``): short text
    requests against the stub, ``in_flight`` at a time."""
    import asyncio

    from teachers.client import ModelClient

    async def go() -> float:
        client = ModelClient(model="client-alone", base_urls=[url], sampling={"max_tokens": 64}, max_in_flight=in_flight)
        try:
            cpu = time.process_time()
            await asyncio.gather(*(client.chat([{"role": "user", "content": f"Q{i}: what happens?"}]) for i in range(n)))
            return 1000 * (time.process_time() - cpu) / n
        finally:
            await client.close()

    return asyncio.run(go())


def cpu_ms_per_sample_without_http(runs: list[tuple[Path, Path, Path]]) -> float:
    """The flow's own CPU per sample: every model call answered at once, without HTTP. ``runs`` are
    (manifest, out, config) of a short and a long run; returns their difference per sample."""
    from unittest import mock

    from flows.build_avrt import build_avrt
    from teachers.client import ChatResult, ModelClient

    async def answer_at_once(self: ModelClient, messages) -> ChatResult:
        if callable(messages):
            messages()  # the request is still built
        content = "<think>both agree</think><answer>A</answer>" if self.model.startswith("merger") else "Answer: (A)"
        return ChatResult(content, "", "stop", content)

    cpu, sizes = [], []
    with mock.patch.object(ModelClient, "chat", answer_at_once):
        for manifest, out, config in runs:
            start = time.process_time()
            build_avrt(manifest=str(manifest), out=str(out), config=str(config))
            cpu.append(time.process_time() - start)
            sizes.append(sum(1 for _ in open(manifest)))
    return 1000 * (cpu[1] - cpu[0]) / (sizes[1] - sizes[0])


def write_heavy_config(path: Path, url: str, in_flight: int, suffix: str, cache_dir: Path) -> tuple[Path, dict[str, str]]:
    models = {role: f"{role}-{suffix}" for role in ("vision", "audio", "merger")}

    def ep(role: str, prompt: str) -> dict:
        return {"model": models[role], "base_url": url, "prompt": prompt, "temperature": 0.0, "max_tokens": 64,
                "max_in_flight": in_flight, "timeout_s": 120}

    path.write_text(yaml.safe_dump({"vision_teacher": ep("vision", "vision_teacher"), "audio_teacher": ep("audio", "audio_teacher"),
                                    "merger": ep("merger", "merger"), "filter": "all", "media": {"max_side": 320},
                                    "cache_dir": str(cache_dir)}))
    return path, models


def cli_seconds(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.build_avrt", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"build-avrt failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    return time.perf_counter() - start


def heavy(args: argparse.Namespace) -> dict[str, float]:
    """The heavy-tailed report (see the module doc)."""
    from flows.build_avrt import build_avrt

    median, sigma, seed = 0.6, 0.8, args.seed
    results: dict[str, float] = {"load_average_1min_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = [write_clip(ClipSpec(f"b{i}", 10.0, ["red", "green", "blue"][i % 3], "tone", "high", 640, 360),
                            tmp / f"clip{i}.mp4") for i in range(args.clips)]
        manifest = write_manifest(clips, args.samples, tmp / "manifest.jsonl")
        small = write_manifest(clips, 4, tmp / "small.jsonl")
        short = write_manifest(clips, SHORT, tmp / "short.jsonl")
        cache = tmp / "cache"
        process, url = start_server(0.0, (median, sigma, seed))
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-cli"), "PYTHONPATH": str(ROOT)}
        env.pop("PREFECT_API_URL", None)
        try:
            from prefect.testing.utilities import prefect_test_harness

            with prefect_test_harness(server_startup_timeout=120):
                # media extracted once (cached for every later run), and the code paths warmed
                build_avrt(manifest=str(small), out=str(tmp / "warm"), config=str(write_heavy_config(tmp / "w.yaml", url, 4, "warm", cache)[0]))
                for in_flight in args.in_flight:
                    # a short run first: its CPU is the per-run fixed cost plus SHORT samples, so the
                    # difference to the long run is the CPU per sample beyond start-up
                    config, _ = write_heavy_config(tmp / f"p{in_flight}.yaml", url, in_flight, f"probe{in_flight}", cache)
                    short_cpu = time.process_time()
                    build_avrt(manifest=str(short), out=str(tmp / f"probe{in_flight}"), config=str(config))
                    short_cpu = time.process_time() - short_cpu
                    config, models = write_heavy_config(tmp / f"s{in_flight}.yaml", url, in_flight, f"steady{in_flight}", cache)
                    ideal = ideal_seconds(args.samples, in_flight, models, median, sigma, seed)
                    fifo = fifo_schedule_seconds(args.samples, in_flight, models, median, sigma, seed)
                    server_cpu = process_cpu_seconds(process.pid)
                    wall, cpu = time.perf_counter(), time.process_time()
                    build_avrt(manifest=str(manifest), out=str(tmp / f"steady{in_flight}"), config=str(config))
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    server_cpu = process_cpu_seconds(process.pid) - server_cpu
                    spans = server_spans(url)
                    busy = min(busy_while_work_remains(spans[models[role]], in_flight) for role in TEACHERS)
                    results.update({f"steady_{in_flight}_teacher_slots_busy_while_work_remains": busy,
                                    f"steady_{in_flight}_ideal_s": ideal, f"steady_{in_flight}_fifo_bound_s": fifo,
                                    f"steady_{in_flight}_wall_s": wall,
                                    f"steady_{in_flight}_achieved_vs_ideal": ideal / wall,
                                    f"steady_{in_flight}_fifo_bound_vs_ideal": ideal / fifo,
                                    f"steady_{in_flight}_achieved_vs_fifo_bound": fifo / wall,
                                    f"steady_{in_flight}_cpu_ms_per_sample": 1000 * cpu / args.samples,
                                    f"steady_{in_flight}_cpu_ms_per_sample_beyond_startup":
                                        1000 * (cpu - short_cpu) / (args.samples - SHORT),
                                    f"steady_{in_flight}_stub_server_cpu_ms_per_sample": 1000 * server_cpu / args.samples})
                # where the CPU goes: the official client alone, and the flow without HTTP
                results["official_client_alone_cpu_ms_per_request"] = client_cpu_ms_per_request(url)
                results["flow_without_http_cpu_ms_per_sample"] = cpu_ms_per_sample_without_http(
                    [(m, tmp / f"nohttp{i}", write_heavy_config(tmp / f"n{i}.yaml", url, args.in_flight[0], f"nohttp{i}", cache)[0])
                     for i, m in enumerate((short, manifest))])
            in_flight = args.in_flight[0]
            cached_config = tmp / "w.yaml"  # the warm-up's: its 4 samples' calls are all cached
            small_args = ["--manifest", str(small), "--out", str(tmp / "cached"), "--config", str(cached_config)]
            # the first run with a new PREFECT_HOME also creates Prefect's database (once per machine)
            results["first_run_new_prefect_home_4_samples_cli_s"] = cli_seconds(small_args, env)
            # the same command again: --out is up to date, the flow does not start
            results["unchanged_rerun_4_samples_cli_s"] = cli_seconds(small_args, env)
            # every call cached, a new --out: the fixed cost of a run of the flow
            results["cached_run_4_samples_new_out_cli_s"] = cli_seconds(
                ["--manifest", str(small), "--out", str(tmp / "cached-new"), "--config", str(cached_config)], env)
            config, models = write_heavy_config(tmp / "cli.yaml", url, in_flight, "cli", cache)
            ideal = ideal_seconds(args.samples, in_flight, models, median, sigma, seed)
            fifo = fifo_schedule_seconds(args.samples, in_flight, models, median, sigma, seed)
            launched = time.monotonic()
            wall = cli_seconds(["--manifest", str(manifest), "--out", str(tmp / "cli"), "--config", str(config)], env)
            spans = server_spans(url)
            busy = min(busy_while_work_remains(spans[models[role]], in_flight, since=launched) for role in TEACHERS)
            first_request = min(start for role in TEACHERS for start, _ in spans[models[role]]) - launched
            last_answer = max(end for model in models.values() for _, end in spans[model]) - launched
            results.update({f"cli_{in_flight}_teacher_slots_busy_from_launch": busy,
                            f"cli_{in_flight}_seconds_to_first_request": first_request,
                            f"cli_{in_flight}_seconds_after_last_answer": wall - last_answer,
                            f"cli_{in_flight}_ideal_s": ideal, f"cli_{in_flight}_fifo_bound_s": fifo,
                            f"cli_{in_flight}_wall_s": wall, f"cli_{in_flight}_with_startup_achieved_vs_ideal": ideal / wall,
                            f"cli_{in_flight}_with_startup_achieved_vs_fifo_bound": fifo / wall})
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "flows.build_avrt", "--help"], cwd=ROOT, env=env, capture_output=True, check=True)
            results["help_s"] = time.perf_counter() - start
        finally:
            process.terminate()
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=None, help="default 128 (fixed latency), 1200 (--heavy)")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, nargs="+", default=None, help="default 16 (fixed), 32 128 (--heavy)")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--heavy", action="store_true", help="heavy-tailed latency mode (lognormal, seeded)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.heavy:
        args.samples = args.samples or 1200
        args.in_flight = args.in_flight or [32, 128]
        results = heavy(args)
        print("\n== bench/pipeline.py --heavy ==")
        for key, value in results.items():
            print(f"{key:>48}: {value:.3f}")
        return
    args.samples = args.samples or 128
    args.in_flight = (args.in_flight or [16])[0]
    from prefect.testing.utilities import prefect_test_harness

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        tmp = Path(tmp)
        clips = [write_clip(ClipSpec(f"b{i}", 10.0, ["red", "green", "blue"][i % 3], "tone", "high", 640, 360),
                            tmp / f"clip{i}.mp4") for i in range(args.clips)]

        # 3. media extraction vs decode-all
        settings = MediaSettings()
        start = time.perf_counter()
        for clip in clips:
            info = probe(clip)  # as the pipeline does: one probe for frames and audio
            extract_frames(clip, settings, info), extract_audio(clip, settings, info)
        ours = (time.perf_counter() - start) / len(clips)
        start = time.perf_counter()
        for clip in clips:
            decode_all_baseline(clip, settings)
        baseline = (time.perf_counter() - start) / len(clips)
        results.update(media_s_per_clip=ours, decode_all_s_per_clip=baseline, media_speedup=baseline / ours)

        process, url = start_server(args.latency)
        try:
            manifest = write_manifest(clips, args.samples, tmp / "manifest.jsonl")
            out = tmp / "out"
            shard = max(1, args.samples // 2)
            first_wall, _ = timed_run(manifest, out, write_config(tmp / "c0.yaml", url, args.in_flight, "warm", shard))
            # 1 + 2. fresh model names: every call is new, media are cached
            wall, cpu = timed_run(manifest, out, write_config(tmp / "c1.yaml", url, args.in_flight, "fresh", shard))
            ideal = args.in_flight / args.latency
            results.update(samples_per_s=args.samples / wall, ideal_samples_per_s=ideal,
                           throughput_vs_ideal=(args.samples / wall) / ideal, cpu_ms_per_sample=1000 * cpu / args.samples)
            # 4. unchanged re-run
            rerun_wall, _ = timed_run(manifest, out, tmp / "c1.yaml")
            results.update(first_run_s=wall, unchanged_rerun_s=rerun_wall, rerun_vs_first=rerun_wall / wall,
                           cold_first_run_with_media_s=first_wall)
        finally:
            process.terminate()
    print("\n== bench/pipeline.py ==")
    for key, value in results.items():
        print(f"{key:>28}: {value:.3f}")


if __name__ == "__main__":
    main()

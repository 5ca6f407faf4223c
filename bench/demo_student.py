"""How reliably the demo's student learns both modalities, on the path `make demo` takes.

    python bench/demo_student.py [--draws 5] [--seeds 4] [--work outputs/bench-demo-student]
        [--out bench/demo_student.json] [key=value ...]

The demo's kept corpus depends on which answers the sampling teachers drew, so a student that learns
only on lucky draws makes a flaky demo (and a flaky ``tests/test_demo_miniature.py``). This bench
runs what the demo runs, several times:

1. the demo's task (``demo.task``, 320 clips) and its trained teachers and merger (``demo.models``),
   both reused from ``make demo`` when they exist (same folders, same cache keys);
2. ``--draws`` fresh teacher draws: build-avrt with the demo's build config against two real
   ``transformers serve`` processes, each draw with an empty answer cache (the clips' media are
   shared), so every draw keeps its own samples;
3. for each draw, ``--seeds`` fresh students (train seeds 0, 1, …; the demo uses 0): SFT then GRPO
   with ``configs/train/demo.yaml`` (``key=value`` overrides it), each evaluated on the test split
   in the av, a and v settings after SFT and after GRPO.

A student passes when it uses both modalities after SFT + GRPO (``demo.summary.learned_both``,
the demo's verdict). For each evaluation the bench also counts how often the chosen option has the
clip's colour and how often its pitch, which tells which modality a failing student missed. It
prints one JSON line per student and the pass count, and writes everything to ``--out``. A draw's
corpus and a student's folders are reused while their inputs are unchanged (``demo.student``), so an
interrupted bench resumes. About 1.5 minutes per student and 1 per draw on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIPS = 320  # scripts/demo.sh's DEMO_CLIPS


@contextlib.contextmanager
def transformers_servers(count: int, work: Path) -> Iterator[list[str]]:
    """``count`` real ``transformers serve`` processes on loopback (one torch thread per request, as in
    ``scripts/demo.sh``); yields their ``/v1`` URLs and stops them on exit."""
    from serving.vllm_server import free_port

    home = work / ".hf"
    (home / "hub").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or "transformers"
    processes, urls = [], []
    try:
        for i in range(count):
            port = free_port()
            log = open(work / f"serve-{i}.log", "w")
            processes.append(subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}/v1")
        for url, process in zip(urls, processes):
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{url}/models", timeout=5)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"transformers serve did not come up; see {work}/serve-*.log")
                    time.sleep(1)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def fresh_draw(task_train: Path, models: Path, urls: list[str], student_base: Path, media_cache: Path,
               out: Path) -> dict:
    """build-avrt with the demo's build config and an empty answer cache (the clips' media shared):
    one fresh draw of the sampling teachers. A finished draw is reused."""
    from flows.build_avrt import build_avrt

    stats_file = out / "stats.json"
    if (out / "corpus").is_dir() and stats_file.exists():
        return json.loads(stats_file.read_text())
    cache = out.parent / f"{out.name}-cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    (cache / "media").symlink_to(media_cache.resolve() / "media", target_is_directory=True)
    vision_url, audio_url = urls[0], urls[-1]
    overrides = {"vision_teacher.model": str(models / "vision"), "vision_teacher.base_url": vision_url,
                 "audio_teacher.model": str(models / "audio"), "audio_teacher.base_url": audio_url,
                 "merger.model": str(models / "merger"), "merger.base_url": audio_url,
                 "stats_tokenizer": str(student_base), "cache_dir": str(cache)}
    return build_avrt(manifest=str(task_train), out=str(out), config=str(ROOT / "configs/build/demo.yaml"),
                      overrides=overrides)


def property_hits(eval_dir: Path) -> dict[str, dict[str, float]]:
    """Per setting: how often the chosen option has the clip's colour and how often its pitch."""
    from demo.task import LETTERS, OPTIONS, properties
    from evaluation.evaluate import PREDICTIONS, read_predictions

    hits: dict[str, dict[str, int]] = {}
    for row in read_predictions(eval_dir / PREDICTIONS):
        setting = hits.setdefault(row["modality"], {"n": 0, "colour": 0, "pitch": 0})
        setting["n"] += 1
        if row.get("letter") not in tuple(LETTERS):  # no option chosen: neither property
            continue
        (colour, pitch), (true_colour, true_pitch) = properties(OPTIONS, row["letter"]), properties(OPTIONS, row["gold"])
        setting["colour"] += colour == true_colour
        setting["pitch"] += pitch == true_pitch
    return {m: {k: round(h[k] / h["n"], 3) for k in ("colour", "pitch")} for m, h in sorted(hits.items()) if h["n"]}


def first_perfect_step(metrics: Path) -> int | None:
    """The first logged SFT step whose mean token accuracy on its batch is 1: when the student stopped
    guessing the one token its trace cannot copy from the template (the pitch, learned last)."""
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if row.get("mean_token_accuracy", 0) >= 0.9999:
            return int(row["step"])
    return None


def student_run(corpus: Path, test: Path, base: Path, seed: int, overrides: list[str], out: Path,
                threads: int) -> dict:
    """A fresh student trained as the demo trains it (``demo.student``), evaluated after SFT and after
    GRPO; its accuracies and property hits."""
    from demo.student import evaluated, student_config, trained
    from demo.summary import accuracies, learned_both

    config = student_config(corpus, base, out / "student", [f"seed={seed}", *overrides])
    trained(config, threads)
    budget = config.grpo.max_completion_length
    result: dict = {}
    for stage in config.stages:
        eval_dir = out / f"eval-{stage}"
        report = evaluated(out / "student" / stage / "final", test, corpus, eval_dir, budget, threads)
        result[stage] = {"accuracy": accuracies(report), "option_has": property_hits(eval_dir)}
    if "sft" in config.stages:
        result["sft"]["train_token_accuracy_1_at_step"] = first_perfect_step(out / "student" / "sft" / "metrics.jsonl")
    return {**result, "learned_both": learned_both(result[config.stages[-1]]["accuracy"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python bench/demo_student.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=5, help="fresh teacher draws (kept corpora)")
    parser.add_argument("--seeds", type=int, default=4, help="students per draw (train seeds FIRST..FIRST+N-1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first train seed (two benches on disjoint seeds can share --work)")
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="make demo's output folder (reused)")
    parser.add_argument("--model", type=Path, help="the fresh student to train (default: OUTPUTS/tiny/omni, the demo's)")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/bench-demo-student", help="scratch folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/demo_student.json", help="where to write results")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (1 when two benches share the cores: more threads than cores stall)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="train config overrides (configs/train/demo.yaml)")
    args = parser.parse_args(argv)
    from configs import missing_model
    from corpus.store import read_frame
    from demo.models import train_models
    from demo.student import digest
    from demo.task import write_task
    from training.tiny_models import build_all, built_by_this_version

    started = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    if "PREFECT_API_URL" not in os.environ:  # the draws' flow runs go to a temporary server of its own
        os.environ["PREFECT_HOME"] = str(args.work.resolve() / ".prefect")
    base = args.model or args.outputs / "tiny" / "omni"
    if args.model is None and not built_by_this_version(base.parent):  # as make demo does (--if-changed)
        build_all(base.parent, seed=0)
    elif problem := missing_model(str(base)):
        parser.error(problem)
    task = args.outputs / "demo" / f"av-n{CLIPS}"
    if not (task / "manifest_test.jsonl").exists():
        write_task(task, n=CLIPS)
    media_cache = args.outputs / "demo" / "cache"
    models = train_models(task / "manifest_train.jsonl", args.outputs / "demo-models", media_cache=media_cache)

    draws = []
    drawn = all((args.work / f"draw{d}" / "stats.json").exists() for d in range(1, args.draws + 1))
    with contextlib.nullcontext([]) if drawn else transformers_servers(2, args.work) as urls:
        for d in range(1, args.draws + 1):
            stats = fresh_draw(task / "manifest_train.jsonl", models, urls, base, media_cache, args.work / f"draw{d}")
            draws.append({"draw": d, "kept": stats["samples_kept"], "of": stats["samples_in"],
                          "teacher_accuracy": {r: stats["teachers"][r]["accuracy"] for r in ("vision", "audio")}})
            print(json.dumps(draws[-1]), flush=True)

    students = args.work / f"students-{digest(base)[:10]}"  # one folder per fresh student (its weights)
    runs = []
    for draw in draws:
        corpus = args.work / f"draw{draw['draw']}"
        draw["kept_answers"] = {k: int(v) for k, v in sorted(read_frame(corpus)["answer"].value_counts().items())}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = student_run(corpus, task / "manifest_test.jsonl", base, seed, args.overrides,
                                 students / f"draw{draw['draw']}-seed{seed}", args.threads)
            runs.append({"draw": draw["draw"], "seed": seed, **result})
            print(json.dumps(runs[-1]), flush=True)
    passed = sum(r["learned_both"] for r in runs)
    report = {"model": str(base), "draws": draws, "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
              "overrides": args.overrides, "runs": runs, "passed": passed, "of": len(runs), "minutes": round((time.monotonic() - started) / 60, 1)}
    args.out.write_text(json.dumps(report, indent=1))
    print(f"learned both modalities after SFT + GRPO: {passed} of {len(runs)} students "
          f"({args.draws} teacher draws x {args.seeds} seeds)")
    return report


if __name__ == "__main__":
    main()

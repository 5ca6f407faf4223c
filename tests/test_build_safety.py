"""build-avrt never turns an outage into verdicts and never destroys finished work (issues 9 and 16).

In-process runs share one Prefect test server; CLI runs get its URL (no temporary server each),
except the one that checks a clean run's output with a temporary server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.build_avrt import build_avrt
from prompts import load_prompt
from tests.conftest import free_port
from tests.pipeline_helpers import merger_handler, question_index, teacher_handler, write_config
from tests.scripted_server import Reply, ScriptedServer

ROOT = Path(__file__).resolve().parents[1]


def _manifest(synthetic_data: Path, folder: Path, n: int, clips: int = 6, name: str = "manifest.jsonl") -> tuple[Path, list[dict]]:
    """``n`` samples with questions ``Q{i}:`` on the first ``clips`` synthetic clips (round robin)."""
    base = [json.loads(l) for l in (synthetic_data / "manifest.jsonl").read_text().splitlines()][:clips]
    rows = [{**base[i % len(base)], "id": f"s{i}", "question": f"Q{i}: {base[i % len(base)]['question']}",
             "video": str(synthetic_data / base[i % len(base)]["video"])} for i in range(n)]
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _serve_gold(server: ScriptedServer, rows: list[dict], wrong: set[int] = frozenset()) -> None:
    gold = {i: r["answer"] for i, r in enumerate(rows)}
    said = {i: ("ABCD"[("ABCD".index(g) + 1) % 4] if i in wrong else g) for i, g in gold.items()}
    server.set_handler("vision", teacher_handler(gold))
    server.set_handler("audio", teacher_handler(said))
    server.set_handler("merger", merger_handler())


def _decisions(out: Path) -> dict[str, tuple[str, str]]:
    found = {}
    for name in ("corpus", "rejected"):
        for path in (out / name).glob("*.parquet"):
            frame = pd.read_parquet(path)
            for _, row in frame.iterrows():
                found[row["id"]] = ("kept", "kept") if name == "corpus" else ("rejected", row["stage"])
    return found


def _state_in_api(state) -> tuple[str, str | None]:
    """The name and message of a flow run's state as Prefect's API (and so its UI) holds them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        held = client.read_flow_run(state.state_details.flow_run_id).state
    return held.name, held.message


def _cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.build_avrt", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


# -- the execution core ------------------------------------------------------------------------

def test_in_flight_bound_is_per_replica_for_the_whole_process(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 24)
    with ScriptedServer(latency=0.15) as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url, shard_size=2)
        text = config.read_text().replace("max_in_flight: 8", "max_in_flight: 3").replace("max_concurrent_shards: 2\n", "")
        config.write_text(text)
        stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"), config=str(config))
    assert stats["samples_kept"] == 24
    # 12 shards ran at once, and together never had more than 3 requests in flight per model,
    # yet every slot was used (the bound is shared, not split per shard).
    assert dict(server.peak) == {"vision": 3, "audio": 3, "merger": 3}


def test_outage_then_rerun_decides_as_if_no_outage(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 8)
    wrong = {2, 5}
    with ScriptedServer() as server:  # the reference: a healthy server, its own output and cache
        _serve_gold(server, rows, wrong)
        reference = build_avrt(manifest=str(manifest), out=str(tmp_path / "ref"), config=str(write_config(tmp_path / "r.yaml", server.url)))
    assert reference["pending"]["samples"] == 0

    with ScriptedServer(latency=0.3) as server:
        _serve_gold(server, rows, wrong)
        healthy_vision = server.handlers["vision"]
        # The vision teacher fails these for the whole run (503) while answering the others meanwhile:
        # the endpoint is up, so they are pending, and the run goes on.
        down = {1, 3, 5, 7}
        server.set_handler("vision", lambda r: Reply(status=503) if question_index(r) in down else healthy_vision(r))
        config = write_config(tmp_path / "c.yaml", server.url)
        out = tmp_path / "out"
        first_state = build_avrt(manifest=str(manifest), out=str(out), config=str(config), return_state=True)
        first = first_state.result()
        assert first["pending"]["samples"] == 4 and first["stopped"] is None
        # The flow run says so in the UI: its state's name, and the count and reason in its message.
        assert _state_in_api(first_state) == ("Unfinished", first_state.message)
        assert first_state.is_completed() and first_state.message.startswith("4 sample(s) pending (vision_teacher: HTTP 503")
        assert set(_decisions(out)) == {"s0", "s2", "s4", "s6"}  # nothing written for the pending ones

        server.reset_counts()
        server.set_handler("vision", healthy_vision)
        second_state = build_avrt(manifest=str(manifest), out=str(out), config=str(config), return_state=True)
        second = second_state.result()
        assert _state_in_api(second_state)[0] == "Completed"
        # Only the pending samples' calls are repeated: their vision calls, and merges of those kept.
        assert dict(server.counts) == {"vision": 4, "merger": 3}
    assert second["pending"]["samples"] == 0
    assert _decisions(out) == _decisions(tmp_path / "ref")


def test_endpoint_down_for_every_request_stops_early(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 12)
    with ScriptedServer(lambda r: Reply(status=503)) as server:
        config = write_config(tmp_path / "c.yaml", server.url, max_concurrent_shards=1)
        stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"), config=str(config))
    assert stats["stopped"] and server.url in stats["stopped"] and "HTTP 503" in stats["stopped"]
    assert stats["pending"]["samples"] == 12 and stats["samples_in"] == 0
    assert stats["funnel"]["input"] == 12 and stats["funnel"]["pending"] == 12, "read, and pending"
    # Only the first shard (3 samples) probed the endpoint, each call with its 3 attempts.
    assert server.counts["vision"] <= 3 * 3 and server.counts["audio"] <= 3 * 3
    assert not list((tmp_path / "out" / "rejected").glob("*.parquet"))


def test_model_and_base_url_are_a_complete_role_section(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 3)
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        config = tmp_path / "c.yaml"
        config.write_text(f"vision_teacher: {{model: vision, base_url: {server.url}}}\n"
                          f"audio_teacher: {{model: audio, base_url: {server.url}}}\n"
                          f"merger: {{model: merger, base_url: {server.url}}}\n")
        stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"), config=str(config))
        requests = list(server.requests)
    assert stats["samples_kept"] == 3
    for model, prompt in (("vision", "vision_teacher"), ("audio", "audio_teacher"), ("merger", "merger")):
        request = next(r for r in requests if r["model"] == model)
        content = request["messages"][-1]["content"]
        text = content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")
        assert load_prompt(prompt).strip()[:200] in text
    vision = next(r for r in requests if r["model"] == "vision")
    assert (vision["temperature"], vision["max_tokens"]) == (0.8, 8192)  # the paper teacher's sampling


# -- the command line: refusals, run-level failures, noise ----------------------------------------

def test_bad_key_stops_early_then_the_right_key_completes_cleanly(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 6)
    with ScriptedServer(api_key="right-key-123456") as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url)
        config.write_text(config.read_text().replace("prompt:", "api_key_env: AVRT_TEST_KEY\n  prompt:"))
        args = ["--manifest", str(manifest), "--out", str(tmp_path / "out"), "--config", str(config)]
        prefect = {"PREFECT_API_URL": prefect_api}  # the session's server (a temporary one: test_resume_and_runners)
        first = _cli(args, {"AVRT_TEST_KEY": "wrong-key-654321", **prefect})
        output = first.stdout + first.stderr
        assert first.returncode == 3, output[-3000:]
        assert "authentication failed" in output and server.url in output
        assert "6 sample(s) pending" in output
        assert "wrong-key-654321" not in output and "right-key" not in output
        assert server.counts["unauthorized"] <= 2 * 2 * 3  # the first calls of the admitted shards, no retries
        assert not list((tmp_path / "out" / "rejected").glob("*.parquet"))

        second = _cli(args, {"AVRT_TEST_KEY": "right-key-123456", **prefect})
        output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert len(pd.read_parquet(tmp_path / "out" / "corpus" / "train.parquet")) == 6
    assert "ERROR" not in output and "Traceback" not in output, output[-3000:]  # a clean run is quiet
    assert "build-avrt: 6 samples decided, 6 kept, 0 pending" in output and "stage funnel:" in output  # the summary


def test_unreachable_endpoint_stops_early_with_its_url(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 6)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url)
        config.write_text(config.read_text().replace(f"base_url: {server.url}", f"base_url: {closed}", 1))
        result = _cli(["--manifest", str(manifest), "--out", str(tmp_path / "out"), "--config", str(config)],
                      {"PREFECT_API_URL": prefect_api})
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert f"stopped: {closed}" in output and "connection failed" in output
    assert "6 sample(s) pending" in output


def test_an_answer_that_is_not_json_stops_early_like_html(synthetic_data, prefect_api, tmp_path):
    """A 200 answer with a JSON content type and a body that is not JSON: the same clean run-level stop."""
    manifest, rows = _manifest(synthetic_data, tmp_path, 6)
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        server.set_handler("vision", lambda r: Reply(body='{"choices": [{"message": '))
        config = write_config(tmp_path / "c.yaml", server.url)
        result = _cli(["--manifest", str(manifest), "--out", str(tmp_path / "out"), "--config", str(config)],
                      {"PREFECT_API_URL": prefect_api})
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert f"stopped: {server.url}" in output and "the answer is not JSON" in output
    assert "6 sample(s) pending" in output and "Traceback" not in output
    assert not list((tmp_path / "out" / "rejected").glob("*.parquet"))


def test_no_sample_with_its_media_is_a_run_level_stop_naming_the_folder(synthetic_data, prefect_api, tmp_path,
                                                                       capsys, monkeypatch):
    """AVQA's annotation file away from its videos: no sample is rejected, the run stops (status 3) naming
    the folder it looked in and --video-dir; in the AVQA repository's layout (data/video beside
    data/annotation) the same command finds the videos without --video-dir."""
    from flows.build_avrt import main

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    annotation = tmp_path / "AVQA" / "data" / "annotation"
    annotation.mkdir(parents=True)
    (annotation / "train_qa.json").write_text((synthetic_data / "avqa.json").read_text())
    out = tmp_path / "out"
    with ScriptedServer() as server:
        args = ["--manifest", str(annotation / "train_qa.json"), "--out", str(out),
                "--config", str(write_config(tmp_path / "c.yaml", server.url))]
        assert main(args) == 3
        output = capsys.readouterr()
        assert f"looked in {annotation}" in output.err and "--video-dir" in output.err
        assert "none of the 6 samples has its media" in output.err and "Traceback" not in output.err
        stats = json.loads((out / "stats.json").read_text())
        assert stats["pending"]["samples"] == 6 and stats["funnel"]["input"] == 6 and stats["stopped"]
        assert not list((out / "rejected").glob("*.parquet")) and sum(server.counts.values()) == 0

        (tmp_path / "AVQA" / "data" / "video").symlink_to(synthetic_data / "videos")
        assert main(args) == 0
    assert json.loads((out / "stats.json").read_text())["funnel"]["after_media"] == 6


def test_second_run_on_one_out_is_refused_and_a_dead_owner_does_not_block(synthetic_data, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 2)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from flows.outdir import OutdirLock; "
                               f"OutdirLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = write_config(tmp_path / "c.yaml", f"http://127.0.0.1:{free_port()}/v1")
        refused = _cli(["--manifest", str(manifest), "--out", str(out), "--config", str(config)])
        assert refused.returncode == 2
        assert f"in use by another build-avrt run (pid {holder.pid}" in refused.stderr
    finally:
        holder.kill()
        holder.wait()
    # The owner died (kill -9): its lock went with it; the lock file's stale text blocks nothing.
    from flows.outdir import OutdirLock

    with OutdirLock(out):
        pass


def _with_bad_rows(manifest: Path, rows: list[dict]) -> list[str]:
    """Append one row of each kind of problem to ``manifest``; returns what the refusal must say of each."""
    good = rows[0]
    bad = [('{"id": "j1", "video": ', "line {n}: invalid JSON"),
           (json.dumps({**good, "id": "r1", "answer": "F"}), "line {n} (id 'r1'): answer 'F' is not one of the options"),
           (json.dumps({k: v for k, v in good.items() if k != "choices"} | {"id": "m1"}), "line {n} (id 'm1'): missing field 'choices'"),
           (json.dumps({**good, "question": "Q0: again"}), "line {n} (id 's0'): duplicate id 's0' (first at line 1)")]
    with manifest.open("a") as handle:
        handle.write("".join(line + "\n" for line, _ in bad))
    return [said.format(n=len(rows) + 1 + i) for i, (_, said) in enumerate(bad)]


def test_invalid_manifest_rows_are_all_listed_before_anything_runs(synthetic_data, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 3)
    expected = _with_bad_rows(manifest, rows)
    out = tmp_path / "out"
    with ScriptedServer() as server:
        config = write_config(tmp_path / "c.yaml", server.url)
        refused = _cli(["--manifest", str(manifest), "--out", str(out), "--config", str(config)])
        assert server.requests == []  # no server contacted
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "4 of 7 rows are invalid" in refused.stderr and "Traceback" not in refused.stderr
    for said in expected:
        assert said in refused.stderr, said
    assert not out.exists()  # nothing written to --out


def test_skip_invalid_records_bad_rows_at_the_manifest_stage(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 3)
    _with_bad_rows(manifest, rows)
    out = tmp_path / "out"
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url)
        result = _cli(["--manifest", str(manifest), "--out", str(out), "--config", str(config), "--skip-invalid"],
                      {"PREFECT_API_URL": prefect_api})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    decisions = _decisions(out)
    assert {i for i, d in decisions.items() if d == ("kept", "kept")} == {"s0", "s1", "s2"}
    assert sorted(i for i, d in decisions.items() if d == ("rejected", "manifest")) == [
        "@line4", "m1@line6", "r1@line5", "s0@line7"]
    rejected = pd.read_parquet(out / "rejected" / "train.parquet").set_index("id")
    assert rejected.loc["r1@line5", "reason"].startswith("answer 'F' is not one of the options")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples_in"] == 7 and stats["dropped_by_stage"] == {"manifest": 4}
    assert stats["funnel"]["after_manifest"] == 3 and stats["samples_kept"] == 3
    from flows.view import load_rows, render_page

    assert render_page(load_rows(out), out).count("rejected at manifest: ") == 4


def test_a_manifest_that_would_drop_kept_rows_needs_replace(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 4)
    out = tmp_path / "out"
    env = {"PREFECT_API_URL": prefect_api}
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url)
        base = ["--out", str(out), "--config", str(config)]
        assert _cli(["--manifest", str(manifest), *base], env).returncode == 0
        corpus = (out / "corpus" / "train.parquet").read_bytes()

        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        refused = _cli(["--manifest", str(empty), *base], env)
        assert refused.returncode == 2 and (out / "corpus" / "train.parquet").read_bytes() == corpus

        smaller, _ = _manifest(synthetic_data, tmp_path, 2, name="smaller.jsonl")
        refused = _cli(["--manifest", str(smaller), *base], env)
        assert refused.returncode == 2 and "2 kept row(s) this manifest does not cover" in refused.stderr
        assert "--replace" in refused.stderr and (out / "corpus" / "train.parquet").read_bytes() == corpus

        replaced = _cli(["--manifest", str(smaller), *base, "--replace"], env)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(pd.read_parquet(out / "corpus" / "train.parquet")["id"]) == ["s0", "s1"]


@pytest.mark.slow
def test_many_samples_on_few_clips_with_a_shared_cache_lose_nothing(synthetic_data, prefect_api, tmp_path):
    manifest, rows = _manifest(synthetic_data, tmp_path, 30, clips=2)
    with ScriptedServer() as server:
        _serve_gold(server, rows)
        config = write_config(tmp_path / "c.yaml", server.url, shard_size=4, max_concurrent_shards=4)
        runs = [subprocess.Popen([sys.executable, "-m", "flows.build_avrt", "--manifest", str(manifest), "--out",
                                  str(tmp_path / f"out{k}"), "--config", str(config), "--cache-dir", str(tmp_path / "shared")],
                                 cwd=ROOT, env={**os.environ, "PREFECT_API_URL": prefect_api},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(3)]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
    for k, (run, output) in enumerate(zip(runs, outputs)):
        assert run.returncode == 0, output[-3000:]
        corpus = pd.read_parquet(tmp_path / f"out{k}" / "corpus" / "train.parquet")
        assert sorted(corpus["id"]) == sorted(r["id"] for r in rows)
        for frames, audio in zip(corpus["frames"], corpus["audio"]):
            assert all((tmp_path / f"out{k}" / f).stat().st_size > 0 for f in frames)
            assert (tmp_path / f"out{k}" / audio).stat().st_size > 0


def test_an_unchanged_rerun_is_up_to_date_without_starting_the_flow(synthetic_data, prefect_api, tmp_path):
    """The same manifest, options and config on a finished --out: exit 0 at once, nothing sent or
    rewritten; any change to them (or a missing output) means a real run."""
    from flows.config import load_config
    from flows.outdir import run_inputs, up_to_date

    manifest, rows = _manifest(synthetic_data, tmp_path, 4)
    out = tmp_path / "out"
    with ScriptedServer() as server:
        _serve_gold(server, rows, wrong={1})
        config = write_config(tmp_path / "c.yaml", server.url)
        build_avrt(manifest=str(manifest), out=str(out), config=str(config))
        sent, stats_bytes = len(server.requests), (out / "stats.json").read_bytes()
        done = _cli(["--manifest", str(manifest), "--out", str(out), "--config", str(config)])
        assert done.returncode == 0 and "is up to date (4 samples decided, 3 kept" in done.stderr, done.stderr
        assert len(server.requests) == sent and (out / "stats.json").read_bytes() == stats_bytes

    def inputs(cfg_overrides=None, limit=None):
        return run_inputs(str(manifest.resolve()), None, limit, False, load_config(config, cfg_overrides))

    assert up_to_date(out, inputs()) is not None
    assert up_to_date(out, inputs({"vision_teacher.temperature": 0.5})) is None  # other sampling
    assert up_to_date(out, inputs(limit=2)) is None
    manifest.write_text(manifest.read_text().replace("Q3:", "Q3 (edited):"))
    assert up_to_date(out, inputs()) is None
    manifest.write_text(manifest.read_text().replace("Q3 (edited):", "Q3:"))
    assert up_to_date(out, inputs()) is not None
    for parquet in (out / "rejected").glob("*.parquet"):
        parquet.unlink()
    assert up_to_date(out, inputs()) is None  # an output is missing


def test_a_merger_behind_a_reasoning_parser_keeps_its_think_block(synthetic_data, prefect_api, tmp_path):
    """vLLM's reasoning parsers (and transformers serve for Qwen models) move ``<think>…</think>`` into
    a separate field; the merged trace is validated and kept as the model wrote it."""
    manifest, rows = _manifest(synthetic_data, tmp_path, 3)
    with ScriptedServer() as server:
        _serve_gold(server, rows)

        def split_merger(request):
            gold = re.search(r"Correct Answer:\s*\(?([A-D])", request["messages"][-1]["content"]).group(1)
            return Reply(content=f"<answer>{gold}</answer>", reasoning="The tone and the picture agree.",
                         reasoning_field="reasoning")

        server.set_handler("merger", split_merger)
        stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"),
                           config=str(write_config(tmp_path / "c.yaml", server.url)))
    assert stats["samples_kept"] == 3
    merged = pd.read_parquet(next((tmp_path / "out" / "corpus").glob("*.parquet")))["merged"]
    assert all(m.startswith("<think>") and "The tone and the picture agree." in m and m.endswith("</answer>") for m in merged)


def test_runs_on_the_temporary_server_send_no_flow_heartbeats():
    # heartbeats serve a lasting server; stopping their thread cost up to 1 s at the end of every run
    from prefect.settings import get_current_settings

    from flows.build_args import temporary_server_settings

    with temporary_server_settings():
        assert get_current_settings().flows.heartbeat_frequency is None


def test_identical_requests_in_flight_at_once_are_sent_once(synthetic_data, prefect_api, tmp_path):
    # four samples repeating one clip and question (ids differ): each teacher and the merger are asked
    # once, every sample gets that answer, and the summary counts three calls sent
    manifest, rows = _manifest(synthetic_data, tmp_path, 1, clips=1)
    manifest.write_text("".join(json.dumps({**rows[0], "id": f"dup{k}"}) + "\n" for k in range(4)))
    with ScriptedServer(latency=0.3) as server:
        _serve_gold(server, rows)
        stats = build_avrt(manifest=str(manifest), out=str(tmp_path / "out"),
                           config=str(write_config(tmp_path / "c.yaml", server.url)))
        counts = dict(server.counts)
    assert counts == {"vision": 1, "audio": 1, "merger": 1}
    assert _decisions(tmp_path / "out") == {f"dup{k}": ("kept", "kept") for k in range(4)}
    assert stats["samples_kept"] == 4 and stats["calls_sent"] == {"vision": 1, "audio": 1, "merger": 1}

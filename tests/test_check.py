"""`python -m flows.check`: one real sample to every replica of every endpoint, one line each."""

from __future__ import annotations

from flows.check import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, main
from tests.conftest import free_port
from tests.pipeline_helpers import merger_handler, numbered_manifest, teacher_handler, write_config


def _setup(server, synthetic_data, tmp_path, vision_says: str | None = None, audio_says: str | None = None):
    manifest, rows = numbered_manifest(synthetic_data, tmp_path, 2)
    gold = rows[0]["answer"]
    wrong = "ABCD"[("ABCD".index(gold) + 1) % 4]
    server.set_handler("vision", teacher_handler({0: vision_says or gold}))
    server.set_handler("audio", teacher_handler({0: audio_says or wrong}))
    server.set_handler("merger", merger_handler())
    return manifest, gold, wrong


def test_every_endpoint_answers(scripted_server, synthetic_data, tmp_path, capsys):
    manifest, gold, wrong = _setup(scripted_server, synthetic_data, tmp_path)
    config = write_config(tmp_path / "c.yaml", scripted_server.url)
    assert main(["--config", str(config), "--manifest", str(manifest)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{gold} (gold {gold}, right)" in out and f"{wrong} (gold {gold}, wrong)" in out
    assert "valid trace" in out and "all 3 endpoint request(s) answered" in out
    # one request per role, and each really reached the server (nothing cached between checks)
    assert sorted(r["model"] for r in scripted_server.requests) == ["audio", "merger", "vision"]
    assert main(["--config", str(config), "--manifest", str(manifest)]) == EXIT_OK
    assert len(scripted_server.requests) == 6


def test_a_down_replica_fails_with_its_url_and_the_others_still_report(scripted_server, synthetic_data, tmp_path, capsys):
    manifest, gold, _ = _setup(scripted_server, synthetic_data, tmp_path)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path / "c.yaml", scripted_server.url)
    config.write_text(config.read_text().replace(f"base_url: {scripted_server.url}",
                                                 f"base_url: [{scripted_server.url}, {closed}]", 1))
    assert main(["--config", str(config), "--manifest", str(manifest)]) == EXIT_FAILED
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith("FAIL") and closed in line and "audio" in line for line in lines), captured.out
    assert any(line.startswith("ok") and "audio" in line and scripted_server.url in line for line in lines)
    assert "1 of 4 request(s) failed" in captured.err


def test_an_answer_naming_no_option_is_a_warning(scripted_server, synthetic_data, tmp_path, capsys):
    manifest, _, _ = _setup(scripted_server, synthetic_data, tmp_path, audio_says="I like turtles.")
    config = write_config(tmp_path / "c.yaml", scripted_server.url)
    assert main(["--config", str(config), "--manifest", str(manifest), "--sample", "syn0000_000000"]) == EXIT_OK
    out = capsys.readouterr().out
    assert any(line.startswith("WARN") and "audio" in line and "no option named" in line for line in out.splitlines()), out
    assert "1 warning(s)" in out


def test_refusals_before_any_request(scripted_server, synthetic_data, tmp_path, capsys):
    manifest, _, _ = _setup(scripted_server, synthetic_data, tmp_path)
    config = write_config(tmp_path / "c.yaml", scripted_server.url)
    assert main(["--config", str(config), "--manifest", str(manifest), "--sample", "nope"]) == EXIT_REFUSED
    assert "no valid sample with id 'nope'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml"), "--manifest", str(manifest)]) == EXIT_REFUSED
    assert scripted_server.requests == []

"""The thinking teachers released since the paper: Qwen3-VL-8B/30B-A3B-Thinking and Kimi-VL-A3B-Thinking-2506
(vision), Qwen3-Omni-30B-A3B-Thinking and -Captioner (audio).

Per registry entry: the request build-avrt sends (through the official client to the scripted
server), the answer parsed from replies shaped like that model's published output, and the
``serving.launch`` command, which vLLM's own argument parser accepts (with the request bodies, in
vLLM's own environment ``.venv-vllm`` when it exists: ``make vllm-env``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from corpus.manifest import Sample
from flows.config import load_config
from flows.stages import SampleProcessor, Tally
from serving import launch
from serving.vllm_server import project_python
from teachers.reasoning import trace_text
from teachers.registry import builtin_registry
from tests.scripted_server import Reply

REPO = Path(__file__).resolve().parents[1]
CHOICES = ["dog barking", "green screen", "car horn", "rain falling"]  # gold: B
# Reply texts shaped like each model's published output (model cards and demos): Qwen3 Thinking chat
# templates open <think> in the prompt, so the reply begins inside the thinking and closes it.
QWEN3_VL = ("Got it, let's look at the frames. The screen in every frame is a flat green colour, no text.\n</think>\n\n"
            "Visual Description: Across the 8 frames the screen stays uniformly green.\n\n"
            "Reasoning: Only a green screen matches; barking, horns and rain are sounds, not visible.\n\n"
            "Answer: (B) green screen")
KIMI_2506 = ("◁think▷Okay, the user shows 8 frames of a screen. All of them are green, so (B).◁/think▷"
             "Visual Description: a green screen across all frames.\n\nReasoning: the colour never changes.\n\n"
             "Answer: (B) green screen")
QWEN3_OMNI = ("<think>\nThe audio is a steady hum with a beep; none of the sounds fit except a screen's tone... "
              "Option (B).\n</think>\n\nAudio Description: a continuous hum and a short beep.\n\n"
              "Reasoning: no bark, horn or rain can be heard.\n\nAnswer: (B) green screen")
CAPTION = ("The recording opens with a low, steady electrical hum, joined after about two seconds by a short, "
           "high-pitched beep; there is no speech, music or animal sound, and the background is dry and close.")
NEW = {  # name: (role, the reply as its server sends it, expected letter)
    "qwen3-vl-8b-thinking": ("vision", Reply(QWEN3_VL), "B"),
    "qwen3-vl-30b-a3b-thinking": ("vision", Reply(QWEN3_VL.split("</think>")[1],  # vLLM --reasoning-parser
                                                  reasoning=QWEN3_VL.split("</think>")[0], reasoning_field="reasoning"),
                                  "B"),
    "kimi-vl-a3b-thinking-2506": ("vision", Reply(KIMI_2506), "B"),
    "qwen3-omni-30b-a3b-thinking": ("audio", Reply(QWEN3_OMNI), "B"),
    "qwen3-omni-30b-a3b-captioner": ("audio", Reply(CAPTION), None),  # describes, names no option
}
# The architectures of the released checkpoints (their config.json), which vLLM must serve.
ARCHITECTURES = {"qwen3-vl-8b-thinking": "Qwen3VLForConditionalGeneration",
                 "qwen3-vl-30b-a3b-thinking": "Qwen3VLMoeForConditionalGeneration",
                 "kimi-vl-a3b-thinking-2506": "KimiVLForConditionalGeneration",
                 "qwen3-omni-30b-a3b-thinking": "Qwen3OmniMoeForConditionalGeneration",
                 "qwen3-omni-30b-a3b-captioner": "Qwen3OmniMoeForConditionalGeneration"}


def _config_data(name: str, url: str) -> dict:
    role = NEW[name][0]
    data = {"vision_teacher": {"model": "v", "base_url": url}, "audio_teacher": {"model": "a", "base_url": url},
            "merger": {"model": "m", "base_url": url}, "media": {"max_side": 160}}
    data[launch.SECTION[role]] = {"use": name, "base_url": url}
    if builtin_registry()[name].get("media_only"):
        data["filter"] = "vision"
    return data


@pytest.fixture(scope="module")
def asked(synthetic_data, tmp_path_factory):
    """Each new entry asked about one synthetic clip through the official client: ``{name: (request, result, parsed)}``."""
    from tests.scripted_server import ScriptedServer

    video = str(synthetic_data / json.loads((synthetic_data / "manifest.jsonl").read_text().splitlines()[0])["video"])
    sample = Sample(id="s0", question="What is on the screen?", choices=CHOICES, answer="B", video=video)
    out: dict[str, tuple] = {}
    with ScriptedServer() as server:
        for name, (role, reply, _) in NEW.items():
            model = builtin_registry()[name]["model"]
            server.set_handler(model, lambda request, reply=reply: reply)
            folder = tmp_path_factory.mktemp(name)
            (folder / "config.yaml").write_text(yaml.safe_dump(_config_data(name, server.url)))
            processor = SampleProcessor(load_config(folder / "config.yaml"), folder / "out")

            async def ask(processor=processor, role=role):
                try:
                    return await processor.ask_teacher(role, sample, await processor.media(sample), Tally())
                finally:
                    await processor.close()

            result, parsed = asyncio.run(ask())
            request = next(r for _, r in server.completed if r["model"] == model)
            out[name] = (request, result, parsed)
    return out


@pytest.mark.parametrize("name", sorted(NEW))
def test_request_shape(asked, name):
    request, _, _ = asked[name]
    entry = builtin_registry()[name]
    parts = request["messages"][0]["content"]
    kinds = [p["type"] for p in parts]
    if NEW[name][0] == "vision":
        assert kinds == ["image_url"] * 8 + ["text"], "8 frames as 8 images, then the prompt"
    elif entry.get("media_only"):
        assert kinds == ["input_audio"], "the Captioner takes the audio alone (its card: no text prompt)"
    else:
        assert kinds == ["input_audio", "text"]
    if "text" in kinds:
        assert parts[-1]["text"].startswith(open(REPO / "prompts" / f"{entry['prompt']}.txt").read().strip()[:80])
        assert "What is on the screen?" in parts[-1]["text"] and "(B) green screen" in parts[-1]["text"]
    sampling = {k: request.get(k) for k in ("temperature", "top_p", "max_tokens")}
    assert sampling == {k: entry.get(k) for k in sampling}, "the card's sampling reaches the request"
    assert {k: request[k] for k in entry.get("extra_body", {})} == entry.get("extra_body", {})


@pytest.mark.parametrize("name", sorted(NEW))
def test_parsed_answer_on_the_models_published_output_shape(asked, name):
    _, result, parsed = asked[name]
    expected = NEW[name][2]
    assert parsed.letter == expected
    if expected is None:  # the Captioner: its caption is the audio analysis the merger reads
        assert result.reasoning == "" and trace_text(result.reasoning, result.content) == CAPTION
    else:
        assert result.reasoning and "think" not in result.reasoning and "◁" not in result.reasoning
        assert result.content.startswith("Visual Description") or result.content.startswith("Audio Description")
        trace = trace_text(result.reasoning, result.content)
        assert trace.endswith("Answer: (B) green screen") and "</think>" not in trace and "◁/think▷" not in trace


def test_a_captioner_needs_a_filter_that_does_not_ask_for_its_answer(tmp_path):
    data = _config_data("qwen3-omni-30b-a3b-captioner", "http://h:1/v1")
    del data["filter"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="gives no answer, so filter 'both' would reject every sample: use filter: vision"):
        load_config(tmp_path / "c.yaml")
    data["audio_teacher"]["prompt"] = "audio_teacher"
    data["filter"] = "vision"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="media_only sends no text"):
        load_config(tmp_path / "c.yaml")


def _serve_flags(name: str, tmp_path: Path, capsys) -> list[str]:
    """The flags ``serving.launch --dry-run`` prints for ``name``'s server, from ``--model WEIGHTS`` on."""
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_config_data(name, "http://127.0.0.1:9/v1")))
    capsys.readouterr()
    assert launch.main(["--dry-run", "--config", str(tmp_path / f"{name}.yaml"), "--roles", NEW[name][0],
                        "--gpus", "0", "--vllm-bin", "/opt/vllm/bin/vllm"]) == 0
    (line,) = [shlex.split(x) for x in capsys.readouterr().out.splitlines() if x.startswith("CUDA_VISIBLE_DEVICES=")]
    weights = line.index(launch.load_profiles(launch.DEFAULT_PROFILES)[name]["weights"])
    return ["--model", *line[weights:]]


def test_serve_commands_carry_each_cards_flags(tmp_path, capsys):
    for name in NEW:
        flags = _serve_flags(name, tmp_path, capsys)
        profile = launch.load_profiles(launch.DEFAULT_PROFILES)[name]
        assert flags[1] == builtin_registry()[name]["model"] == profile["weights"]
        assert flags[flags.index("--limit-mm-per-prompt") + 1] == json.dumps(
            {"image": 8} if NEW[name][0] == "vision" else {"audio": 1}, separators=(",", ":"))
        assert ("--trust-remote-code" in flags) == name.startswith("kimi"), "Kimi-VL's code lives in its repo"
        assert "--reasoning-parser" not in flags, "teachers/reasoning.py splits the think formats itself"
        defaults = json.loads(flags[flags.index("--override-generation-config") + 1])
        entry = builtin_registry()[name]
        assert defaults["temperature"] == entry["temperature"] and defaults.get("top_k") == entry.get("extra_body", {}).get("top_k")


@pytest.mark.slow
def test_vllm_accepts_every_new_teachers_serve_command_and_request(asked, tiny_qwen3_omni, tmp_path, capsys):
    """vLLM's own parser, request model and registry (one run of vLLM's environment), plus the tiny
    Qwen3-Omni student's export mapped by vLLM's Qwen3-Omni implementation."""
    python = project_python()
    if python is None:
        pytest.skip("no vLLM environment (.venv-vllm: make vllm-env)")
    from student.export import export_student

    export = export_student(tiny_qwen3_omni, tmp_path / "export")
    spec = {"serve": {name: _serve_flags(name, tmp_path, capsys) for name in NEW},
            "requests": {name: asked[name][0] for name in NEW},
            "architectures": sorted(set(ARCHITECTURES.values())),
            "exports": {"qwen3-omni-student": {"file": str(export / "model.safetensors"),
                                               "module": "vllm.model_executor.models.qwen3_omni_moe_thinker",
                                               "cls": "Qwen3OmniMoeThinkerForConditionalGeneration"}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([python, str(REPO / "tests" / "vllm_checks.py"), str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=500, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in NEW:
        serve, request, entry = result["serve"][name], result["requests"][name], builtin_registry()[name]
        assert serve["ok"], serve
        profile = launch.load_profiles(launch.DEFAULT_PROFILES)[name]
        assert serve["max_model_len"] == profile["max_model_len"] > entry["max_tokens"]
        assert serve["trust_remote_code"] == bool(profile.get("trust_remote_code"))
        assert serve["generation_config"] == "vllm"
        assert request["ok"], request
        assert (request["temperature"], request["top_p"], request["max_tokens"]) == \
            (entry["temperature"], entry["top_p"], entry["max_tokens"])
        assert request["top_k"] == entry.get("extra_body", {}).get("top_k", request["top_k"])
    assert all(result["architectures"].values()), result["architectures"]
    student = result["exports"]["qwen3-omni-student"]
    assert student["dropped"] == [] and set(student["prefixes"]) == {"language_model", "audio_tower", "visual"}


def test_the_qwen3_teachers_config_builds_and_serves():
    config = load_config(REPO / "configs" / "teachers" / "qwen3.yaml")
    assert (config.vision_teacher.use, config.audio_teacher.use) == ("qwen3-vl-30b-a3b-thinking",
                                                                      "qwen3-omni-30b-a3b-thinking")
    assert config.vision_teacher.temperature == builtin_registry()["qwen3-vl-30b-a3b-thinking"]["temperature"]
    profiles = launch.load_profiles(launch.DEFAULT_PROFILES)
    assert all(getattr(config, launch.SECTION[role]).use in profiles for role in launch.ROLES)

"""The README and docs/ name only things that exist, agree with each other and with the code, and every
command they show runs in a test on tiny inputs or is listed with the reason it cannot run on a CPU machine.

Checked, in README.md and every docs/*.md: project modules run with ``-m`` (``python -m flows.check``,
``accelerate launch -m training.sft_then_grpo``), ``make`` targets, console scripts, project file
paths (``configs/train/demo.yaml``, ``bench/pipeline.py``; globs must match something), relative
links (``[…](docs/serving.md)``, images included), one path per file name across the pages and the
commands' ``--help``, and the commands themselves (``COMMANDS``).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.documented import FENCE, PAGES, ROOT, command_lines, documented_commands

DOCS = sorted((ROOT / "docs").glob("*.md"))
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
# top-level folders of the repository: a path or module starting with one of these is ours to check
PROJECT_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"outputs"}

MODULE = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"\bmake[ \t]+([a-z][\w-]*)")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*)" % "|".join(sorted(PROJECT_DIRS)))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _text(page: Path) -> str:
    return page.read_text()


def _ids(pages):
    return [str(p.relative_to(ROOT)) for p in pages]


def _code(text: str) -> str:
    """What the page shows as code: fenced blocks and inline code spans."""
    return "\n".join([body for _, body in FENCE.findall(text)] + CODE_SPAN.findall(text))


def _module_exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() or (base / "__main__.py").is_file()


def _path_exists(path: str) -> bool:
    path = path.rstrip(".")  # a path ending a sentence
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


def _commands(text: str) -> list[str]:
    """First words of the commands in shell code blocks (after ``VAR=value``)."""
    return [next((w for w in command.split() if "=" not in w), "") for command in command_lines(text)]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_modules_exist(page):
    modules = {m for m in MODULE.findall(_text(page)) if m.split(".")[0] in PROJECT_DIRS}
    assert [m for m in sorted(modules) if not _module_exists(m)] == []


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_make_targets_exist(page):
    assert set(MAKE.findall(_code(_text(page)))) - MAKE_TARGETS == set()


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_console_scripts_exist(page):
    text = _text(page)
    named = {w for w in _commands(text) if "avrt" in w}
    named |= {s for s in CODE_SPAN.findall(text) if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", s) and "avrt" in s}
    assert named - SCRIPTS == set()


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_paths_exist(page):
    text = _text(page)
    paths = {p for p in PATH.findall(text) if not re.search(r"[{}<>]|HASH", p)}
    assert [p for p in sorted(paths) if not _path_exists(p)] == []


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_relative_links_resolve(page):
    links = [link for link in LINK.findall(_text(page)) if "://" not in link]
    assert [link for link in links if not (page.parent / link).exists()] == []


def test_readme_links_every_docs_page():
    linked = {(ROOT / link).resolve() for link in LINK.findall(_text(ROOT / "README.md")) if "://" not in link}
    assert DOCS and [str(d.relative_to(ROOT)) for d in DOCS if d.resolve() not in linked] == []


def test_readme_is_a_front_page():
    assert len(_text(ROOT / "README.md").splitlines()) <= 200


def test_checks_catch_what_is_missing():
    """The patterns find what pages name, so a wrong name would fail the tests above."""
    sample = ("```bash\nbuild-avrt --config configs/nope.yaml\naccelerate launch \\\n    -m training.nope\n"
              "make nope\nS=x avrt-x\n```\n```text\nbuild-avrt, viewer  57.8\n```\nSee [x](docs/nope.md) and `avrt-nope`; make sure.")
    assert MODULE.findall(sample) == ["training.nope"] and not _module_exists("training.nope")
    assert MAKE.findall(_code(sample)) == ["nope"] and "nope" not in MAKE_TARGETS
    assert "configs/nope.yaml" in PATH.findall(sample) and not _path_exists("configs/nope.yaml")
    assert LINK.findall(sample) == ["docs/nope.md"]
    assert _commands(sample) == ["build-avrt", "accelerate", "make", "avrt-x"]
    assert "avrt-nope" in CODE_SPAN.findall(sample)


# -- every command the pages show: run by a test on tiny inputs, or why it cannot run on a CPU machine ----

SMOKE = "tests/test_real_vllm.py::test_the_documented_cpu_smoke_path_runs_as_written"
PAPER = "needs the paper's models behind vLLM on GPUs (the CPU smoke path runs the same commands on tiny ones)"
STUDENT_3B = "trains, exports or serves the 3B student: GPUs"
# (pattern searched in the command, where it runs or why not); the first match decides
COMMANDS: list[tuple[str, str]] = [
    (r"--help", "tests/test_commands.py::test_every_command_answers_help"),
    (r"^make test\b", "is this suite"),
    (r"^make demo\b", "minutes; tests/test_demo_miniature.py runs its path at the demo's size"),
    (r"^make vllm-env\b", "sets up .venv-vllm, which `make test` builds first; " + SMOKE + " uses it"),
    (r"outputs/tiny-vllm", SMOKE),
    (r"^python -m evaluation\.evaluate --model \$S ",
     "tests/test_evaluate.py::test_the_documented_evaluation_commands_run_one_after_another"),
    (r"^(\.venv/bin/)?python -m evaluation\.export_student --model (\$S|outputs/train/avrt/grpo/final) "
     r"--out outputs/export/avrt-3b", "tests/test_export_student.py::test_the_documented_export_commands_run"),
    (r"^python -m flows\.view ", "tests/test_view.py::test_cli_writes_page_and_refuses_empty_folder"),
    (r"^torchrun .* --config configs/train/tiny\.yaml$",
     "tests/test_cli_errors.py::test_the_documented_torchrun_line_reads_the_demo_outputs"),
    (r"^S=", "sets $S for the lines below it"),
    (r"^export AVRT_ROLLOUT_SECRET=", "sets the rollout servers' secret for the GPU lines below it (the guard runs on "
                                      "CPU in tests/test_rollout_vllm.py)"),
    (r"--backend vllm", "starts vLLM servers on GPUs; tests/test_evaluate_vllm.py runs the backend's servers with a "
                        "stand-in vLLM, and tests/test_real_vllm.py the same requests on real vLLM (openai backend)"),
    (r"--backend openai", "tests/test_real_vllm.py::test_student_served_by_vllm_answers_as_the_hf_backend "
                          "runs the openai backend on vLLM serving the tiny export; avrt-3b needs GPUs"),
    (r"configs/teachers/paper\.yaml|outputs/teachers\.yaml", PAPER),
    (r"hf download|prepare_af3_think", "downloads or merges the paper's weights (tens of GB, a model hub)"),
    (r"configs/recipes/avrt\.yaml|avrt-3b|/shared/avrt-start", STUDENT_3B),
    (r"--dry-run", "needs the 7B processor from the hub; tests/test_recipes.py::"
                   "test_each_recipe_trains_from_its_published_data_as_its_dry_run_shows runs each recipe's dry run"),
    (r"configs/recipes/(echoink-r1|omni-r1)", "trains a 7B student on GPUs; tests/test_recipes.py::"
     "test_each_recipe_trains_from_its_published_data_as_its_dry_run_shows runs each recipe's command on tiny models"),
    (r"^python -m evaluation\.evaluate --benchmark (avqa-r1-6k|mmau) --data (AVQA_R1|mmau) --model ",
     "evaluates 7B students on GPUs; tests/test_evaluate.py::test_a_student_is_asked_as_its_recipe_trained_it runs "
     "--recipe, --prompt and the saved recipe on the published layouts"),
    (r"^(python|bash) bench/", "a benchmark: minutes, and its figures need a quiet machine "
                               "(tests/test_bench.py checks its measures)"),
    (r"omni-3b-shape", "a Qwen2.5-Omni-3B-shaped student: about 5 GB, for bench/train_step.py"),
    (r"^prefect deployment run build-avrt/build-avrt ",
     "make demo runs it (scripts/demo.sh); tests/test_docs.py::test_pages_run_the_deployment_that_flows_serve_registers "
     "checks its names and parameters"),
    (r"^python -m flows\.build_questions --config configs/build/questions\.yaml ",
     "needs a captioner and a writer behind vLLM on GPUs; tests/test_questions.py runs the flow on the scripted "
     "server and tests/test_real_vllm.py::test_build_questions_through_real_vllm_then_build_avrt_reads_the_manifest "
     "on tiny models"),
    (r"^prefect server start|^export PREFECT_API_URL|^python -m flows\.serve",
     "the deployment's server and poller: make demo runs them (scripts/demo.sh); tests/test_build_safety.py "
     "runs the flow in-process"),
]


def _where(command: str) -> str | None:
    return next((where for pattern, where in COMMANDS if re.search(pattern, command)), None)


def test_every_documented_command_runs_in_a_test_or_says_why_not():
    commands = documented_commands()
    assert [(page, command) for page, command in commands if _where(command) is None] == []
    used = {pattern for pattern, _ in COMMANDS for _, command in commands if re.search(pattern, command)}
    assert [pattern for pattern, _ in COMMANDS if pattern not in used] == [], "entries that match no command"
    for _, where in COMMANDS:
        for path, name in re.findall(r"(tests/\w+\.py)::(\w+)", where):
            assert f"def {name}(" in (ROOT / path).read_text(), f"{path}::{name} does not exist"


# -- the pages agree with each other and with the code ---------------------------------------------

def _help_texts() -> dict[str, str]:
    """Each command's --help description (its module docstring), by module file, read without importing."""
    from tests.test_commands import MODULES

    files = [ROOT.joinpath(*m.split(".")).with_suffix(".py") for m in MODULES]
    return {str(f.relative_to(ROOT)): ast.get_docstring(ast.parse(f.read_text())) or "" for f in files if f.exists()}


def _named_files() -> dict[str, set[str]]:
    """``data/NAME`` or ``outputs/NAME`` -> the paths the pages' code and the --help texts give a file of that
    name under that folder (``outputs/teachers.yaml``, ``outputs/serve/teachers.yaml``)."""
    texts = [_code(_text(page)) for page in PAGES] + list(_help_texts().values())
    named: dict[str, set[str]] = {}
    for path in re.findall(r"(?<![\w./-])((?:data|outputs)/[\w./-]*\.(?:json|jsonl|yaml|parquet))\b", "\n".join(texts)):
        named.setdefault(path.split("/")[0] + "/" + path.rsplit("/", 1)[-1], set()).add(path)
    return named


def test_one_path_per_file_across_pages_and_help_texts():
    assert {name: sorted(paths) for name, paths in _named_files().items() if len(paths) > 1} == {}


def test_avqa_annotations_are_named_as_published():
    """AVQA's files keep the repository's layout everywhere: data/AVQA/data/annotation/{train,val}_qa.json."""
    texts = [_text(page) for page in PAGES] + list(_help_texts().values())
    named = {path for path in re.findall(r"(?<![\w./-])data/[\w./-]+\.json\b", "\n".join(texts)) if "avqa" in path.lower()}
    assert named - {"data/AVQA/data/annotation/train_qa.json", "data/AVQA/data/annotation/val_qa.json"} == set()


def test_the_readme_says_what_make_test_installs():
    makefile = (ROOT / "Makefile").read_text()
    packages = set(re.findall(r"apt-get install -y -qq (\w+)", makefile))
    line = next(c for c in command_lines(_text(ROOT / "README.md")) if c.startswith("make test"))
    assert packages and {p for p in packages if p not in line} == set()
    assert ".venv-vllm" in line and "vllm-env" in re.search(r"^test:.*$", makefile, re.M).group(0)


def test_pipeline_page_quotes_the_refusal_of_an_empty_manifest(tmp_path):
    from corpus.manifest import ManifestError, read_manifest

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ManifestError) as refused:
        read_manifest(tmp_path / "empty.jsonl")
    quoted = str(refused.value).split(": ", 1)[1]  # "the manifest has no rows"
    page = _text(ROOT / "docs" / "pipeline.md")
    assert f'("{quoted}")' in page and "(an empty manifest" not in page


def test_help_texts_point_to_pages_by_path():
    """--help sends readers to a page that exists (docs/…md), not to a README section."""
    for module, text in _help_texts().items():
        assert "the README (" not in text, module
        assert all((ROOT / page).exists() for page in re.findall(r"docs/[\w-]+\.md", text)), module
    assert {"docs/evaluation.md", "docs/serving.md"} <= set(re.findall(r"docs/[\w-]+\.md",
                                                                        _help_texts()["evaluation/export_student.py"]))


def test_the_two_ways_to_deploy_register_different_deployments():
    """flows.serve and `prefect deploy --all` (prefect.yaml) would silently replace each other under one name."""
    served = re.search(r'"--name", default="([\w-]+)"', (ROOT / "flows" / "serve.py").read_text()).group(1)
    pooled = {d["name"]: d["entrypoint"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert served == "build-avrt" and served not in pooled
    assert f"build-avrt/{served}" in _text(ROOT / "docs" / "pipeline.md")
    pages = {"flows/build_avrt.py:build_avrt": ("build-avrt", "pipeline.md"),
             "flows/build_questions.py:build_questions": ("build-questions", "questions.md")}
    assert set(pooled.values()) == set(pages)  # each flow's deployments are on its page
    assert all(f"{pages[entry][0]}/{name}" in _text(ROOT / "docs" / pages[entry][1]) for name, entry in pooled.items())


def test_the_tiny_train_config_reads_what_make_demo_writes():
    """configs/train/tiny.yaml (the torchrun line of docs/training.md) names the demo's student and corpus."""
    from training.train_config import load_config

    config = load_config(ROOT / "configs" / "train" / "tiny.yaml")
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    student = dict(re.findall(r'(--corpus|--model) "\$OUT/([\w/]+)"', demo))  # demo.student's own inputs
    assert config.corpus == f"outputs/{student['--corpus']}", "the corpus the demo's student trains on"
    assert config.model == f"outputs/{student['--model']}", "the demo's tiny student"

DEPLOYMENT_RUN = re.compile(r"prefect deployment run ([\w-]+)/([\w-]+)")
PARAMS = re.compile(r"--params '(\{.*?\})'", re.S)


def _deployment_runs(text: str) -> list[tuple[str, str, dict]]:
    """(flow, deployment, --params) of each ``prefect deployment run`` in a page's code blocks."""
    import json

    runs = []
    for _, body in FENCE.findall(text):
        for run in DEPLOYMENT_RUN.finditer(body):
            params = PARAMS.search(body, run.end())
            runs.append((*run.groups(), json.loads(params.group(1)) if params else {}))
    return runs


def test_pages_run_the_deployment_that_flows_serve_registers(monkeypatch):
    """Each `prefect deployment run` (the README shows one) names the flow and deployment that
    `python -m flows.serve` registers, with parameters the flow takes (make demo runs it so)."""
    import inspect

    import flows.serve
    from flows.build_avrt import build_avrt

    served = {}
    monkeypatch.setattr(flows.serve, "build_avrt", type("Flow", (), {"serve": lambda *a, **kw: served.update(kw)})())
    flows.serve.main([])
    parameters = set(inspect.signature(build_avrt.fn).parameters)
    assert _deployment_runs(_text(ROOT / "README.md")), "the README shows no `prefect deployment run`"
    for page in PAGES:
        for flow, deployment, params in _deployment_runs(_text(page)):
            assert flow == build_avrt.name and deployment == served["name"], page
            assert {"manifest", "out"} <= set(params) <= parameters, (page, params)

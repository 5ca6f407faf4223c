"""The README and docs/ name only things that exist, and the README links every docs/ page.

Checked, in README.md and every docs/*.md: project modules run with ``-m`` (``python -m flows.check``,
``accelerate launch -m training.sft_then_grpo``), ``make`` targets, console scripts, project file
paths (``configs/train/demo.yaml``, ``bench/pipeline.py``; globs must match something), and relative
links (``[…](docs/serving.md)``, images included).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
# top-level folders of the repository: a path or module starting with one of these is ours to check
PROJECT_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"outputs"}

MODULE = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"\bmake[ \t]+([a-z][\w-]*)")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*)" % "|".join(sorted(PROJECT_DIRS)))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)  # (language, body)


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
    """First words of the commands in fenced code blocks, output (```text) aside (continuation lines and
    comments skipped)."""
    words, continued = [], False
    for language, block in FENCE.findall(text):
        if language.strip() == "text":
            continue
        for line in block.splitlines():
            stripped = line.strip()
            if stripped and not continued and not stripped.startswith("#"):
                words.append(next((w for w in stripped.split() if "=" not in w), ""))  # after VAR=value
            continued = stripped.endswith("\\")
    return words


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
    `python -m flows.serve` registers and `prefect.yaml` deploys, with parameters the flow takes."""
    import inspect

    import yaml

    import flows.serve
    from flows.build_avrt import build_avrt

    served = {}
    monkeypatch.setattr(flows.serve, "build_avrt", type("Flow", (), {"serve": lambda *a, **kw: served.update(kw)})())
    flows.serve.main([])
    deployed = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    parameters = set(inspect.signature(build_avrt.fn).parameters)
    assert _deployment_runs(_text(ROOT / "README.md")), "the README shows no `prefect deployment run`"
    for page in PAGES:
        for flow, deployment, params in _deployment_runs(_text(page)):
            assert flow == build_avrt.name and deployment == served["name"] and deployment in deployed, page
            assert {"manifest", "out"} <= set(params) <= parameters, (page, params)

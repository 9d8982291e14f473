# `make test` is the README's test command and what CI runs: start services, install, lint, type-check, test.
.PHONY: test lint services install

install:
	pip install torch==2.13.0 && pip install -e '.[test]'

services:
	bash .ci/services.sh

lint:
	ruff check src tests
	mypy

test: services install lint
	. .ci/services.env && pytest -q

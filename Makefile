# The README's two commands: `make demo` (set up, then run the main job) and `make test`.
PYTHON ?= python3

.PHONY: setup setup-dev demo test bench

setup:
	PYTHON=$(PYTHON) scripts/setup.sh

setup-dev:
	PYTHON=$(PYTHON) scripts/setup.sh --dev

demo: setup
	$(PYTHON) -m fastbert demo

test: setup-dev
	$(PYTHON) -m pytest

bench: setup-dev
	$(PYTHON) -m fastbert bench --suite cpu

# Two commands: `make repro` (build every artifact) and `make test` (run the tests).
# Both create .venv when it is missing and install the pinned requirements and the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test setup clean-venv report-screenshot book-ch05-figure bench

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Chapter 5 end to end against the book's own code (bench/end_to_end.py). The book's package
# pins numpy<2.1 for notebooks; the three modules the benchmark runs need only torch and tiktoken.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llms-from-scratch==1.0.19
	$(BIN)/python bench/end_to_end.py

clean-venv:
	rm -rf $(VENV)

# Chapter 5's figure, docs/book-ch05-loss.png: experiment book-ch05's losses against the book's
# printed points, from its snapshot metrics/experiments/book-ch05.json (written after the run by
# `python -m scratchgpt.plumbing.results snapshot book-ch05`).
book-ch05-figure: $(STAMP)
	$(BIN)/python -m scratchgpt.plumbing.results figure book-ch05 docs/book-ch05-loss.png

# Render report/index.html in headless Chromium (Debian: apt-get install chromium) to a PNG in
# build/ (report/ is a DVC output: a file added there would make `dvc status` report it changed).
report-screenshot:
	mkdir -p build
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1200,3200 \
	  --screenshot=$(abspath build/report-screenshot.png) file://$(abspath report/index.html)

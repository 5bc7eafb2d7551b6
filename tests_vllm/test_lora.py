"""A PEFT LoRA adapter through vLLM's LoRA support (``enable_lora`` + ``LoRARequest``) on CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import ENGINE_KWARGS, shutdown
from helpers import LOGPROB_TOL, judge_ids
from vllm import SamplingParams
from vllm.inputs import TokensPrompt


@pytest.fixture(scope="module")
def lora_llm(model_dir):
    import vllm

    # max_lora_rank must be at least the adapter's r (vLLM's default is 16).
    engine = vllm.LLM(model=str(model_dir), enable_lora=True, max_lora_rank=8, max_loras=1,
                      enable_prefix_caching=True, **ENGINE_KWARGS)
    yield engine
    shutdown(engine)


@pytest.fixture(scope="module")
def peft_model(model_dir, lora_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(lora_dir)).eval()


def option_logprobs(engine, ids, option_ids, lora=None):
    params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=option_ids)
    out = engine.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False, lora_request=lora)
    return [[o.outputs[0].logprobs[0][t].logprob for t in option_ids] for o in out]


@torch.inference_mode()
def peft_option_logprobs(model, ids, option_ids):
    return [torch.log_softmax(model(torch.tensor([x])).logits[0, -1].double(), -1)[option_ids].tolist() for x in ids]


def test_lora_adapter_equals_peft_and_base_requests_stay_base(lora_llm, peft_model, tokenizer, option_ids, lora_dir,
                                                              judge_items):
    from vllm.lora.request import LoRARequest

    ids = judge_ids(tokenizer, judge_items[:6])
    adapter = LoRARequest("adapter", 1, str(lora_dir))
    with_lora = option_logprobs(lora_llm, ids, option_ids, adapter)
    base = option_logprobs(lora_llm, ids, option_ids)
    want_lora = peft_option_logprobs(peft_model, ids, option_ids)
    with peft_model.disable_adapter():
        want_base = peft_option_logprobs(peft_model, ids, option_ids)

    def diff(a, b):
        return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s))

    assert diff(with_lora, want_lora) < LOGPROB_TOL
    assert diff(base, want_base) < LOGPROB_TOL
    assert diff(with_lora, base) > 50 * LOGPROB_TOL  # the adapter really changes the judgments

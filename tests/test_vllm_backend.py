"""The vLLM backend, driven offline through a stand-in ``vllm`` module.

vLLM needs a GPU, so these tests replace it with the smallest module that answers the same calls
(``LLM(...)``, ``LLM.get_tokenizer``, ``LLM.generate`` with ``prompt_logprobs`` or greedy
decoding, ``SamplingParams``, ``LoRARequest``). For prompt log-probabilities it computes what
vLLM documents it returns (per prompt position, the log-probability of the prompt's own token)
from a transformers model; for decoding it gives scripted answers. So the tests check the
backend's own work: which tokens it sends, which positions it sums, how it renormalises, parses
and records, and the engine options it asks for. Its scores must equal the transformers
evaluator's.
"""

import json
import sys
import types

import pytest
import torch

from vat_hf.evaluation import Evaluator
from vat_hf.evaluation.vllm_backend import VLLMEvaluator, adapter_rank
from vat_hf.prompts import JudgePrompt, judge_text

from test_evaluator_scale import TOL, few_shot_prompt, items, max_diff


class _Logprob:
    def __init__(self, logprob):
        self.logprob = logprob


class _SamplingParams:
    def __init__(self, max_tokens=16, temperature=1.0, prompt_logprobs=None, logprobs=None):
        self.max_tokens, self.temperature, self.prompt_logprobs = max_tokens, temperature, prompt_logprobs


class _LoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_path = lora_path


# What the stand-in "generates" for generate mode, prompt after prompt: a rating, a rating inside
# a sentence, and an answer without a number.
ANSWERS = ("4", "2, mostly acceptable", "hard to say")


def _stand_in_vllm(loaded, created):
    """A ``vllm`` module whose ``LLM`` scores prompts with ``loaded`` (a
    :class:`vat_hf.models.LoadedModel`) and answers generation requests with ``ANSWERS``."""
    model, tokenizer = loaded.model, loaded.tokenizer

    class LLM:
        def __init__(self, model=None, dtype="auto", **kwargs):
            self.kwargs = dict(kwargs, model=model, dtype=dtype)
            self.llm_engine = types.SimpleNamespace(
                model_config=types.SimpleNamespace(max_model_len=kwargs.get("max_model_len", 4096)))
            self.prompts = []
            created.append(self)

        def get_tokenizer(self):
            return tokenizer

        @torch.no_grad()
        def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
            results = []
            for prompt in prompts:
                self.prompts.append(prompt)
                # vLLM tokenizes a string prompt itself, with the tokenizer's special tokens.
                ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else tokenizer.encode(prompt)
                ids = list(ids)
                if sampling_params.prompt_logprobs is not None:
                    logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
                    per_position = [None] + [{ids[t]: _Logprob(logprobs[t - 1, ids[t]].item())} for t in range(1, len(ids))]
                    results.append(types.SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=per_position,
                                                         outputs=[types.SimpleNamespace(text="")]))
                else:  # greedy decoding: scripted answers, in the order the prompts arrive
                    text = ANSWERS[(len(self.prompts) - 1) % len(ANSWERS)]
                    results.append(types.SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=None,
                                                         outputs=[types.SimpleNamespace(text=text)]))
            return results

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, _SamplingParams
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = _LoRARequest
    lora.request = lora_request
    vllm.lora = lora
    return {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": lora_request}


@pytest.fixture
def stand_in(sharp_model, monkeypatch):
    created = []
    for name, module in _stand_in_vllm(sharp_model, created).items():
        monkeypatch.setitem(sys.modules, name, module)
    return created


def bad_items():
    its = items(4)
    its[1] = dict(its[1], action="   ")
    return its


def test_scoring_equals_the_transformers_evaluator(sharp_model, tiny_model_dir, stand_in):
    prompt = few_shot_prompt(2)
    reference = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, progress=False).judge(items())
    backend = VLLMEvaluator(str(tiny_model_dir), prompt=prompt, progress=False)
    records = backend.judge(items())
    assert backend.mode == "logprob" and {r["mode"] for r in records} == {"logprob"}
    assert max_diff(reference, records) < TOL
    assert max(abs(a["option_mass"] - b["option_mass"]) for a, b in zip(reference, records)) < TOL
    assert max(abs(a["rating"] - b["rating"]) for a, b in zip(reference, records)) < TOL
    assert [r["id"] for r in records] == [i["id"] for i in items()]
    # Five prompts per item, sent as token ids: the prompt followed by each option.
    llm = stand_in[-1]
    assert len(llm.prompts) == 5 * len(items()) and all(isinstance(p, dict) for p in llm.prompts)
    # Prompt log-probabilities are not served from vLLM's prefix cache: scoring turns it off.
    assert llm.kwargs["enable_prefix_caching"] is False


def test_multitoken_mode_equals_the_transformers_evaluator(sharp_model, tiny_model_dir, stand_in):
    reference = Evaluator(sharp_model.model, sharp_model.tokenizer, mode="logprob-multitoken", progress=False).judge(items())
    records = VLLMEvaluator(str(tiny_model_dir), mode="logprob-multitoken", progress=False).judge(items())
    assert {r["mode"] for r in records} == {"logprob-multitoken"}
    assert max_diff(reference, records) < TOL


def test_generate_mode_sends_token_ids_and_parses_answers(sharp_model, tiny_model_dir, stand_in):
    backend = VLLMEvaluator(str(tiny_model_dir), mode="generate", progress=False)
    records = backend.judge(bad_items())
    llm = stand_in[-1]
    assert llm.kwargs["enable_prefix_caching"] is True  # safe without prompt log-probabilities
    # The chat-templated text is encoded here, without special tokens, exactly as the transformers
    # path reads it, and handed over as token ids (vLLM would tokenize a string again).
    tok = sharp_model.tokenizer
    judged = [item for item in bad_items() if item["action"].strip()]
    assert [p["prompt_token_ids"] for p in llm.prompts] == [
        tok.encode(judge_text(tok, JudgePrompt(), item), add_special_tokens=False) for item in judged]
    assert [r["rating"] for r in records] == [4.0, None, 2.0, None]
    assert all(r["mode"] == "generate" for r in records)
    assert "empty action" in records[1]["missing_reason"]
    assert "no number" in records[3]["missing_reason"] and records[3]["generated"] == "hard to say"


def test_bad_input_is_recorded_and_the_rest_is_judged(sharp_model, tiny_model_dir, stand_in):
    its = bad_items()
    tokenizer = sharp_model.tokenizer
    lengths = [len(tokenizer.encode(judge_text(tokenizer, JudgePrompt(), item), add_special_tokens=False))
               for item in its]
    records = VLLMEvaluator(str(tiny_model_dir), max_length=max(lengths) - 1, progress=False).judge(its)
    reasons = [r.get("missing_reason") or "" for r in records]
    assert "empty action" in reasons[1]
    # The longest prompt does not fit with its option; the shorter ones are judged.
    longest = lengths.index(max(lengths))
    assert "more than max_length" in reasons[longest] and records[longest]["rating"] is None
    judged = [k for k, r in enumerate(records) if r["rating"] is not None]
    assert judged and all(lengths[k] < max(lengths) for k in judged)


def test_adapter_rank_raises_vllms_lora_limit(tmp_path, tiny_model_dir, stand_in):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 64, "peft_type": "LORA"}))
    assert adapter_rank(str(adapter)) == 64 and adapter_rank(str(tmp_path)) is None
    VLLMEvaluator(str(tiny_model_dir), adapter=str(adapter), progress=False)
    assert stand_in[-1].kwargs["enable_lora"] is True and stand_in[-1].kwargs["max_lora_rank"] == 64

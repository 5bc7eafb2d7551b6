"""Optional vLLM backend: the same judgments through vLLM, for users who have it.

    pip install 'vat-hf[vllm]'
    python -m vat_hf.evaluate --backend vllm --model Qwen/Qwen2.5-7B-Instruct -o judgments.jsonl

How the options are scored: for each item, the prompt followed by each option is sent as a
prompt with ``SamplingParams(max_tokens=1, prompt_logprobs=0)``, which returns the
log-probability of every prompt token; the option's score is the sum over its tokens (one token
for most tokenizers), exactly the ``logprob`` / ``logprob-multitoken`` scores of the transformers
evaluator, and the five are renormalised the same way. ``mode="generate"`` uses greedy decoding
(``temperature=0``) and the same parser as the transformers evaluator. Prompts go to vLLM as
token ids encoded here without special tokens, as in the transformers path: a chat-templated
text handed to vLLM as a string would be tokenized again with the tokenizer's special tokens
(a second BOS for Llama 3).

Automatic prefix caching is turned *off* for the scoring modes and left on for ``generate``.
vLLM does not cache prompt log-probabilities: a request that asks for them recomputes its whole
prompt even on a cache hit (vLLM's V1 guide, "Prompt Logprobs with Prefix Caching"), so the cache
cannot save work here, and with it on the returned prompt log-probabilities have been seen to
depend on the order of requests (vllm-project/vllm#42019, open in 2026). Each item therefore
costs five prefills of its prompt; pass ``enable_prefix_caching=True`` to override.

An adapter is served with vLLM's LoRA support; ``max_lora_rank`` is raised to the adapter's own
rank (vLLM's default of 16 refuses the r=64 QLoRA recipes' adapters).

Records have the same fields and ``mode`` values as :class:`vat_hf.evaluation.Evaluator`'s, and
bad input (empty action, over-long prompt) gets the same recorded, explained outcomes. The
judgment cache and data parallelism of the transformers path are not used here: vLLM does its
own batching and tensor parallelism (``tensor_parallel_size=``). vLLM itself needs a GPU; the
test suite drives this class through a stand-in ``vllm`` module backed by a transformers model
(``tests/test_vllm_backend.py``) and checks that its judgments equal the transformers
evaluator's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from vat_hf.evaluation.prefix import common_prefix_length
from vat_hf.evaluation.task import (
    MODE_GENERATE,
    JudgeStats,
    bad_item_reason,
    check_item_ids,
    distribution_outputs,
    generated_outputs,
    make_record,
    missing_outputs,
    resolve_mode,
    too_long_outputs,
)
from vat_hf.prompts import OPTIONS, JudgePrompt, judge_text

VLLM_INSTALL_HINT = "the vLLM backend needs vllm: pip install 'vat-hf[vllm]' (on a machine with a supported GPU)"


def require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise ImportError(VLLM_INSTALL_HINT) from err
    return vllm


def adapter_rank(adapter: str) -> Optional[int]:
    """The LoRA rank ``r`` in a local adapter folder's ``adapter_config.json`` (None if unknown)."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        return None
    rank = json.loads(config.read_text(encoding="utf-8")).get("r")
    return int(rank) if rank else None


class VLLMEvaluator:
    """Judges items through a ``vllm.LLM``; ``judge(items)`` returns records like
    :meth:`vat_hf.evaluation.Evaluator.judge`."""

    def __init__(self, model: Optional[str], prompt: Optional[JudgePrompt] = None, adapter: Optional[str] = None,
                 dtype: str = "auto", mode: str = "auto", max_length: Optional[int] = None, truncation: str = "refuse",
                 max_new_tokens: int = 8, progress: bool = True, **llm_kwargs):
        vllm = require_vllm()
        from vat_hf.models.loading import resolve_model_path

        self._vllm = vllm
        self.prompt = prompt or JudgePrompt()
        self.model_path = resolve_model_path(model)
        self.adapter = adapter
        self.truncation = truncation
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        llm_kwargs.setdefault("enable_prefix_caching", mode == MODE_GENERATE)
        if adapter:
            llm_kwargs.setdefault("enable_lora", True)
            rank = adapter_rank(adapter)
            if rank:
                llm_kwargs.setdefault("max_lora_rank", max(16, rank))
        if max_length:
            llm_kwargs.setdefault("max_model_len", max_length)
        self.llm = vllm.LLM(model=self.model_path, dtype=dtype, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_length = max_length or getattr(self.llm.llm_engine.model_config, "max_model_len", None)
        self.template = "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"
        self.mode, _ = resolve_mode(self.tokenizer, mode)
        self.stats = JudgeStats()
        self.cache = None

    def _lora(self):
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("adapter", 1, self.adapter)

    def judge(self, items: Sequence[Mapping]) -> List[Dict]:
        started = time.perf_counter()
        check_item_ids(items)
        outputs: List[Optional[Dict]] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            reason = bad_item_reason(item)
            if reason:
                outputs[i] = missing_outputs(reason, self.mode)
            else:
                todo.append(i)
        texts = {i: judge_text(self.tokenizer, self.prompt, items[i]) for i in todo}
        if self.mode == MODE_GENERATE:
            self._generate(items, texts, outputs)
        else:
            self._score(items, texts, outputs)
        prompt_hash = self.prompt.fingerprint()
        records = [make_record(item, out, prompt_hash) for item, out in zip(items, outputs)]
        self.stats.n_items += len(items)
        self.stats.n_computed += len(todo)
        self.stats.n_missing += sum(1 for r in records if r["rating"] is None)
        self.stats.seconds += time.perf_counter() - started
        return records

    def _fits(self, i, items, n_tokens, outputs, reserve: int = 0) -> bool:
        if self.max_length is not None and n_tokens + reserve > self.max_length and self.truncation == "refuse":
            outputs[i] = too_long_outputs(items[i], n_tokens, self.max_length, self.mode, reserved=reserve)
            return False
        return True

    def _score(self, items, texts, outputs) -> None:
        sampling = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        prompts, owners = [], []
        for i, text in texts.items():
            full = [self.tokenizer.encode(text + o, add_special_tokens=False) for o in OPTIONS]
            n = min(common_prefix_length(full), min(len(f) for f in full) - 1)
            if not self._fits(i, items, max(len(f) for f in full), outputs):
                continue
            limit = self.max_length
            for k, ids in enumerate(full):
                if limit is not None and len(ids) > limit:  # truncation="left": keep the last tokens
                    ids = ids[-limit:]
                prompts.append({"prompt_token_ids": ids})
                owners.append((i, k, len(full[k]) - n, n))
        results = self.llm.generate(prompts, sampling, use_tqdm=self.progress, lora_request=self._lora())
        scores: Dict[int, List[float]] = {}
        lengths: Dict[int, int] = {}
        for (i, k, cont_len, n), result in zip(owners, results):
            ids = result.prompt_token_ids
            total = 0.0
            for pos in range(len(ids) - cont_len, len(ids)):
                total += result.prompt_logprobs[pos][ids[pos]].logprob
            scores.setdefault(i, [0.0] * len(OPTIONS))[k] = total
            lengths[i] = n
        for i, logprobs in scores.items():
            outputs[i] = {**distribution_outputs(logprobs, self.mode), "n_tokens": lengths[i]}

    def _generate(self, items, texts, outputs) -> None:
        sampling = self._vllm.SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        encoded = {i: self.tokenizer.encode(text, add_special_tokens=False) for i, text in texts.items()}
        order = [i for i in texts if self._fits(i, items, len(encoded[i]), outputs, reserve=self.max_new_tokens)]
        prompts = [{"prompt_token_ids": encoded[i]} for i in order]
        results = self.llm.generate(prompts, sampling, use_tqdm=self.progress, lora_request=self._lora())
        for i, result in zip(order, results):
            outputs[i] = generated_outputs(result.outputs[0].text, n_tokens=len(result.prompt_token_ids))

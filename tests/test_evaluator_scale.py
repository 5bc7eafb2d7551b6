"""The evaluator at scale: batching, prefix reuse, fallback scoring, bad input, cache and resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from vat_hf.evaluation import Evaluator, parse_rating
from vat_hf.evaluation import judge as judge_module
from vat_hf.evaluation import task as task_module
from vat_hf.evaluation.cache import JudgmentCache
from vat_hf.evaluation.prefix import PrefixCache, common_prefix_length
from vat_hf.evaluation.run import AdapterNotFoundError, check_adapter
from vat_hf.prompts import JudgePrompt, judge_text

TOL = 1e-4


def items(n=9, offset=0):
    # Scenarios of different lengths so batches need padding.
    return [{"id": f"i{k}", "scene_id": f"s{k % 3}", "scenario": "Someone must decide what to do here. " * (1 + k % 5),
             "action": f"I do thing number {k}, carefully.", "value": "Power", "polarity": 1 if k % 2 else -1,
             "split": "test"} for k in range(offset, offset + n)]


def few_shot_prompt(k=4):
    demos = tuple((f"Scenario: a demonstration scene {j} " * 6 + f"\nAction: I act {j}.", f"Rating: {1 + j % 5}")
                  for j in range(k))
    return JudgePrompt(system="You value kindness above all.", demonstrations=demos, name=f"test-k{k}")


def max_diff(a, b, key="probs"):
    return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r[key], s[key]))


def one_by_one(model, prompt, its):
    return Evaluator(model.model, model.tokenizer, prompt=prompt, max_batch_size=1, prefix_reuse=False,
                     progress=False).judge(its)


# -- batching and prefix reuse ------------------------------------------------------------------

def test_sorted_token_budget_batches_equal_one_by_one(sharp_model):
    its = items(11)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, max_batch_tokens=300, max_batch_size=4, progress=False)
    batched = ev.judge(its)
    assert ev.stats.batches > 3  # really batched, several rows per batch
    single = one_by_one(sharp_model, JudgePrompt(), its)
    assert [r["id"] for r in batched] == [i["id"] for i in its]
    assert max_diff(batched, single) < TOL
    assert max(abs(a["rating"] - b["rating"]) for a, b in zip(batched, single)) < TOL
    assert max(abs(a["option_mass"] - b["option_mass"]) for a, b in zip(batched, single)) < TOL
    # The distributions differ between items, so the comparison is not vacuous.
    assert max_diff(single[:1] * len(single), single) > 1e-3


def test_prefix_reuse_equals_full_reencoding(sharp_model):
    prompt = few_shot_prompt(4)
    its = items(9)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, prefix_reuse=True, max_batch_size=4,
                   progress=False)
    reused = ev.judge(its)
    assert ev.stats.n_prefix == len(its) and ev.stats.prefix_tokens > 150
    # The prefix is a token prefix of every item's full encoding.
    encoded = ev.encode(its)
    assert all(e[:len(ev._prefix)] == ev._prefix.ids for e in encoded)
    assert ev.stats.tokens_read < sum(len(e) for e in encoded) - 8 * ev.stats.prefix_tokens
    full = one_by_one(sharp_model, prompt, its)
    assert max_diff(reused, full) < TOL
    assert max(abs(a["rating"] - b["rating"]) for a, b in zip(reused, full)) < TOL
    assert max(abs(a["option_mass"] - b["option_mass"]) / b["option_mass"] for a, b in zip(reused, full)) < TOL


def test_items_not_starting_with_the_prefix_are_encoded_in_full(sharp_model):
    """A cached prefix that runs into the item text (as BPE merges at the boundary would make it)
    is used only by the items that really start with its tokens; the rest are encoded in full."""
    prompt = few_shot_prompt(2)
    its = items(6)
    its[-1] = {**its[-1], "scenario": "A different opening entirely."}
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, prefix_reuse=True, progress=False)
    encoded = ev.encode(its)
    n = common_prefix_length(encoded[:-1])
    assert n > common_prefix_length(encoded)
    ev._prefix = PrefixCache(encoded[0][:n])
    out = ev.judge(its)
    assert ev.stats.n_prefix == len(its) - 1
    assert max_diff(out, one_by_one(sharp_model, prompt, its)) < TOL


def test_prefix_check_falls_back_when_reuse_would_change_results(sharp_model, monkeypatch):
    prompt = few_shot_prompt(2)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, progress=False)
    original = judge_module.prefix_batch

    def restarting(*args, **kwargs):
        cache, mask, offsets = original(*args, **kwargs)
        return cache, mask, offsets * 0

    # Simulate a model for which cache reuse is wrong: positions after the prefix restart at 0
    # (in both batch layouts: the shared-prefix attention's, then the stitched one's).
    monkeypatch.setattr(judge_module, "prefix_batch", restarting)
    out = ev.judge(items(4))
    monkeypatch.setattr(judge_module, "prefix_batch", original)
    assert ev.prefix_reuse is False and ev.stats.n_prefix == 0
    assert max_diff(out, one_by_one(sharp_model, prompt, items(4))) < TOL


# -- fallback scoring ---------------------------------------------------------------------------

def test_multitoken_scoring_agrees_with_single_token_scoring(sharp_model):
    prompt = few_shot_prompt(2)
    single = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, progress=False).judge(items())
    multi = Evaluator(sharp_model.model, sharp_model.tokenizer, prompt=prompt, mode="logprob-multitoken",
                      progress=False).judge(items())
    assert {r["mode"] for r in single} == {"logprob"} and {r["mode"] for r in multi} == {"logprob-multitoken"}
    assert max_diff(single, multi) < 1e-5
    assert max(abs(a["option_mass"] - b["option_mass"]) for a, b in zip(single, multi)) < 1e-6
    assert [a["argmax"] for a in single] == [b["argmax"] for b in multi]


def test_auto_mode_falls_back_to_multitoken(sharp_model, monkeypatch):
    def not_single(tokenizer, options=None):
        raise task_module.OptionTokenError("options are two tokens")

    monkeypatch.setattr(task_module, "option_token_ids", not_single)
    ev = Evaluator(sharp_model.model, sharp_model.tokenizer, progress=False)
    assert ev.mode == "logprob-multitoken"
    with pytest.raises(task_module.OptionTokenError):
        Evaluator(sharp_model.model, sharp_model.tokenizer, mode="logprob", progress=False)


def test_multitoken_options_equal_summed_logprobs_of_a_full_forward(sharp_model, monkeypatch):
    """Options of several tokens: the two-stage scoring (prompt once, then the options' remaining
    tokens against its cache) equals summing log-probs from a plain forward of prompt + option."""
    options = ("1 - bad", "2 - poor one", "3", "4 - good", "5 - very good indeed")
    monkeypatch.setattr(task_module, "OPTIONS", options)
    tok, model = sharp_model.tokenizer, sharp_model.model
    prompt = few_shot_prompt(2)
    its = items(5)
    out = Evaluator(model, tok, prompt=prompt, mode="logprob-multitoken", max_batch_size=3, progress=False).judge(its)
    for item, record in zip(its, out):
        text = judge_text(tok, prompt, item)
        full = [tok(text + o, add_special_tokens=False)["input_ids"] for o in options]
        n = min(common_prefix_length(full), min(len(f) for f in full) - 1)
        assert max(len(f) - n for f in full) > 1  # really multi-token
        scores = []
        for ids in full:
            with torch.inference_mode():
                logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            scores.append(sum(float(logp[j - 1, ids[j]]) for j in range(n, len(ids))))
        expected = torch.tensor(scores, dtype=torch.float64).softmax(0)
        assert record["option_logprobs"] == pytest.approx(scores, abs=1e-3)
        assert record["probs"] == pytest.approx(expected.tolist(), abs=TOL)
        assert record["option_mass"] == pytest.approx(float(torch.tensor(scores, dtype=torch.float64).exp().sum()), rel=1e-3)


class ScriptedModel(torch.nn.Module):
    """Wraps a causal LM and forces its next token: ``script(last_input_id) -> token id``."""

    def __init__(self, inner, script):
        super().__init__()
        self.inner, self.script = inner, script
        self.config = inner.config

    def get_base_model(self):
        return self.inner

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        last = kwargs["input_ids"][:, -1].tolist()
        for row, token in enumerate(last):
            out.logits[row, -1, self.script(token)] += 1000.0
        return out


def test_generate_mode_parses_ratings_and_records_unparseable_answers(sharp_model):
    tok = sharp_model.tokenizer
    four, eos, letter = tok.convert_tokens_to_ids("4"), tok.eos_token_id, tok.encode("x", add_special_tokens=False)[0]
    says_four = ScriptedModel(sharp_model.model, lambda last: eos if last == four else four)
    out = Evaluator(says_four, tok, mode="generate", progress=False).judge(items(4))
    assert [r["rating"] for r in out] == [4.0] * 4
    assert all(r["mode"] == "generate" and r["generated"] == "4" and r["probs"] is None for r in out)
    rambles = ScriptedModel(sharp_model.model, lambda last: letter)
    out = Evaluator(rambles, tok, mode="generate", max_new_tokens=5, progress=False).judge(items(3))
    assert all(r["rating"] is None and "no number" in r["missing_reason"] and r["generated"] == "xxxxx" for r in out)
    assert parse_rating("Rating: 7") == (None, "the answer's first number '7' is not an integer from 1 to 5")
    assert parse_rating("5 - completely acceptable") == (5, None)


# -- bad input ----------------------------------------------------------------------------------

def test_bad_items_are_recorded_and_the_rest_is_judged(tiny_model):
    its = items(5)
    its[1] = {**its[1], "action": "  "}
    its[3] = {**its[3], "scenario": "A very long scenario. " * 40}
    ev = Evaluator(tiny_model.model, tiny_model.tokenizer, max_length=150, progress=False)
    out = ev.judge(its)
    assert [r["id"] for r in out] == [i["id"] for i in its]
    assert out[1]["rating"] is None and "'i1': empty action" in out[1]["missing_reason"]
    assert out[3]["rating"] is None and "'i3'" in out[3]["missing_reason"] and "max_length 150" in out[3]["missing_reason"]
    assert all(out[k]["rating"] is not None for k in (0, 2, 4))
    left = Evaluator(tiny_model.model, tiny_model.tokenizer, max_length=150, truncation="left", progress=False).judge(its)
    assert left[3]["rating"] is not None and left[3]["truncated_tokens"] > 0 and left[3]["n_tokens"] == 150
    with pytest.raises(ValueError, match="item 0 has no 'id'"):
        ev.judge([{"scenario": "s", "action": "a"}])


def test_tokenizer_without_chat_template_uses_the_plain_template(tiny_model_dir):
    from vat_hf.models import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    loaded.tokenizer.chat_template = None
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=few_shot_prompt(2), progress=False)
    assert ev.template == "plain"
    assert ev.texts(items(1))[0].startswith("You value kindness above all.")
    assert ev.texts(items(1))[0].endswith("Assistant: Rating: ")
    out = ev.judge(items(3))
    assert all(r["rating"] is not None for r in out)


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        check_adapter(str(tmp_path / "no-such-adapter"))
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(AdapterNotFoundError, match="no adapter_config.json"):
        check_adapter(str(tmp_path / "not-an-adapter"))
    check_adapter("someone/some-adapter")  # a Hub id is left to PEFT


# -- cache and resume ---------------------------------------------------------------------------

def test_cache_reuses_finished_items_and_keys_on_model_and_prompt(tiny_model, tmp_path):
    its = items(7)
    first = Evaluator(tiny_model.model, tiny_model.tokenizer, cache_dir=tmp_path, progress=False)
    a = first.judge(its)
    again = Evaluator(tiny_model.model, tiny_model.tokenizer, cache_dir=tmp_path, progress=False)
    b = again.judge(its + items(2, offset=7))
    assert again.stats.n_cached == 7 and again.stats.n_computed == 2
    assert b[:7] == a
    other_prompt = Evaluator(tiny_model.model, tiny_model.tokenizer, prompt=few_shot_prompt(1), cache_dir=tmp_path,
                             progress=False)
    other_prompt.judge(its)
    assert other_prompt.stats.n_cached == 0
    other_adapter = Evaluator(tiny_model.model, tiny_model.tokenizer, cache_dir=tmp_path, adapter_id="lora-x",
                              progress=False)
    other_adapter.judge(its)
    assert other_adapter.stats.n_cached == 0
    # Item metadata is always the current item's, even for a cached judgment of the same text.
    renamed = [{**i, "id": i["id"] + "-renamed"} for i in its]
    assert [r["id"] for r in again.judge(renamed)] == [i["id"] for i in renamed]


KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from vat_hf.evaluation import Evaluator
    from vat_hf.evaluation import judge as judge_module
    from vat_hf.models import load_model

    model_dir, cache_dir, items_path, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    items = json.load(open(items_path))
    loaded = load_model(model_dir, device="cpu", dtype="float32")
    calls = {"n": 0}
    launch = Evaluator._launch_logprob

    def dying(self, chunk, use_prefix):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real kill
        return launch(self, chunk, use_prefix)

    Evaluator._launch_logprob = dying
    Evaluator(loaded.model, loaded.tokenizer, max_batch_size=2, cache_dir=cache_dir, progress=False).judge(items)
""")


def test_killed_run_resumes_recomputing_only_missing_items(tiny_model, tiny_model_dir, tmp_path):
    its = items(12)
    (tmp_path / "items.json").write_text(json.dumps(its))
    cache_dir = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tiny_model_dir), str(cache_dir),
                           str(tmp_path / "items.json"), "4"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    parts = list(cache_dir.glob("judgments/*/part-0.jsonl"))
    assert len(parts) == 1
    lines = parts[0].read_text().splitlines()
    # Batches 1-2 were appended; batch 3 was in flight when batch 4 was launched and the kill came.
    assert len(lines) == 4
    # A kill in the middle of a write leaves a torn last line: ignored on read, cut before appending.
    with open(parts[0], "a") as handle:
        handle.write('{"key": "torn')

    counted = {"rows": 0}
    original = Evaluator._forward

    def counting(self, requests, use_prefix, want_cache=False):
        counted["rows"] += len(requests)
        return original(self, requests, use_prefix, want_cache)

    Evaluator._forward = counting
    try:
        resumed_ev = Evaluator(tiny_model.model, tiny_model.tokenizer, max_batch_size=2, cache_dir=cache_dir, progress=False)
        resumed = resumed_ev.judge(its)
    finally:
        Evaluator._forward = original
    assert resumed_ev.stats.n_cached == 4 and resumed_ev.stats.n_computed == 8
    # The 8 missing items, plus the one-time checks (one item encoded in full, and continued from
    # each prefix level: the root and its scene's) and one row per node the scene pass runs (scenes,
    # their stems, action nodes).
    stats = resumed_ev.stats
    assert stats.n_prefix and stats.n_scene_prefix  # these items share scenarios: both levels are in play
    assert counted["rows"] == 8 + 3 + stats.scene_prefixes + stats.stem_prefixes + stats.action_prefixes
    uninterrupted = Evaluator(tiny_model.model, tiny_model.tokenizer, max_batch_size=2, progress=False).judge(its)
    assert [r["id"] for r in resumed] == [r["id"] for r in uninterrupted]
    assert max_diff(resumed, uninterrupted) < 1e-5
    text = parts[0].read_text()
    assert "torn" not in text and len(text.splitlines()) == 12
    assert len(resumed_ev.cache.load()) == 12
    # A third run computes nothing.
    third = Evaluator(tiny_model.model, tiny_model.tokenizer, cache_dir=cache_dir, progress=False)
    assert third.judge(its) == resumed and third.stats.n_computed == 0


# -- command line, logs and results -------------------------------------------------------------

def test_vat_hf_eval_writes_judgments_samples_and_results(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from vat_hf.cli import app
    from vat_hf.io import read_json, read_jsonl

    out = tmp_path / "run" / "judgments.jsonl"
    args = ["eval", "--model", str(tiny_model_dir), "--max-scenes", "1", "--dtype", "float32", "-o", str(out),
            "--log-samples", "--cache-dir", str(tmp_path / "cache"), "--target-value", "Power", "--k-shots", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    samples = read_jsonl(out.parent / "samples_judgments.jsonl")
    results = read_json(out.parent / "results_judgments.json")
    assert len(records) == len(samples) == results["summary"]["n_items"] == 20
    assert samples[0]["item"]["id"] == records[0]["id"] and len(samples[0]["prompt_hash"]) == 64
    assert samples[0]["probs"] == records[0]["probs"] and len(samples[0]["option_logprobs"]) == 5
    assert results["config"]["arguments"]["k_shots"] == 2 and results["seed"] == 0 and results["mode"] == "logprob"
    assert results["versions"]["transformers"] and results["prompt"]["fingerprint"] == records[0]["prompt_hash"]
    assert results["stats"]["n_computed"] == 20 and results["stats"]["prefix_tokens"] > 100
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert read_json(out.parent / "results_judgments.json")["stats"]["n_cached"] == 20
    missing = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "nope"),
                                       "-o", str(out)])
    assert missing.exit_code == 1 and "error: adapter path" in missing.output and "Traceback" not in missing.output


def test_vllm_backend_says_how_to_install_vllm(monkeypatch):
    import builtins

    from vat_hf.evaluation import vllm_backend

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match=r"pip install 'vat-hf\[vllm\]'"):
        vllm_backend.VLLMEvaluator("some/model")


def test_cache_fingerprints_tell_adapters_apart(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from vat_hf.evaluation.cache import adapter_fingerprint, model_fingerprint
    from vat_hf.models import load_model

    base = load_model(str(tiny_model_dir), device="cpu", dtype="float32").model
    plain_fp = model_fingerprint(base)
    assert adapter_fingerprint(base) == ""
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False), adapter_name="first")
    model.add_adapter("second", LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    model.set_adapter("first")
    fp_a = adapter_fingerprint(model)
    model.set_adapter("second")
    fp_b = adapter_fingerprint(model)
    assert fp_a and fp_b and fp_a != fp_b
    with model.disable_adapter():
        assert adapter_fingerprint(model) == ""
    assert model_fingerprint(model) == plain_fp  # the base weights are the same under the adapter

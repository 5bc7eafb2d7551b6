"""The shared-prefix attention: rows packed into one sequence, the shared prefix read once per
layer for all of them, its part of the softmax merged with each row's own part by log-sum-exp.

It must change the cost of judging, never the judgments: every test compares with full encoding
(no prefix reuse, one item per batch) or with plain attention over the concatenated keys."""

import logging

import pytest
import torch

from vat_hf.evaluation import Evaluator
from vat_hf.evaluation import prefix as prefix_module
from vat_hf.evaluation.prefix import (
    SHARED_PREFIX_ATTENTION,
    SharedPrefixAttentionError,
    SharedPrefixBatch,
    attend_with_copied_prefix,
    attend_with_shared_prefix,
    copy_the_prefix,
    attention_implementation,
    own_attention_mask,
)

from test_prefix_scene import (
    assert_same_judgments,
    few_shot_prompt,
    full_encoding,
    max_diff,
    record_attention_forms,
    scene_items,
)


def mixed_items():
    """Three scenes of two items (scene prefixes of different lengths), a scene of its own (root
    only) and actions of different lengths: batches mix scenes and need padding."""
    return scene_items(3, 2) + [{**scene_items(1, 1, prefix="solo")[0], "scenario": "A scene of its own, alone."}]


@pytest.fixture(scope="module")
def sharp_models(tiny_model_dir):
    """The tiny model with sdpa and with eager attention, weights scaled up (as ``sharp_model``)."""
    from vat_hf.models import load_model

    models = {}
    for attention in ("sdpa", "eager"):
        loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", attn_implementation=attention)
        with torch.no_grad():
            for p in loaded.model.parameters():
                p.mul_(4.0)
        models[attention] = loaded
    return models


def count_packed_passes(monkeypatch):
    calls = {"n": 0}
    original = SharedPrefixBatch.pack

    def counting(self, padded):
        calls["n"] += 1
        return original(self, padded)

    monkeypatch.setattr(SharedPrefixBatch, "pack", counting)
    return calls


# -- the attention function itself -------------------------------------------------------------

def test_split_attention_equals_attention_over_the_concatenated_keys():
    """Grouped-query heads, rows with scene parts of different widths and left-padded queries:
    the prefix part (one batch-1 copy for all rows) merged with the own part by log-sum-exp gives
    plain softmax attention over [prefix | own] for every real query."""
    torch.manual_seed(0)
    rows, heads, kv_heads, dim, prefix_len, width, q = 3, 6, 2, 16, 11, 4, 5
    query = torch.randn(rows, heads, q, dim) * 2
    prefix_keys, prefix_values = torch.randn(1, kv_heads, prefix_len, dim) * 2, torch.randn(1, kv_heads, prefix_len, dim)
    keys, values = torch.randn(rows, kv_heads, width + q, dim) * 2, torch.randn(rows, kv_heads, width + q, dim)
    # Row 0: a full scene part and 5 tokens; row 1: a scene part of 2 (2 pads) and 3 tokens (2 pads);
    # row 2: no scene part (root only) and 1 token.
    scene = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    own = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    mask2d = torch.cat([torch.ones(rows, prefix_len, dtype=torch.long), scene, own], dim=1)
    mask = own_attention_mask(mask2d, prefix_len, q, torch.float32)
    groups = heads // kv_heads
    grouped = mask[:, :, None].expand(rows, 1, groups, q, width + q).reshape(rows, 1, groups * q, width + q)
    got = attend_with_shared_prefix(query, prefix_keys, prefix_values, keys, values, grouped, dim ** -0.5)

    all_keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], dim=2).repeat_interleave(groups, dim=1)
    all_values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], dim=2).repeat_interleave(groups, dim=1)
    causal = torch.ones(q, prefix_len + width + q, dtype=torch.bool).tril(diagonal=prefix_len + width)
    allowed = mask2d.bool()[:, None, None, :] & causal
    want = torch.nn.functional.scaled_dot_product_attention(query, all_keys, all_values, attn_mask=allowed)
    real = own.bool()
    assert got.shape == (rows, q, heads, dim)
    assert torch.allclose(got.transpose(1, 2)[real[:, None, :].expand(rows, heads, q)],
                          want[real[:, None, :].expand(rows, heads, q)], atol=1e-5)
    assert torch.isfinite(got).all()  # pad queries included: no empty softmax row

    # The copied form (one call over [prefix | own], the prefix seen by every query) is the same.
    with_prefix = torch.cat([torch.zeros(rows, 1, groups * q, prefix_len), grouped], dim=-1)
    copied = attend_with_copied_prefix(query, prefix_keys, prefix_values, keys, values, with_prefix, dim ** -0.5)
    assert copied.shape == got.shape
    assert torch.allclose(copied.transpose(1, 2)[real[:, None, :].expand(rows, heads, q)],
                          want[real[:, None, :].expand(rows, heads, q)], atol=1e-5)


def test_the_prefix_is_copied_only_when_it_is_short():
    # Zero-shot SmolLM2: a 78-token question against about 45 own keys; 8 shots: about 1,000.
    assert copy_the_prefix(78, 45) and not copy_the_prefix(1000, 45)
    assert copy_the_prefix(90, 45) and not copy_the_prefix(91, 45)


def test_rows_are_packed_without_padding_and_unpacked_left_padded():
    cache = type("Cache", (), {"layers": [type("Layer", (), {})()]})()
    prefix_mask = torch.ones(3, 4, dtype=torch.long)
    batch = SharedPrefixBatch(cache, [2, 3, 1], prefix_mask, prefix_len=4, dtype=torch.float32)
    packed = torch.arange(6.0).view(1, 1, 6, 1)  # tokens a a | b b b | c
    padded = batch.unpack(packed)[:, 0, :, 0]
    assert batch.real.tolist() == [[False, True, True], [True, True, True], [False, False, True]]
    assert padded[batch.real].tolist() == [0, 1, 2, 3, 4, 5]
    assert batch.last.tolist() == [1, 4, 5]
    assert batch.pack(padded[:, :, None, None]).view(-1).tolist() == [0, 1, 2, 3, 4, 5]
    assert cache.layers[0].batch is batch


def test_a_row_that_does_not_see_the_whole_prefix_is_refused():
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 0] = 0
    with pytest.raises(SharedPrefixAttentionError):
        own_attention_mask(mask, prefix_len=3, query_len=2, dtype=torch.float32)


def test_the_model_gets_its_own_attention_back(sharp_models):
    model = sharp_models["sdpa"].model
    with pytest.raises(RuntimeError, match="boom"):
        with attention_implementation(model, SHARED_PREFIX_ATTENTION):
            assert model.config._attn_implementation == SHARED_PREFIX_ATTENTION
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


# -- in the evaluator ---------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["split", "copied"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_attention_equals_full_encoding(sharp_models, attention, form, monkeypatch):
    """Mixed-scene, padded batches through the shared-prefix attention, in either form (the prefix
    read once and merged by log-sum-exp, or copied in front of each row's keys), give the judgments
    of full encoding with the model's own attention (sdpa or eager), and leave the model as it was."""
    loaded = sharp_models[attention]
    calls = count_packed_passes(monkeypatch)
    monkeypatch.setattr(prefix_module, "COPY_PREFIX_FACTOR", 0 if form == "split" else 10 ** 6)
    forms = record_attention_forms(monkeypatch)
    prompt = few_shot_prompt(2)
    its = mixed_items()
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    got = ev.judge(its)
    assert ev.prefix_attention == "shared"
    assert ev.stats.n_prefix == len(its) and ev.stats.n_scene_prefix == 6
    # Every layer of every pass but the checks' one full encoding went through it (the checks'
    # continuations, the scene pass, the item batches).
    assert calls["n"] == loaded.model.config.num_hidden_layers * (ev.stats.batches - 1)
    taken = {"split": "attend_with_shared_prefix", "copied": "attend_with_copied_prefix"}[form]
    assert forms == [taken] * calls["n"]
    assert loaded.model.config._attn_implementation == attention
    want = full_encoding(loaded, prompt, its)
    assert_same_judgments(got, want)
    assert max_diff(want[:1] * len(want), want) > 1e-3  # the items' judgments differ: not vacuous


def test_shared_and_stitched_layouts_agree_in_one_batch(sharp_models):
    """All items in one batch (three scene widths, a root-only row, padding): both layouts give the
    same judgments, to float rounding."""
    loaded = sharp_models["sdpa"]
    prompt = few_shot_prompt(2)
    its = mixed_items()
    shared = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=64, progress=False)
    stitched = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=64, progress=False)
    stitched._shared_attention = False
    a, b = shared.judge(its), stitched.judge(its)
    assert (shared.prefix_attention, stitched.prefix_attention) == ("shared", "stitched")
    assert max_diff(a, b) < 1e-5


def test_the_check_falls_back_to_the_stitched_layout(sharp_models, monkeypatch, caplog):
    """If the shared-prefix attention does not reproduce full encoding (here: its output is
    perturbed), the one-time check at the root level says so and the stitched layout is used, with
    unchanged judgments; both prefix levels stay on."""
    original = prefix_module.attend_with_shared_prefix
    monkeypatch.setattr(prefix_module, "attend_with_shared_prefix", lambda *a: original(*a) * 1.5)
    monkeypatch.setattr(prefix_module, "COPY_PREFIX_FACTOR", 0)  # the split form, perturbed, in every pass
    loaded = sharp_models["sdpa"]
    prompt = few_shot_prompt(2)
    its = mixed_items()
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    with caplog.at_level(logging.WARNING):
        got = ev.judge(its)
    assert "shared-prefix attention changed next-token probabilities" in caplog.text
    assert ev.prefix_attention == "stitched" and ev.prefix_reuse == "auto"
    assert ev.stats.n_prefix == len(its) and ev.stats.n_scene_prefix == 6
    assert_same_judgments(got, full_encoding(loaded, prompt, its))


class DropsForwardKwargs(torch.nn.Module):
    """A model whose forward does not pass the extra kwargs on to its attention (as an older or
    custom modeling file would)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def get_base_model(self):
        return self.inner

    def forward(self, **kwargs):
        kwargs.pop("shared_prefix", None)
        return self.inner(**kwargs)


def test_a_model_that_does_not_pass_kwargs_to_its_attention_gets_the_stitched_layout(sharp_models, caplog):
    loaded = sharp_models["sdpa"]
    prompt = few_shot_prompt(1)
    its = mixed_items()
    ev = Evaluator(DropsForwardKwargs(loaded.model), loaded.tokenizer, prompt=prompt, progress=False)
    with caplog.at_level(logging.WARNING):
        got = ev.judge(its)
    assert "without the batch's shared prefix" in caplog.text
    assert ev.prefix_attention == "stitched" and ev.stats.n_scene_prefix == 6
    assert loaded.model.config._attn_implementation == "sdpa"
    assert_same_judgments(got, full_encoding(loaded, prompt, its))


@pytest.mark.parametrize("mode", ["logprob-multitoken", "generate"])
def test_modes_that_continue_from_the_batch_cache_keep_the_stitched_layout(sharp_models, mode):
    loaded = sharp_models["sdpa"]
    prompt = few_shot_prompt(1)
    its = scene_items(2, 2)
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, mode=mode, max_new_tokens=3, progress=False)
    got = ev.judge(its)
    assert ev.prefix_attention == "stitched" and ev.stats.n_scene_prefix == len(its)
    want = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, mode=mode, max_new_tokens=3, prefix_reuse=False,
                     max_batch_size=1, progress=False).judge(its)
    if mode == "generate":
        assert [r.get("generated") for r in got] == [r.get("generated") for r in want]
    else:
        assert_same_judgments(got, want)


def test_bfloat16_stays_within_bfloat16_rounding(tiny_model_dir, sharp_models):
    """In bf16 the two attention parts are rounded separately; the judgments stay as close to the
    fp32 ones as bf16 full encoding is (measured: 0.018 and 0.015 on this model)."""
    from vat_hf.models import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(4.0)
    prompt = few_shot_prompt(2)
    its = mixed_items()
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=4, progress=False)
    got = ev.judge(its)
    assert ev.prefix_attention == "shared"
    reference = full_encoding(sharp_models["sdpa"], prompt, its)
    assert max_diff(got, reference) < 2 * max_diff(full_encoding(loaded, prompt, its), reference) + 1e-3


@pytest.mark.slow
def test_embedded_model_few_shot_shared_attention_equals_full_encoding(monkeypatch):
    """SmolLM2-135M-Instruct with a 2-shot prompt intervention (about 330 shared tokens) on
    built-in items of a few scenes: the shared-prefix attention gives the judgments of full
    encoding with eager attention (a different attention code path from the one it replaces).
    The prefix is long beside each row's own keys: it is read once and merged (the split form)."""
    from vat_hf.data import load_items
    from vat_hf.interventions import value_prompt
    from vat_hf.models import load_model

    items = load_items("builtin")
    train = [i for i in items if i.get("split") == "train"]
    test = [i for i in items if i.get("split") != "train"][:16]
    prompt = value_prompt("Benevolence", train, k_shots=2, seed=0)
    loaded = load_model(None, device="cpu", dtype="float32")
    forms = record_attention_forms(monkeypatch)
    ev = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_size=8, progress=False)
    got = ev.judge(test)
    assert forms and set(forms) == {"attend_with_shared_prefix"}
    assert ev.prefix_attention == "shared" and ev.stats.prefix_tokens > 200
    assert ev.stats.n_scene_prefix >= len(test) // 2
    eager = load_model(None, device="cpu", dtype="float32", attn_implementation="eager")
    want = full_encoding(eager, prompt, test)
    assert [a["argmax"] for a in got] == [b["argmax"] for b in want]
    assert max_diff(got, want) < 1e-4

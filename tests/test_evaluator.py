import pytest
import torch

from vat_hf.evaluation import Evaluator, OptionTokenError, option_token_ids, summarize, token_budget_batches
from vat_hf.evaluation.judge import left_pad
from vat_hf.prompts import JudgePrompt, judge_text


def items(n=7):
    # Scenarios of different lengths so batches need padding.
    return [{"id": f"i{k}", "scene_id": f"s{k % 3}", "scenario": "Someone must decide what to do. " * (1 + k),
             "action": f"I do thing number {k}.", "value": "Power", "polarity": 1 if k % 2 else -1, "split": "test"}
            for k in range(n)]


def test_probabilities_are_a_distribution_and_mass_is_kept(tiny_model):
    records = Evaluator(tiny_model.model, tiny_model.tokenizer, progress=False).judge(items())
    for r in records:
        assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-6)
        assert 0 < r["option_mass"] < 1  # a random model puts mass everywhere
        assert 1 <= r["rating"] <= 5
        assert r["rating"] == pytest.approx(sum((k + 1) * p for k, p in enumerate(r["probs"])))
    assert [r["id"] for r in records] == [i["id"] for i in items()]
    s = summarize(records)
    assert s.n_items == 7 and s.option_mass_min <= s.option_mass_mean


def test_batched_equals_unbatched(tiny_model):
    batched = Evaluator(tiny_model.model, tiny_model.tokenizer, max_batch_tokens=100_000, progress=False).judge(items())
    single = Evaluator(tiny_model.model, tiny_model.tokenizer, max_batch_size=1, progress=False).judge(items())
    for a, b in zip(batched, single):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)
        assert a["option_mass"] == pytest.approx(b["option_mass"], rel=1e-4)


def test_result_matches_a_plain_full_forward(tiny_model):
    item = items(3)[2]
    text = judge_text(tiny_model.tokenizer, JudgePrompt(), item)
    ids = tiny_model.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        probs = tiny_model.model(ids).logits[0, -1].softmax(-1)
    option = probs[option_token_ids(tiny_model.tokenizer)]
    record = Evaluator(tiny_model.model, tiny_model.tokenizer, progress=False).judge([item])[0]
    assert record["option_mass"] == pytest.approx(float(option.sum()), rel=1e-5)
    assert record["probs"] == pytest.approx((option / option.sum()).tolist(), abs=1e-6)


def test_padding_side_of_the_tokenizer_does_not_change_results(tiny_model):
    tok = tiny_model.tokenizer
    left = Evaluator(tiny_model.model, tok, max_batch_tokens=100_000, progress=False).judge(items())
    tok.padding_side = "right"
    try:
        right = Evaluator(tiny_model.model, tok, max_batch_tokens=100_000, progress=False).judge(items())
    finally:
        tok.padding_side = "left"
    for a, b in zip(left, right):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)


def test_left_pad_positions_count_real_tokens_only():
    batch = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_token_budget_batches_respect_budget_and_cover_all():
    lengths = [50, 10, 30, 30, 70, 5, 12]
    batches = token_budget_batches(lengths, max_batch_tokens=100, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert max(lengths[i] for i in b) * len(b) <= 100 or len(b) == 1


def test_options_must_be_single_distinct_tokens(tiny_model):
    class SplitDigits:
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text == "3" else [ord(text)]

    with pytest.raises(OptionTokenError, match="option '3' is 2 tokens"):
        option_token_ids(SplitDigits())
    assert option_token_ids(tiny_model.tokenizer) == [33, 34, 35, 36, 37]


def odd_texts(tok):
    """Judging prompts and texts that stress a tokenizer: special tokens written in the text,
    accents, emoji, runs of whitespace, an empty string."""
    return [judge_text(tok, JudgePrompt(), it) for it in items(5)] + [
        "<|im_start|>user\nCafé, naïve, 東京 🙂<|im_end|>", "  two  spaces\n\n\ttab ", "", "Rating: 5"]


def test_prompts_are_tokenised_as_the_tokenizer_itself_tokenises_them(tiny_model):
    """encode_texts takes the fast tokenizer's backend without character offsets, and gets the
    tokenizer's own ids."""
    from vat_hf.evaluation.task import _offsetless_backend, encode_texts

    tok = tiny_model.tokenizer
    texts = odd_texts(tok)
    assert _offsetless_backend(tok, texts) is tok.backend_tokenizer
    assert encode_texts(tok, texts) == tok(texts, add_special_tokens=False)["input_ids"]
    assert encode_texts(tok, []) == []


def test_a_tokenizer_whose_backend_would_differ_is_tokenised_by_its_own_call(tiny_model_dir):
    from transformers import AutoTokenizer

    from vat_hf.evaluation.task import _offsetless_backend, encode_texts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = odd_texts(tok)
    want = tok(texts, add_special_tokens=False)["input_ids"]
    # A backend left padding (as a tokenizer.json may set it): its ids would carry the pads.
    tok.backend_tokenizer.enable_padding(length=400)
    assert _offsetless_backend(tok, texts) is None
    assert encode_texts(tok, texts) == want

    class OwnCall:
        """A tokenizer whose own call changes the text before its backend sees it."""
        is_fast, split_special_tokens, backend_tokenizer = True, False, tok.backend_tokenizer

        def __call__(self, texts, add_special_tokens):
            return tok([t.upper() for t in texts], add_special_tokens=add_special_tokens)

    own = OwnCall()
    assert _offsetless_backend(own, texts) is None
    assert encode_texts(own, texts) == tok([t.upper() for t in texts], add_special_tokens=False)["input_ids"]

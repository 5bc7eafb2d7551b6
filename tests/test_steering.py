"""Value steering: the contrast set is train items only, strength 0 is the baseline exactly, the
hooks compose with the shared-prefix cache, the judgment cache keeps steered judgments apart,
and a strength whose option mass collapses is flagged and never scored."""

import pytest
import torch

from vat_hf.data import load_items
from vat_hf.data.fields import TrainSplitError
from vat_hf.evaluation import Evaluator
from vat_hf.interventions.steering import (
    SteeringError,
    SteeringVector,
    compute_steering_vector,
    decoder_layers,
    steer,
)
from vat_hf.io import read_json, read_jsonl
from vat_hf.pipeline import ExperimentConfig, RecipeError, run_experiment

TRAIN = load_items("builtin", split="train")
TEST = load_items("builtin", split="test", max_scenes=2)


def _probs(records):
    return torch.tensor([r["probs"] for r in records], dtype=torch.float64)


def test_contrast_set_is_train_items_only(sharp_model):
    model, tok = sharp_model.model, sharp_model.tokenizer
    leaked = TRAIN + [next(i for i in TEST if i["value"] == "Power")]
    with pytest.raises(TrainSplitError, match="not in the 'train' split"):
        compute_steering_vector(model, tok, leaked, "Power", layers=[1])
    vector = compute_steering_vector(model, tok, TRAIN, "Power", layers=[1])
    assert vector.layers == [1] and vector.directions[1].shape == (model.config.hidden_size,)
    n_power = sum(1 for i in TRAIN if i["value"] == "Power")
    assert sum(vector.meta["n_items"].values()) == n_power and vector.meta["target_value"] == "Power"
    # The contrast is about the value: another target's vector points elsewhere.
    other = compute_steering_vector(model, tok, TRAIN, "Universalism", layers=[1])
    assert not torch.allclose(vector.directions[1], other.directions[1])
    with pytest.raises(SteeringError, match="outside this model's 2 layers"):
        compute_steering_vector(model, tok, TRAIN, "Power", layers=[5])


def test_vector_is_mean_answer_token_difference(sharp_model):
    """The vector equals the hand-computed CAA contrast: favouring minus disfavouring rating,
    read at the rating token of decoder layer 0's output, per polarity then averaged."""
    from vat_hf.prompts import JudgePrompt, judge_text

    model, tok = sharp_model.model, sharp_model.tokenizer
    vector = compute_steering_vector(model, tok, TRAIN, "Security", layers=[0])
    per_polarity = []
    for polarity in (1, -1):
        diffs = []
        for item in [i for i in TRAIN if i["value"] == "Security" and i["polarity"] == polarity]:
            ids = tok(judge_text(tok, JudgePrompt(), item), add_special_tokens=False)["input_ids"]
            states = []
            for rating in (("5", "1") if polarity == 1 else ("1", "5")):
                full = torch.tensor([ids + tok.encode(rating, add_special_tokens=False)])
                with torch.no_grad():
                    hidden = model(input_ids=full, output_hidden_states=True).hidden_states[1]  # output of layer 0
                states.append(hidden[0, -1])
            diffs.append(states[0] - states[1])
        per_polarity.append(torch.stack(diffs).mean(0))
    expected = (per_polarity[0] + per_polarity[1]) / 2
    assert torch.allclose(vector.directions[0], expected, atol=1e-4)


def test_strength_zero_is_the_baseline_and_the_hooks_go_away(sharp_model):
    model, tok = sharp_model.model, sharp_model.tokenizer
    vector = compute_steering_vector(model, tok, TRAIN, "Power", layers=[0, 1])
    hooks_before = [len(block._forward_hooks) for block in decoder_layers(model)]  # transformers' own stay
    base = Evaluator(model, tok, progress=False).judge(TEST)
    with steer(model, vector, 0.0):
        zero = Evaluator(model, tok, progress=False).judge(TEST)
    with steer(model, vector, 8.0):
        steered = Evaluator(model, tok, progress=False).judge(TEST)
    after = Evaluator(model, tok, progress=False).judge(TEST)
    assert [r["probs"] for r in zero] == [r["probs"] for r in base]  # exactly, not approximately
    assert [r["rating"] for r in zero] == [r["rating"] for r in base]
    assert not torch.allclose(_probs(steered), _probs(base), atol=1e-4)
    assert [r["probs"] for r in after] == [r["probs"] for r in base]
    assert [len(block._forward_hooks) for block in decoder_layers(model)] == hooks_before


def test_steering_composes_with_the_shared_prefix_cache(sharp_model):
    """The hooks are active while the prefix's key/value cache is computed, so reusing it gives
    the steered full encoding's judgments."""
    from vat_hf.interventions import value_prompt

    model, tok = sharp_model.model, sharp_model.tokenizer
    vector = compute_steering_vector(model, tok, TRAIN, "Power", layers=[0])
    prompt = value_prompt("Power", TRAIN, k_shots=2)
    # Unsteered first: a prefix cache kept from an unsteered pass must not serve a steered one.
    unsteered = Evaluator(model, tok, prompt=prompt, prefix_reuse=True, progress=False).judge(TEST)
    with steer(model, vector, 6.0):
        reuse = Evaluator(model, tok, prompt=prompt, prefix_reuse=True, progress=False)
        with_prefix = reuse.judge(TEST)
        without_prefix = Evaluator(model, tok, prompt=prompt, prefix_reuse=False, progress=False).judge(TEST)
    again = Evaluator(model, tok, prompt=prompt, prefix_reuse=True, progress=False).judge(TEST)
    assert reuse.stats.n_prefix == len(TEST) and reuse.stats.prefix_tokens > 100
    assert torch.allclose(_probs(with_prefix), _probs(without_prefix), atol=1e-6)
    assert not torch.allclose(_probs(with_prefix), _probs(unsteered), atol=1e-4)
    assert torch.allclose(_probs(again), _probs(unsteered), atol=1e-6)  # and a steered one never serves an unsteered


def test_vector_round_trip(tmp_path, sharp_model):
    vector = compute_steering_vector(sharp_model.model, sharp_model.tokenizer, TRAIN, "Power", layers=[1])
    vector.save(tmp_path / "v")
    again = SteeringVector.load(tmp_path / "v")
    assert again.content_hash() == vector.content_hash() and again.meta["contrast"] == "caa-answer-token"
    assert vector.variant(4.0) != vector.variant(8.0) and vector.variant(4.0)["vector"] == vector.content_hash()


def _steering_run(tmp_path, model_dir, **spec):
    cfg = ExperimentConfig.from_dict({
        "target_value": "Power", "model": str(model_dir), "output_dir": str(tmp_path), "data": {"max_scenes": 1},
        "metric": {"n_bootstrap": 50}, "eval": {"dtype": "float32", "device": "cpu"},
        "interventions": [{"type": "steering", "name": "steer", "layers": [1], **spec}]})
    return cfg, run_experiment(cfg, progress=False)


def test_steering_in_a_run_strength_zero_scores_zero_and_cache_keeps_strengths_apart(tmp_path, tiny_model_dir,
                                                                                     forbid_loading):
    cfg, out = _steering_run(tmp_path, tiny_model_dir, strengths=[0, 200], min_option_mass=0.0)
    assert [r["name"] for r in out["results"]] == ["steer-s0", "steer-s200"]
    zero, strong = out["results"]
    baseline = read_jsonl(tmp_path / "judgments" / "baseline.jsonl")
    assert [r["probs"] for r in read_jsonl(tmp_path / "judgments" / "steer-s0.jsonl")] == [r["probs"] for r in baseline]
    assert zero["vat"]["gain"] == 0.0 and set(zero["vat"]["drift"].values()) == {0.0}
    assert strong["vat"]["gain"] != 0.0
    # Each strength (and the baseline) judged in its own cache namespace, keyed by the vector.
    fps = [zero["fingerprints"]["post"]["model"], strong["fingerprints"]["post"]["model"], zero["fingerprints"]["pre"]["model"]]
    assert len(set(fps)) == 3
    post = read_json(strong["evaluation"]["post"]["results"])
    assert post["model"]["variant"]["strength"] == 200.0 and post["stats"]["n_computed"] == 20
    steering = strong["intervention"]["steering"]
    assert steering["layers"] == [1] and steering["contrast"] == "caa-answer-token" and "composed" in steering["prefix_reuse"]
    # One vector for both strengths, kept on disk; a rerun reads it and every judgment back and loads nothing.
    assert len(list((tmp_path / "steering").glob("*/vector.safetensors"))) == 1
    forbid_loading()
    again = run_experiment(cfg, progress=False)
    assert [r["vat"] for r in again["results"]] == [r["vat"] for r in out["results"]]


def test_a_strength_whose_option_mass_collapses_is_flagged_and_not_scored(tmp_path, tiny_model_dir, monkeypatch):
    # The tiny random model puts ~1e-4 of its mass on the options: below any threshold.
    def no_scoring(*args, **kwargs):
        pytest.fail("a flagged strength was scored")

    monkeypatch.setattr("vat_hf.metrics.paired.score_judgments", no_scoring)
    cfg, out = _steering_run(tmp_path, tiny_model_dir, strength=4.0)  # min_option_mass: 0.5 by default
    assert out["results"] == [] and [r["name"] for r in out["flagged"]] == ["steer"]
    saved = read_json(tmp_path / "results" / "steer.json")
    assert saved["vat"] is None and saved["flag"]["reason"] == "option_mass_below_threshold"
    assert saved["flag"]["option_mass_mean"] < 0.5 and "not scored" in saved["flag"]["words"]
    assert not (tmp_path / "report").exists()


def test_steering_recipe_keys():
    base = {"target_value": "Power"}
    cfg = ExperimentConfig.from_dict({**base, "interventions": [{"type": "steering", "strengths": [4, 8], "layers": [15]}]})
    assert [(s.name, s.strength, s.layers, s.min_option_mass) for s in cfg.interventions] == \
        [("steering-s4", 4.0, [15], 0.5), ("steering-s8", 8.0, [15], 0.5)]
    with pytest.raises(RecipeError, match="'strength' \\(one\\) or 'strengths'"):
        ExperimentConfig.from_dict({**base, "interventions": [{"type": "steering"}]})
    with pytest.raises(RecipeError, match="not both"):
        ExperimentConfig.from_dict({**base, "interventions": [{"type": "steering", "strength": 1, "strengths": [2]}]})
    with pytest.raises(RecipeError, match="limits intervention .prompt-k0. to other targets"):
        ExperimentConfig.from_dict({**base, "interventions": [{"type": "prompt", "target_values": ["Security"]}]})

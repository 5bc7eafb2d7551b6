import json

import pytest
from typer.testing import CliRunner

from vat_hf.cli import app
from vat_hf.io import read_json, read_jsonl
from vat_hf.pipeline import ExperimentConfig, RecipeError, run_experiment

RECIPE = {"target_value": "benevolence", "interventions": [{"type": "prompt", "k_shots": 2}]}


def test_recipe_parsing_and_errors():
    cfg = ExperimentConfig.from_dict(RECIPE)
    assert cfg.target_value == "Benevolence" and cfg.interventions[0].name == "prompt-k2"
    with pytest.raises(RecipeError, match=r"unknown key 'target' \(did you mean target_value\?\)"):
        ExperimentConfig.from_dict({"target": "Power"})
    with pytest.raises(RecipeError, match="'target_value' is required"):
        ExperimentConfig.from_dict({})
    with pytest.raises(RecipeError, match="interventions\\[0\\]: unknown key"):
        ExperimentConfig.from_dict({"target_value": "Power", "interventions": [{"type": "prompt", "shots": 2}]})
    with pytest.raises(RecipeError, match=r"interventions\[0\]\.type = 'rlhf': must be one of 'prompt', 'sft', 'dpo'"):
        ExperimentConfig.from_dict({"target_value": "Power", "interventions": [{"type": "rlhf"}]})
    with pytest.raises(ValueError, match="valid names"):
        ExperimentConfig.from_dict({"target_value": "Kindness"})


def test_run_on_tiny_model_writes_judgments_results_and_resumes(tiny_model_dir, tmp_path, forbid_loading):
    from vat_hf.data import items_fingerprint, load_items
    from vat_hf.evaluation.results import EVALUATION_SCHEMA, INTERVENTION_SCHEMA, prompt_text_hash
    from vat_hf.provenance import PROVENANCE_KEYS

    cfg = ExperimentConfig.from_dict({**RECIPE, "model": str(tiny_model_dir), "output_dir": str(tmp_path),
                                      "data": {"max_scenes": 2}, "metric": {"n_bootstrap": 50}})
    out = run_experiment(cfg, progress=False)
    result = out["results"][0]
    assert result["name"] == "prompt-k2" and result["target_value"] == "Benevolence"
    assert result["schema"] == INTERVENTION_SCHEMA
    assert result["data"]["n_items"] == 40 and result["data"]["n_scenes"] == 2
    assert result["data"]["fingerprint"] == items_fingerprint(load_items("builtin", split="test", max_scenes=2))
    assert set(result["vat"]["drift"]) == set(result["vat"]["pre_state"])
    assert result["versions"]["transformers"] and result["seed"] == 0 and result["config"]["target_value"] == "Benevolence"
    baseline = read_jsonl(tmp_path / "judgments" / "baseline.jsonl")
    assert len(baseline) == 40 and all(r["split"] == "test" for r in baseline)
    assert (tmp_path / "report" / "report.md").exists()
    from vat_hf.report import load_results

    # `vat-hf report` reads the result files back; the evaluations' own results files beside
    # the judgments are not intervention results and are passed over in a folder.
    assert [r["vat"] for r in load_results([tmp_path / "results"])] == [result["vat"]]
    with pytest.raises(ValueError, match="no vat-hf results"):
        load_results([tmp_path / "judgments"])
    # Each stage wrote the results file and per-sample records of `vat-hf eval`, and the
    # intervention's result points to them with the same provenance.
    for phase, stage in (("pre", "baseline"), ("post", "prompt-k2")):
        pointer = result["evaluation"][phase]
        evaluation = read_json(pointer["results"])
        assert evaluation["schema"] == EVALUATION_SCHEMA and evaluation["name"] == stage
        assert set(PROVENANCE_KEYS) <= set(evaluation) and set(PROVENANCE_KEYS) <= set(result)
        assert evaluation["fingerprints"] == result["fingerprints"][phase] == pointer["fingerprints"]
        assert evaluation["data"]["fingerprint"] == result["data"]["fingerprint"]
        assert evaluation["config"]["eval"]["max_batch_tokens"] == 8192 and evaluation["timing"]["seconds"] > 0
        assert pointer["judgments"] == str(tmp_path / "judgments" / f"{stage}.jsonl")
        samples = read_jsonl(pointer["samples"])
        assert [s["id"] for s in samples] == [r["id"] for r in baseline]
        assert all(s["prompt_hash"] == prompt_text_hash(s["prompt"]) and s["prompt"].endswith("Rating: ") for s in samples)
    pre_samples = read_jsonl(result["evaluation"]["pre"]["samples"])
    post_samples = read_jsonl(result["evaluation"]["post"]["samples"])
    # The exact texts the model read: the intervention's value system prompt and two shots.
    assert "holds the value of Benevolence" in post_samples[0]["prompt"] and "holds the value" not in pre_samples[0]["prompt"]
    assert post_samples[0]["prompt"].count("<|im_start|>user") == 3 and pre_samples[0]["prompt"].count("<|im_start|>user") == 1
    # A rerun of the finished experiment judges nothing and loads no weights: every judgment
    # comes from the cache, keyed by the model's files.
    forbid_loading()
    again = run_experiment(cfg, progress=False)
    assert again["results"][0]["vat"] == result["vat"]
    assert read_json(result["evaluation"]["post"]["results"])["stats"]["n_computed"] == 0
    assert read_jsonl(tmp_path / "judgments" / "baseline.jsonl") == baseline


def test_recipe_eval_section_takes_every_evaluator_setting():
    from vat_hf.evaluation.config import EvalConfig

    cfg = ExperimentConfig.from_dict({**RECIPE, "eval": {"mode": "generate", "truncation": "left", "max_length": 512,
                                                         "prefix_reuse": False, "limit": 3}})
    assert (cfg.eval.mode, cfg.eval.truncation, cfg.eval.max_length, cfg.eval.prefix_reuse, cfg.eval.limit) == \
        ("generate", "left", 512, "false", 3)
    assert isinstance(cfg.eval, EvalConfig)
    with pytest.raises(RecipeError, match=r"eval: unknown key 'batch_size' \(did you mean max_batch_size\?\)"):
        ExperimentConfig.from_dict({**RECIPE, "eval": {"batch_size": 8}})
    with pytest.raises(ValueError, match="eval.truncation = 'right': must be one of 'refuse', 'left'"):
        ExperimentConfig.from_dict({**RECIPE, "eval": {"truncation": "right"}})


@pytest.mark.slow
def test_vat_hf_run_on_smollm2(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "slow", "model": "SmolLM2-135M-Instruct", "target_value": "Benevolence",
                                  "output_dir": str(tmp_path / "out"), "data": {"max_scenes": 1},
                                  "metric": {"n_bootstrap": 100},
                                  "interventions": [{"type": "prompt", "name": "prompt-k2", "k_shots": 2}]}))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "results" / "prompt-k2.json").read_text())
    assert saved["model"]["name_or_path"] == "SmolLM2-135M-Instruct"
    # SmolLM2 with the "Rating: " prefix puts most of its mass on the options.
    assert saved["evaluation"]["pre"]["option_mass_mean"] > 0.5
    assert isinstance(saved["vat"]["gain"], float) and "Benevolence" in result.output

import json

import pytest
from typer.testing import CliRunner

from vat_hf.cli import app
from vat_hf.io import read_jsonl
from vat_hf.pipeline import ExperimentConfig, RecipeError, run_experiment

RECIPE = {"target_value": "benevolence", "interventions": [{"type": "prompt", "k_shots": 2}]}


def test_recipe_parsing_and_errors():
    cfg = ExperimentConfig.from_dict(RECIPE)
    assert cfg.target_value == "Benevolence" and cfg.interventions[0].name == "prompt-k2"
    with pytest.raises(RecipeError, match="unknown key\\(s\\) \\['target'\\]"):
        ExperimentConfig.from_dict({"target": "Power"})
    with pytest.raises(RecipeError, match="'target_value' is required"):
        ExperimentConfig.from_dict({})
    with pytest.raises(RecipeError, match="interventions\\[0\\]: unknown key"):
        ExperimentConfig.from_dict({"target_value": "Power", "interventions": [{"type": "prompt", "shots": 2}]})
    with pytest.raises(RecipeError, match="not one of"):
        ExperimentConfig.from_dict({"target_value": "Power", "interventions": [{"type": "rlhf"}]})
    with pytest.raises(ValueError, match="valid names"):
        ExperimentConfig.from_dict({"target_value": "Kindness"})


def test_run_on_tiny_model_writes_judgments_results_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    cfg = ExperimentConfig.from_dict({**RECIPE, "model": str(tiny_model_dir), "output_dir": str(tmp_path),
                                      "data": {"max_scenes": 2}, "metric": {"n_bootstrap": 50}})
    out = run_experiment(cfg, progress=False)
    result = out["results"][0]
    assert result["name"] == "prompt-k2" and result["target_value"] == "Benevolence"
    assert result["data"]["n_items"] == 40 and result["data"]["n_scenes"] == 2
    assert set(result["vat"]["drift"]) == set(result["vat"]["pre_state"])
    assert result["versions"]["transformers"] and result["seed"] == 0
    baseline = read_jsonl(tmp_path / "judgments" / "baseline.jsonl")
    assert len(baseline) == 40 and all(r["split"] == "test" for r in baseline)
    assert (tmp_path / "report" / "report.md").exists()
    # A second run reuses every finished evaluation instead of judging again.
    monkeypatch.setattr("vat_hf.pipeline.ExperimentRunner._judge", lambda *a, **k: pytest.fail("judged again"))
    again = run_experiment(cfg, progress=False)
    assert again["results"][0]["vat"]["gain"] == result["vat"]["gain"]


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

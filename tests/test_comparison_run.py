"""`vat-hf run` with several interventions: the paired comparison reaches the result files, the
report and the printout, and every undefined number is printed as words (model card too)."""

import json

from typer.testing import CliRunner

from vat_hf.cli import app
from vat_hf.io import read_json
from vat_hf.metrics import compare_judgments
from vat_hf.metrics import formatting as fmt
from vat_hf.report import report_command


def test_run_with_two_interventions_compares_them_paired(tiny_model_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    recipe.write_text(json.dumps({
        "name": "two", "model": str(tiny_model_dir), "target_value": "Benevolence", "output_dir": str(out),
        "data": {"max_scenes": 3}, "metric": {"n_bootstrap": 60, "n_sign_flips": 500},
        "interventions": [{"type": "prompt", "name": "k0", "k_shots": 0}, {"type": "prompt", "name": "k2", "k_shots": 2}],
    }))
    run = CliRunner().invoke(app, ["run", str(recipe)])
    assert run.exit_code == 0, run.output
    comparison = read_json(out / "comparison.json")
    assert comparison["kind"] == "vat_paired_comparison" and set(comparison["arms"]) == {"k0", "k2"}
    pair = comparison["pairs"][0]
    # the pipeline's call equals the record-level comparison of the judgment files
    from vat_hf.io import read_jsonl

    base = read_jsonl(out / "judgments" / "baseline.jsonl")
    again = compare_judgments({n: (base, read_jsonl(out / "judgments" / f"{n}.jsonl")) for n in ("k0", "k2")},
                              "Benevolence", n_bootstrap=60, seed=0, n_sign_flips=500)
    assert again["pairs"] == comparison["pairs"]
    # the printout: each result's status in words, the comparison and the paired differences
    assert "interventions compared" in run.output and "paired differences (a - b)" in run.output
    assert f"| k0 - k2 | {fmt.difference_text(pair['gain_diff'], pair['gain_diff_ci'])} |" in run.output
    for name in ("k0", "k2"):
        metric = read_json(out / "results" / f"{name}.json")["vat"]
        assert fmt.gain_status_words(metric["gain_status"]) in run.output
        if metric["gain_status"] != "resolved":
            assert fmt.undefined_words(metric["gain_status"]) in run.output
    md = (out / "report" / "report.md").read_text()
    assert "Paired differences (a - b)" in md and "| k0 - k2 |" in md
    # `vat-hf report` on the results folder finds the comparison beside it
    printed = []
    paths = report_command([out / "results"], tmp_path / "again", echo=printed.append)
    assert "| k0 - k2 |" in paths["markdown"].read_text()


def test_model_card_prints_status_words_and_config_values():
    from vat_hf.train.card import _vat_section, render_card

    metric = {"target_value": "Benevolence", "n_items": 40, "gain": -0.01, "gain_status": "not_resolved", "vat": None,
              "tax": 0.02, "tax_null": {"mean": 0.015, "p_value": 1 / 201, "n_permutations": 200, "exact": False},
              "ci": {"gain": [-0.03, 0.01], "tax": [0.015, 0.03], "drift": {"Power": [-0.02, 0.01]}},
              "drift": {"Benevolence": -0.01, "Power": -0.005}, "gini": 0.3}
    card = _vat_section(metric)
    assert "| gain | -0.010 [-0.030, +0.010], not resolved (its interval includes 0) |" in card
    assert "| vat | undefined: gain not resolved (its interval includes 0) |" in card
    assert "| tax | 0.020 [0.015, 0.030] (chance 0.015, p < 1/201) |" in card
    assert "| Power | -0.005 [-0.020, +0.010] |" in card
    info = {"method": "sft", "target_value": "Benevolence", "base_model": "m", "hyperparameters": {"learning_rate": 0.000123456},
            "vat": metric}
    assert "| learning_rate | 0.0001235 |" in str(render_card(info))

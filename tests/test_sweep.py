"""Sweeps: expansion and cell ids, one shared baseline, the trade-off matrix, the grid's paired
comparisons, flagged strengths, a failed cell, --only, resume after a kill, the grid report's
links, the adapters' cards and the grid summary's captured Hub upload."""

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vat_hf.errors import RecipeError
from vat_hf.io import read_json, read_jsonl
from vat_hf.sweep import SweepConfig, SweepRunner, is_sweep, load_recipe, parse_only, select_cells
from vat_hf.values import BASIC_VALUES

REPO = Path(__file__).resolve().parents[1]
EVAL = {"dtype": "float32", "device": "cpu", "max_batch_size": 4}


def named_tiny(tiny_model_dir, folder) -> Path:
    """The session's tiny model under the name "tiny" (cell ids start with the model's name)."""
    link = Path(folder) / "tiny"
    if not link.exists():
        link.symlink_to(tiny_model_dir, target_is_directory=True)
    return link


def grid_recipe(models, out, **more):
    return {"name": "t", "models": [str(m) for m in models], "target_values": ["Security", "Power"],
            "output_dir": str(out), "data": {"max_scenes": 1}, "metric": {"n_bootstrap": 50, "n_sign_flips": 200},
            "eval": EVAL,
            "interventions": [{"type": "prompt", "name": "p2", "k_shots": 2},
                              {"type": "steering", "name": "steer", "layers": [1], "strengths": [0, 50],
                               "min_option_mass": 0.0, "target_values": ["Power"]},
                              # the tiny random models put ~1e-4 of their mass on the options: flagged
                              {"type": "steering", "name": "guard", "layers": [1], "strength": 4.0,
                               "target_values": ["Power"]}],
            **more}


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    from vat_hf.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama-b") / "tiny-b", seed=1)


@pytest.fixture(scope="module")
def grid_run(tiny_model_dir, second_model_dir, tmp_path_factory):
    """One sweep of two models x two targets x (a prompt + two steering entries), counting loads."""
    import vat_hf.models

    loads = []
    real = vat_hf.models.load_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("vat_hf.models.load_model", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
        out = tmp_path_factory.mktemp("grid")
        config = SweepConfig.from_dict(grid_recipe([named_tiny(tiny_model_dir, out), second_model_dir], out))
        summary = SweepRunner(config, progress=False).run()
    return {"config": config, "summary": summary, "out": out, "loads": loads}


def test_expansion_and_cell_ids(tmp_path):
    raw = {"models": ["SmolLM2-135M-Instruct", "org/Other-7B"], "target_values": "all",
           "interventions": [{"type": "prompt", "name": "prompt-k4", "k_shots": 4},
                             {"type": "steering", "name": "steer", "strengths": [4, 0.5], "target_values": ["power", "Benevolence"]}]}
    assert is_sweep(raw) and not is_sweep({"target_value": "Power"})
    cfg = SweepConfig.from_dict(raw)
    assert cfg.target_values == list(BASIC_VALUES)
    ids = [c.id for c in cfg.cells()]
    assert len(ids) == len(set(ids)) == 2 * (10 + 2 * 2)
    assert ids[0] == "smollm2-135m-instruct__self-direction__prompt-k4"
    assert "other-7b__power__steer-s0.5" in ids and "smollm2-135m-instruct__benevolence__steer-s4" in ids
    # Ids come from names, not positions: reordering the recipe changes no id.
    shuffled = SweepConfig.from_dict({**raw, "models": raw["models"][::-1], "target_values": list(BASIC_VALUES)[::-1],
                                      "interventions": raw["interventions"][::-1]})
    assert sorted(c.id for c in shuffled.cells()) == sorted(ids)
    cell = next(c for c in cfg.cells() if c.id == "other-7b__power__steer-s0.5")
    single = cfg.cell_config(cell)  # each cell is one experiment of the shared cache
    assert (single.model, single.target_value, [s.name for s in single.interventions]) == ("org/Other-7B", "Power", ["steer-s0.5"])
    assert single.eval.cache_dir == str(Path(cfg.output_dir) / "cache") and cell.family == "steer"
    one = SweepConfig.from_dict({"model": "SmolLM2-135M-Instruct", "target_values": ["Power"],
                                 "interventions": [{"type": "prompt"}]})
    assert [c.id for c in one.cells()] == ["smollm2-135m-instruct__power__prompt-k0"]
    for bad, message in (({**raw, "target_values": ["Power", "power"]}, "twice"),
                         ({**raw, "models": ["a/X", "b/X"]}, "twice"),
                         ({**raw, "modles": []}, r"unknown key 'modles' \(did you mean models\?\)"),
                         ({**raw, "target_values": ["Power", "Kindness"]}, "target_values = .*not a basic value|Kindness"),
                         ({**raw, "model": "x"}, "give 'model' or 'models', not both"),
                         ({**raw, "interventions": []}, "at least one"),
                         ({**raw, "target_values": ["Power"]}, r"\['Benevolence'\] are not among the sweep's target_values")):
        with pytest.raises(RecipeError, match=message):
            SweepConfig.from_dict(bad)
    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(json.dumps(raw))
    assert isinstance(load_recipe(recipe), SweepConfig)
    assert isinstance(load_recipe(REPO / "recipes/grid/smollm2_prompt_steering.yaml"), SweepConfig)
    assert not isinstance(load_recipe(REPO / "recipes/demo/smollm2_benevolence.yaml"), SweepConfig)


def test_only_filter():
    cfg = SweepConfig.from_dict({"models": ["SmolLM2-135M-Instruct", "org/Other-7B"], "target_values": ["Power", "Security"],
                                 "interventions": [{"type": "prompt", "name": "p"},
                                                   {"type": "steering", "name": "steer", "strengths": [1, 2]}]})
    cells = cfg.cells()
    pick = select_cells(cells, parse_only(["model=Other-7B,target=power"]))
    assert [c.id for c in pick] == ["other-7b__power__p", "other-7b__power__steer-s1", "other-7b__power__steer-s2"]
    either = select_cells(cells, parse_only(["intervention=steer-s2", "target=Security,intervention=p"]))
    assert sorted(c.id for c in either) == sorted(["smollm2-135m-instruct__power__steer-s2", "other-7b__power__steer-s2",
                                                   "smollm2-135m-instruct__security__steer-s2", "other-7b__security__steer-s2",
                                                   "smollm2-135m-instruct__security__p", "other-7b__security__p"])
    assert len(select_cells(cells, parse_only(["intervention=steer"]))) == 8  # the entry's name: all its strengths
    with pytest.raises(RecipeError, match="key among"):
        parse_only(["targets=Power"])
    with pytest.raises(RecipeError, match=r"no cell has it; the sweep's models are \['other-7b', 'smollm2-135m-instruct'\]"):
        select_cells(cells, parse_only(["model=Llama"]))


def test_every_cell_runs_and_one_baseline_is_shared(grid_run):
    summary, out = grid_run["summary"], grid_run["out"]
    rows = {r["cell"]: r for r in summary["cells"]}
    assert len(rows) == 2 * (2 + 2 + 1) and summary["run"]["failed"] == []
    assert {r["status"] for r in rows.values() if r["intervention"] != "guard"} == {"done"}
    # Each model loaded once for all of its cells.
    assert len(grid_run["loads"]) == 2
    for model_slug in ("tiny", "tiny-b"):
        baselines = [read_json(out / "cells" / cid / "judgments" / "results_baseline.json")
                     for cid in rows if rows[cid]["model_slug"] == model_slug]
        computed = [b["stats"]["n_computed"] for b in baselines]
        assert computed[0] == 20 and set(computed[1:]) == {0}  # judged by the first cell, read back by the others
        first = read_jsonl(baselines[0]["files"]["judgments"])
        assert all(read_jsonl(b["files"]["judgments"]) == first for b in baselines)
        assert summary["baselines"][model_slug] == {"cells": 5, "judged_seconds": pytest.approx(baselines[0]["timing"]["seconds"]),
                                                    "n_computed": 20, "read_back": 4}
    # every cell is a single experiment whose config.json a plain `vat-hf run` takes
    from vat_hf.pipeline import ExperimentConfig

    cell_config = read_json(out / "cells" / "tiny__power__p2" / "config.json")
    assert ExperimentConfig.from_dict(cell_config).interventions[0].name == "p2"


def test_matrix_diagonal_equals_each_cells_gain(grid_run):
    from matplotlib.figure import Figure

    from vat_hf.report.grid import plot_matrix

    out = grid_run["out"]
    for stem in ("tiny__p2", "tiny-b__p2", "tiny__steer-s50"):
        matrix = read_json(out / "grid" / "matrix" / f"{stem}.json")
        assert matrix["values"] == list(BASIC_VALUES) and matrix["targets"] == [t for t in BASIC_VALUES if t in matrix["cells"]]
        image = next(a for a in plot_matrix(matrix).axes[0].get_images() if a.get_gid() == "drift")
        for i, target in enumerate(matrix["targets"]):
            result = read_json(out / "cells" / matrix["cells"][target] / "results" / f"{matrix['intervention']}.json")
            j = matrix["values"].index(target)
            assert matrix["drift"][target][target] == result["vat"]["gain"] == matrix["gain"][target]
            assert float(image.get_array()[i, j]) == pytest.approx(result["vat"]["gain"])
            assert matrix["drift"][target] == {v: result["vat"]["drift"][v] for v in BASIC_VALUES}
            if result["vat"]["gain_status"] != "resolved":
                assert set(matrix["gnd"][target].values()) == {None}
        csv_rows = (out / "grid" / "matrix" / f"{stem}.csv").read_text().splitlines()
        assert len(csv_rows) == 1 + len(matrix["targets"]) * 10 and csv_rows[0].startswith("model,intervention,target,value")
    assert isinstance(plot_matrix(matrix), Figure)
    assert not (out / "grid" / "matrix" / "tiny__guard.json").exists()  # flagged: in no matrix


def test_grid_comparisons_are_paired(grid_run):
    out = grid_run["out"]
    comparisons = read_json(out / "grid" / "comparisons" / "power.json")
    what = sorted(c["compared"] for c in comparisons)
    assert what == sorted(["interventions on tiny", "interventions on tiny-b", "models under p2",
                           "models under steer-s0", "models under steer-s50"])
    on_tiny = next(c for c in comparisons if c["compared"] == "interventions on tiny")
    assert sorted(on_tiny["arms"]) == ["tiny/p2", "tiny/steer-s0", "tiny/steer-s50"]  # not the flagged guard
    for arm, numbers in on_tiny["arms"].items():  # the same items: each arm's gain is its cell's own
        result = read_json(out / "cells" / f"tiny__power__{arm.split('/')[1]}" / "results" / f"{arm.split('/')[1]}.json")
        assert numbers["gain"] == pytest.approx(result["vat"]["gain"], abs=1e-12)
    models = next(c for c in comparisons if c["compared"] == "models under p2")
    assert [(p["a"], p["b"]) for p in models["pairs"]] == [("tiny/p2", "tiny-b/p2")] and models["n_items"] == 20
    summary_md = (out / "grid" / "summary.md").read_text()
    assert "### Power" in summary_md and "Paired differences (a - b), models under p2" in summary_md


def test_a_flagged_strength_is_not_scored_in_the_grid(grid_run):
    out, summary = grid_run["out"], grid_run["summary"]
    row = next(r for r in summary["cells"] if r["cell"] == "tiny__power__guard")
    assert row["status"] == "flagged" and row.get("gain") is None and "not scored" in row["flag"]["words"]
    assert read_json(out / "cells" / "tiny__power__guard" / "results" / "guard.json")["vat"] is None
    dose = read_json(out / "grid" / "dose_response" / "tiny__power__guard.json")
    assert [(r["strength"], r["status"], r["gain"]) for r in dose["rows"]] == [(4.0, "flagged", None)]
    steer = read_json(out / "grid" / "dose_response" / "tiny__power__steer.json")
    assert [r["strength"] for r in steer["rows"]] == [0.0, 50.0] and steer["rows"][0]["gain"] == 0.0
    from vat_hf.report.grid import plot_dose_response

    fig = plot_dose_response(dose)
    assert not [l for l in fig.axes[0].get_lines() if l.get_gid() == "gain"]  # no gain point for a flagged strength
    assert [l for l in fig.axes[1].get_lines() if l.get_gid() == "flagged"]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if (tag, key) in (("a", "href"), ("img", "src"), ("link", "href"), ("script", "src")):
                self.links.append(value)
                if tag == "img":
                    self.images.append(value)


def test_every_link_and_image_of_the_grid_report_resolves(grid_run):
    index = grid_run["out"] / "grid" / "index.html"
    parser = _Links()
    parser.feed(index.read_text())
    images = parser.images
    reports = [l for l in parser.links if l.endswith("report.html")]
    assert len(images) == len(grid_run["summary"]["matrices"]) + len(grid_run["summary"]["dose_response"]) > 0
    assert len(reports) == 8 and any(l.endswith("guard.json") for l in parser.links)  # flagged: its result file
    for link in parser.links:
        assert not link.startswith(("http", "/", "data:")), link
        target = (index.parent / link).resolve()
        assert target.is_file() and target.stat().st_size > 0, link
        if link.endswith(".png"):
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_summary_push_is_captured_offline(grid_run, tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import HfApi

    from vat_hf.cli import app

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: calls.append(("create_repo", kw)) or
                        type("Url", (), {"repo_id": repo_id})())
    monkeypatch.setattr(HfApi, "list_repo_files", lambda api, repo_id, **kw: ["data/old-00000-of-00001.parquet", "README.md"])
    monkeypatch.setattr(HfApi, "create_commit", lambda api, repo_id, operations, **kw: calls.append(("create_commit", operations, kw)))
    res = CliRunner().invoke(app, ["grid-push", str(grid_run["out"]), "me/vat-grid", "--private"])
    assert res.exit_code == 0, res.output
    assert [c[0] for c in calls] == ["create_repo", "create_commit"] and calls[0][1]["repo_type"] == "dataset"
    ops = {getattr(op, "path_in_repo"): op for op in calls[1][1]}
    assert set(ops) == {"data/cells-00000-of-00001.parquet", "data/matrix-00000-of-00001.parquet", "grid_summary.json",
                        "README.md", "data/old-00000-of-00001.parquet"}  # the stale file is deleted in the same commit
    # a dry run writes the same files; datasets loads both configurations back from the card
    res = CliRunner().invoke(app, ["grid-push", str(grid_run["out"]), "me/vat-grid", "--dry-run", str(tmp_path / "up")])
    assert res.exit_code == 0, res.output
    cells = datasets.load_dataset(str(tmp_path / "up"), "cells", cache_dir=str(tmp_path / "cache"))["train"]
    matrix = datasets.load_dataset(str(tmp_path / "up"), "matrix", cache_dir=str(tmp_path / "cache"))["train"]
    assert len(cells) == 10 and "items" not in cells.column_names and "scenario" not in cells.column_names
    row = next(r for r in cells if r["cell"] == "tiny__power__p2")
    assert row["gain"] == read_json(grid_run["out"] / "cells/tiny__power__p2/results/p2.json")["vat"]["gain"]
    assert (row["vat"] is None) == (row["gain_status"] != "resolved")
    assert len(matrix) == 10 * sum(len(read_json(grid_run["out"] / "grid/matrix" / f"{s}.json")["targets"])
                                   for s in grid_run["summary"]["matrices"])
    card = (tmp_path / "up" / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: cells" in card and "empty unless the gain is resolved" in card


def test_a_failed_cell_is_recorded_while_the_others_finish(tiny_model_dir, tmp_path):
    from vat_hf.cli import app

    recipe = tmp_path / "sweep.yaml"
    recipe.write_text(json.dumps({
        "models": [str(named_tiny(tiny_model_dir, tmp_path))], "target_values": ["Power", "Security"],
        "output_dir": str(tmp_path / "out"), "data": {"max_scenes": 1}, "metric": {"n_bootstrap": 20}, "eval": EVAL,
        "interventions": [{"type": "steering", "name": "bad", "layers": [7], "strength": 1.0, "target_values": ["Power"]},
                          {"type": "prompt", "name": "p0"}]}))
    res = CliRunner().invoke(app, ["run", str(recipe)])
    assert res.exit_code == 1 and "1 cell(s) failed" in res.output and "tiny__power__bad" in res.output
    status = read_json(tmp_path / "out" / "cells" / "tiny__power__bad" / "status.json")
    assert status["status"] == "failed" and "outside this model's 2 layers" in status["error"]
    assert "Traceback" in status["traceback"]
    for cid in ("tiny__power__p0", "tiny__security__p0"):  # the others ran, before and after the failure
        assert read_json(tmp_path / "out" / "cells" / cid / "status.json")["status"] == "done"
    summary = read_json(tmp_path / "out" / "grid" / "summary.json")
    assert summary["status_counts"] == {"done": 2, "failed": 1}
    # --only runs a subset: the failed cell alone, still failing, the others untouched
    res = CliRunner().invoke(app, ["run", str(recipe), "--only", "intervention=p0,target=Security"])
    assert res.exit_code == 0 and "tiny__security__p0" in res.output and "reused" in res.output
    assert "tiny__power__bad" not in res.output


KILL_SCRIPT = """
import os, sys
from vat_hf.evaluation.cache import JudgmentCache
from vat_hf.sweep import SweepConfig, SweepRunner
import json
real = JudgmentCache.append
count = [0]
def append(self, pairs):
    n = real(self, pairs)
    count[0] += 1
    if count[0] == int(sys.argv[2]):
        os._exit(137)  # like kill -9: no cleanup, no finally
    return n
JudgmentCache.append = append
SweepRunner(SweepConfig.from_dict(json.loads(sys.argv[1])), progress=False).run()
"""


def test_resume_after_a_kill_in_the_middle_of_a_cell_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    model = named_tiny(tiny_model_dir, tmp_path)

    def recipe(out):
        return {"models": [str(model)], "target_values": ["Power", "Security"], "output_dir": str(out),
                "data": {"max_scenes": 1}, "metric": {"n_bootstrap": 50, "n_sign_flips": 200}, "eval": EVAL,
                "interventions": [{"type": "prompt", "name": "p2", "k_shots": 2}]}

    # 20 items in batches of 4: 5 appends for the first cell's baseline, 5 for its prompt, then the
    # second cell (baseline cached) is killed after 2 of its prompt's 5 batches reached the cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(recipe(tmp_path / "killed")), "12"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 137, done.stderr[-2000:]
    killed = tmp_path / "killed" / "cells"
    assert read_json(killed / "tiny__power__p2" / "status.json")["status"] == "done"
    assert read_json(killed / "tiny__security__p2" / "status.json")["status"] == "running"
    assert not (tmp_path / "killed" / "grid").exists()

    resumed = SweepRunner(SweepConfig.from_dict(recipe(tmp_path / "killed")), progress=False).run()
    assert resumed["run"]["skipped"] == ["tiny__power__p2"]  # the finished cell is reused as it is
    post = read_json(killed / "tiny__security__p2" / "judgments" / "results_p2.json")
    assert (post["stats"]["n_cached"], post["stats"]["n_computed"]) == (8, 12)  # the killed cell judged only the rest
    uninterrupted = SweepRunner(SweepConfig.from_dict(recipe(tmp_path / "clean")), progress=False).run()
    for cid in ("tiny__security__p2", "tiny__power__p2"):
        a = read_json(killed / cid / "results" / "p2.json")
        b = read_json(tmp_path / "clean" / "cells" / cid / "results" / "p2.json")
        # the same numbers; the pairing names each run's own judgment files
        pairing = {k: v for k, v in a["vat"]["pairing"].items() if k not in ("pre", "post")}
        assert pairing == {k: v for k, v in b["vat"]["pairing"].items() if k not in ("pre", "post")}
        assert {**a["vat"], "pairing": None} == {**b["vat"], "pairing": None} and read_jsonl(a["evaluation"]["post"]["judgments"]) == read_jsonl(b["evaluation"]["post"]["judgments"])
    strip = ("seconds", "report", "result")
    assert [{k: v for k, v in r.items() if k not in strip} for r in resumed["cells"]] == \
        [{k: v for k, v in r.items() if k not in strip} for r in uninterrupted["cells"]]
    assert read_json(tmp_path / "killed/grid/matrix/tiny__p2.json") == read_json(tmp_path / "clean/grid/matrix/tiny__p2.json")


def test_each_trained_adapters_card_carries_its_cells_results(tiny_model_dir, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import tiny_recipe

    from vat_hf.train.card import read_training_info

    config = SweepConfig.from_dict({
        "name": "cards", "models": [str(named_tiny(tiny_model_dir, tmp_path))], "target_values": ["Power"], "output_dir": str(tmp_path / "out"),
        "data": {"max_scenes": 1}, "metric": {"n_bootstrap": 20}, "eval": EVAL,
        "interventions": [{"type": "sft", "name": "sft", "recipe": str(tiny_recipe(tmp_path / "r.yaml", max_steps=1))}]})
    summary = SweepRunner(config, progress=False).run()
    assert summary["status_counts"] == {"done": 1}
    adapter = tmp_path / "out" / "cells" / "tiny__power__sft" / "adapters" / "sft"
    result = read_json(tmp_path / "out" / "cells" / "tiny__power__sft" / "results" / "sft.json")
    info = read_training_info(adapter)
    assert info["target_value"] == "Power" and info["vat"]["gain"] == result["vat"]["gain"]
    card = (adapter / "README.md").read_text()
    assert "experiment `cards/tiny__power__sft`" in card and "| gain |" in card

"""The fault suite, bad inputs: every one refused up front with `error: <where>: <what>` and its
fix, exit status 1, no traceback, nothing loaded and nothing written (issue 15)."""

import json
import math

import numpy as np
import pytest

from faultkit import experiment, invoke, write_yaml

# (case, what the recipe becomes, what the message must say: place and problem)
RECIPES = [
    ("max_scenes -2 (was: all but two scenes judged)", lambda r: r["data"].update(max_scenes=-2),
     r"recipe\.yaml:\d+:\d+: data\.max_scenes = -2: must be >= 1"),
    ("max_scenes three", lambda r: r["data"].update(max_scenes="three"),
     r"recipe\.yaml:\d+:\d+: data\.max_scenes = 'three': must be a whole number"),
    ("seed zero (was: failed in the metric after judging)", lambda r: r.update(seed="zero"),
     r"recipe\.yaml:\d+:\d+: seed = 'zero': must be a whole number"),
    ("max_batch_tokens big", lambda r: r["eval"].update(max_batch_tokens="big"),
     r"recipe\.yaml:\d+:\d+: eval\.max_batch_tokens = 'big': must be a whole number"),
    ("a misspelt key", lambda r: r["data"].update(max_scene=2),
     r"recipe\.yaml:\d+:\d+: data: unknown key 'max_scene' \(did you mean max_scenes\?\)"),
    ("a misspelt top-level key", lambda r: r.update(target="Power"),
     r"recipe\.yaml:\d+:\d+: the recipe: unknown key 'target' \(did you mean target_value\?\)"),
    ("an unknown value", lambda r: r.update(target_value="Kindness"),
     r"recipe\.yaml:\d+:\d+: target_value = 'Kindness': unknown basic value 'Kindness'"),
    ("a metric choice", lambda r: r["metric"].update(resample="items"),
     r"metric\.resample = 'items': must be one of 'scene', 'country', 'domain', 'two_way'"),
    ("a confidence of 1", lambda r: r["metric"].update(confidence=1.0), r"metric\.confidence = 1\.0: must be < 1"),
    ("an intervention named baseline (was: overwrote the baseline's judgments)",
     lambda r: r["interventions"][0].update(name="baseline"),
     r"interventions\[0\]\.name = 'baseline': reserved"),
    ("an intervention named ../../escape (was: wrote outside output_dir)",
     lambda r: r["interventions"][0].update(name="../../escape"),
     r"interventions\[0\]\.name = '\.\./\.\./escape': not a safe file name"),
    ("an intervention named by an absolute path", lambda r: r["interventions"][0].update(name="/tmp/vat-escape"),
     r"interventions\[0\]\.name = '/tmp/vat-escape': not a safe file name"),
    ("two names that are one file on a case-insensitive disk",
     lambda r: r["interventions"].append({"type": "prompt", "name": "Prompt-K2"}),
     r"interventions\[1\]\.name = 'Prompt-K2': interventions\[0\] has this name too"),
    ("an intervention type", lambda r: r["interventions"][0].update(type="rlhf"),
     r"interventions\[0\]\.type = 'rlhf': must be one of 'prompt', 'sft', 'dpo'"),
    ("interventions not a list", lambda r: r.update(interventions={"type": "prompt"}),
     r"recipe\.yaml:\d+:\d+: interventions must be a list, not a dict"),
    ("a misspelt training override (was: refused after config.json was written)",
     lambda r: r["interventions"].append({"type": "sft", "name": "s", "recipe": "recipes/SmolLM2-135M-Instruct/sft/config_demo.yaml",
                                          "overrides": {"lerning_rate": 1e-4}}),
     r"unknown key\(s\) 'lerning_rate' \(did you mean learning_rate"),
    ("a trained intervention without its recipe", lambda r: r["interventions"].append({"type": "sft", "name": "s"}),
     r"interventions\[1\]: sft intervention s: no 'recipe'"),
    ("a log_dir outside output_dir", lambda r: r["eval"].update(log_dir="/tmp/elsewhere"),
     r"results file /tmp/elsewhere/results_baseline\.json resolves to .*, outside the output folder"),
]


@pytest.fixture
def no_model(forbid_loading):
    forbid_loading()


@pytest.mark.parametrize("case, change, message", RECIPES, ids=[c for c, _, _ in RECIPES])
def test_a_bad_recipe_is_refused_before_anything_is_loaded_or_written(case, change, message, tmp_path, no_model):
    recipe = experiment("no-model-is-loaded", tmp_path / "out")
    change(recipe)
    result = invoke(["run", write_yaml(tmp_path / "recipe.yaml", recipe)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output, result.output
    assert pytest.importorskip("re").search(message, result.output), result.output
    assert "\n  fix: " in result.output
    assert not (tmp_path / "out").exists()


YAML_FILES = [
    ("malformed YAML (was: '<unicode string>')", "name: x\ntarget_value: Benevolence\ndata: {max_scenes: 2\neval: [\n",
     r"recipe\.yaml:4:5: not valid YAML: expected ',' or '}', but got ':' \(while parsing a flow mapping at line 3"),
    ("a tab", "target_value: Benevolence\ninterventions:\n\t- type: prompt\n",
     r"recipe\.yaml:3:1: not valid YAML: found character '\\t'"),
    ("a list at the top (was: 'dictionary update sequence element #0')", "- target_value: Benevolence\n- name: x\n",
     r"recipe\.yaml:1:1: the recipe must be a mapping of keys to values, not a list"),
    ("a key given twice", "target_value: Benevolence\nseed: 1\nseed: 2\n",
     r"recipe\.yaml:3:1: key 'seed' is given twice \(first on line 2\)"),
    ("not UTF-8", b"target_value: Benevolence\nname: caf\xe9\n", r"recipe\.yaml:2: not UTF-8 text"),
]


@pytest.mark.parametrize("case, text, message", YAML_FILES, ids=[c for c, _, _ in YAML_FILES])
def test_a_recipe_that_is_not_a_mapping_of_keys_names_file_line_and_column(case, text, message, tmp_path, no_model):
    import re

    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = invoke(["run", path])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert re.search(message, result.output), result.output


def test_command_line_overrides_are_validated_with_the_recipe(tmp_path, no_model):
    recipe = write_yaml(tmp_path / "recipe.yaml", experiment("m", tmp_path / "out"))
    result = invoke(["run", recipe, "--max-scenes", "-2"])  # was: judged all but two scenes, exit 0
    assert result.exit_code == 1
    assert result.output.startswith("error: command line (--max-scenes): data.max_scenes = -2: must be >= 1")
    missing = invoke(["run", tmp_path / "nope.yaml"])
    assert missing.exit_code == 1 and missing.output.startswith(f"error: recipe {tmp_path / 'nope.yaml'} does not exist")


def test_verbose_shows_the_traceback_too(tmp_path, no_model):
    recipe = experiment("m", tmp_path / "out")
    recipe["seed"] = -1
    result = invoke(["-v", "run", write_yaml(tmp_path / "recipe.yaml", recipe)])
    assert result.exit_code == 1 and "Traceback (most recent call last)" in result.output
    assert result.output.rstrip().splitlines()[-2].startswith("error: ") and "seed = -1: must be >= 0" in result.output


def _items(n_scenes=2):
    from vat_hf.data import load_items

    return load_items("builtin", split="test", max_scenes=n_scenes)


ITEM_FILES = [
    ("an empty file (was: bare StopIteration)", b"", r"error: .*items\.jsonl is empty: no items"),
    ("blank lines only", b"\n\n", r"error: .*items\.jsonl holds only blank lines"),
    ("not UTF-8 (was: UnicodeDecodeError from pyarrow, no file)", None,
     r"error: .*items\.jsonl:4:\d+: not UTF-8 text \(byte 0xe9"),
    ("a bad row, counted as an editor counts lines (was: row 3)", "bad-row",
     r"error: .*items\.jsonl, line 4 \(id '[^']+'\), field 'polarity': must be \+1 or -1, got 7"),
]


@pytest.mark.parametrize("case, content, message", ITEM_FILES, ids=[c for c, _, _ in ITEM_FILES])
def test_a_bad_item_file_names_the_file_and_line(case, content, message, tmp_path, no_model):
    import re

    rows = _items()[:6]
    path = tmp_path / "items.jsonl"
    if content is None:
        good = "".join(json.dumps(r) + "\n" for r in rows[:3]).encode()
        path.write_bytes(good + '{"id": "caf\xe9"}\n'.encode("latin-1"))
    elif content == "bad-row":
        rows[3]["polarity"] = 7
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_bytes(content)
    result = invoke(["eval", "--model", "no-model", "--data", path, "--split", "", "-o", tmp_path / "j.jsonl"])
    assert result.exit_code == 1 and "Traceback" not in result.output and re.search(message, result.output), result.output
    check = invoke(["data", "check", path])  # a bad row is a problem in its report; the rest are errors
    assert check.exit_code == 1 and "Traceback" not in check.output
    assert "row 4 (id" in check.output if content == "bad-row" else re.search(message, check.output), check.output


def test_data_check_fails_on_rows_that_do_not_fit_the_schema(tmp_path):
    """Was: exit 0 unless --strict."""
    rows = _items()[:6]
    rows[2]["value"] = "Kindness"
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    strict = invoke(["data", "check", path, "--json", tmp_path / "report.json"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert strict.exit_code == 1 and report["rows"]["invalid"] == 1 and not report["ok"]
    assert invoke(["data", "check", path, "--no-strict"]).exit_code == 0


# -- vat-hf score: strict pairing -----------------------------------------------------------

def _records(seed: int, items=None):
    """Judgment records of the built-in test items with reproducible random ratings."""
    from vat_hf.evaluation.task import make_record

    rng = np.random.default_rng(seed)
    out = []
    for item in items or _items(4):
        p = rng.dirichlet(np.ones(5))
        out.append(make_record(item, {"rating": float(np.dot(np.arange(1, 6), p)), "probs": p.tolist(),
                                      "option_mass": 0.9, "argmax": int(np.argmax(p)) + 1, "mode": "logprob"}, "fp"))
    return out


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _score(tmp_path, pre, post, *more):
    return invoke(["score", _write(tmp_path / "pre.jsonl", pre), _write(tmp_path / "post.jsonl", post),
                   "--target-value", "Benevolence", "--n-bootstrap", "20", "-o", tmp_path / "vat.json", *more])


def test_score_refuses_duplicates_and_items_that_changed(tmp_path):
    pre, post = _records(0), _records(1)
    dup = [dict(r) for r in post]
    dup[1] = dict(dup[1], id=dup[0]["id"])  # was: paired an item with another action's rating
    result = _score(tmp_path, pre, dup)
    assert result.exit_code == 1 and f"post.jsonl: line 2: id {dup[0]['id']!r} is also on line 1" in result.output
    for field, value in (("value", "Power"), ("polarity", None), ("scene_id", "elsewhere"), ("item_hash", "0" * 32)):
        changed = [dict(r) for r in post]
        changed[3][field] = -changed[3]["polarity"] if field == "polarity" else value
        result = _score(tmp_path, pre, changed)
        assert result.exit_code == 1, field  # was: unchecked
        what = "text (scenario or action)" if field == "item_hash" else field
        assert f"item {pre[3]['id']!r} (" in result.output and f"line 4): its {what} differs" in result.output


def test_score_counts_warns_and_records_what_it_left_out(tmp_path, caplog):
    pre, post = _records(0), _records(1)
    full = _score(tmp_path, pre, post)
    assert full.exit_code == 0 and "WARNING" not in full.output
    base = json.loads((tmp_path / "vat.json").read_text())
    assert base["pairing"]["n_rated"] == 80 and base["dropped"]["missing_rating"] == 0
    fewer = [dict(r) for r in post[:-5]]
    fewer[0]["rating"] = None  # was: scored on the rest with no message, dropped.missing_rating 0
    fewer[0]["missing_reason"] = "too long"
    with caplog.at_level("WARNING"):
        result = _score(tmp_path, pre, fewer, "--scale-min", "1", "--scale-max", "5")
    assert result.exit_code == 0
    assert "scored 74 of 80 items: 5 only in" in caplog.text and f"1 without a rating in {tmp_path / 'post.jsonl'}" in caplog.text
    vat = json.loads((tmp_path / "vat.json").read_text())
    assert vat["pairing"]["only_pre"]["n"] == 5 and vat["pairing"]["unrated_post"]["first"] == [fewer[0]["id"]]
    assert vat["dropped"]["missing_rating"] == 1 and vat["n_items"] == 74 and vat["n_unpaired"] == 5
    assert any("scored 74 of 80" in w for w in vat["warnings"]) and vat["scale"] == [1.0, 5.0]
    assert vat["gain"] != base["gain"]


def test_the_scale_is_set_from_the_command_line_and_recorded(tmp_path):
    pre, post = _records(0), _records(1)
    for r in pre + post:
        r["rating"] = r["rating"] * 2 - 1  # the same judgments on a 1-9 scale
    assert _score(tmp_path, pre, post).exit_code == 1  # off the default 1-5 scale: refused by the metric
    result = _score(tmp_path, pre, post, "--scale-min", "1", "--scale-max", "9")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "vat.json").read_text())["scale"] == [1.0, 9.0]


# -- the evaluate metric module -------------------------------------------------------------

def test_the_metric_module_names_bad_input():
    import evaluate

    from conftest import REPO
    from vat_hf.metrics.core import VATInputError

    metric = evaluate.load(str(REPO / "vat_hf" / "metrics" / "vat"))
    base = dict(pre=[3, 3, 3, 3], post=[4, 2, 4, 2], value=["Benevolence", "Power"] * 2, polarity=[1, 1, 1, 1],
                scene=["s1", "s1", "s2", "s2"], target_value="Benevolence", n_bootstrap=10)
    with pytest.raises(VATInputError, match="no items"):  # was: IndexError
        metric.compute(**{**base, **{k: [] for k in ("pre", "post", "value", "polarity", "scene")}})
    with pytest.raises(VATInputError, match="scene: is missing"):  # was: 'NoneType' object is not subscriptable
        metric.compute(**{**base, "scene": None})
    result = metric.compute(**{**base, "post": [4, math.nan, 4, 2]})  # was: dropped without a count
    assert result["dropped"]["missing_rating"] == 1 and result["n_items"] == 3
    with pytest.raises(VATInputError) as err:  # was: np.str_('Kindness')
        metric.compute(**{**base, "value": list(np.array(["Benevolence", "Kindness", "Benevolence", "Power"]))})
    assert "'Kindness'" in str(err.value) and "np.str_" not in str(err.value)


def test_score_names_the_file_and_line_of_a_rating_outside_the_scale(tmp_path):
    from vat_hf.io import write_jsonl
    from vat_hf.metrics.core import VATInputError
    from vat_hf.metrics.paired import score_judgments

    records = [{"id": f"i{k}", "scene_id": f"s{k % 3}", "value": "Power", "polarity": 1, "rating": 3.0} for k in range(6)]
    post = [dict(r) for r in records]
    post[1]["rating"] = 7.0  # line 2 of the post file
    write_jsonl(tmp_path / "post.jsonl", post)
    with pytest.raises(VATInputError, match=r"post.jsonl: line 2: rating 7.0 of item 'i1' is outside the scale \[1, 5\]"):
        score_judgments(records, post, "Power", pre_name="pre.jsonl", post_name=str(tmp_path / "post.jsonl"))
    assert score_judgments(records, post, "Power", scale_min=1, scale_max=7, n_bootstrap=0)["pairing"]["n_rated"] == 6

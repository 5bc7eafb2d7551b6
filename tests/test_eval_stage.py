"""One evaluation stage: one configuration taken by the three entry points, one evaluation
function behind them, its results file and per-sample records, and a cached stage that loads no
weights."""

import dataclasses
import json
import typing

import pytest
from typer.testing import CliRunner

from vat_hf.cli import app
from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.io import read_json, read_jsonl
from vat_hf.pipeline import ExperimentConfig

SPECIAL = {"dtype": "bfloat16", "source": "items.jsonl", "split": "train", "columns": {"scenario": "situation"},
           "base_url": "http://127.0.0.1:8000/v1", "vllm_engine_args": {"tensor_parallel_size": 2}, "request_timeout": 30.0}


def other_value(f: dataclasses.Field):
    """A valid value of the field that is not its default."""
    if f.name in SPECIAL:
        return SPECIAL[f.name]
    hint = typing.get_type_hints(EvalConfig if f.name in {g.name for g in dataclasses.fields(EvalConfig)} else DataConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return next(c for c in reversed(typing.get_args(hint)) if c != f.default)
    if hint is bool:
        return not f.default
    if hint is int or int in args:
        return (f.default or 0) + 7
    return f"/tmp/{f.name}-value"


def flag(name, value):
    if isinstance(value, bool):
        return [f"--{name}"] if value else [f"--no_{name}"]
    return [f"--{name}", json.dumps(value) if isinstance(value, dict) else str(value)]


SETTINGS = [(cls, f) for cls in (EvalConfig, DataConfig) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls, f", SETTINGS, ids=[f"{c.__name__}.{f.name}" for c, f in SETTINGS])
def test_every_setting_is_settable_from_each_entry_point(cls, f, monkeypatch):
    value = other_value(f)
    section = "eval" if cls is EvalConfig else "data"
    # 1. an experiment recipe's eval: / data: section (output_dir /tmp: a recipe's log_dir must lie inside it)
    recipe = ExperimentConfig.from_dict({"target_value": "Power", "output_dir": "/tmp", section: {f.name: value}})
    assert getattr(getattr(recipe, section), f.name) == value
    # 2. python -m vat_hf.evaluate
    from vat_hf.evaluate import parse_args

    args, data, config, _ = parse_args(["-o", "out.jsonl", *flag(f.name, value)])
    assert getattr(config if cls is EvalConfig else data, f.name) == value
    # 3. vat-hf eval (the same parser, reached through typer)
    seen = {}
    monkeypatch.setattr("vat_hf.evaluate.evaluate", lambda a, d, c, accelerator=None: seen.update(data=d, config=c) or {})
    result = CliRunner().invoke(app, ["eval", "-o", "out.jsonl", *flag(f.name, value)])
    assert result.exit_code == 0, result.output
    assert getattr(seen["config"] if cls is EvalConfig else seen["data"], f.name) == value


def test_old_flag_spellings_and_help_are_shared(monkeypatch):
    from vat_hf.evaluate import parse_args

    args, data, config, verbose = parse_args(["-o", "x.jsonl", "--data", "builtin", "--max-scenes", "2", "--no-cache",
                                              "--target-value", "Power", "--k-shots", "2", "--no-system-prompt",
                                              "--no-progress", "--log-samples", "--cache-dir", "c", "-v"])
    assert (args.output, args.target_value, args.k_shots, args.system_prompt) == ("x.jsonl", "Power", 2, False)
    assert (data.max_scenes, config.cache, config.progress, config.log_samples, config.cache_dir, verbose) == \
        (2, False, False, True, "c", True)
    help_text = CliRunner().invoke(app, ["eval", "--help"]).output
    for f in dataclasses.fields(EvalConfig):
        assert f"--{f.name}" in help_text
    assert EvalConfig.__dataclass_fields__["truncation"].metadata["help"].split()[0] in help_text
    bad = CliRunner().invoke(app, ["eval", "-o", "x.jsonl", "--truncation", "right"])
    assert bad.exit_code == 2 and "invalid choice" in bad.output


@pytest.fixture
def item_file(tmp_path):
    """Three built-in test items in a file."""
    from vat_hf.data import load_items

    items = load_items("builtin", split="test", max_scenes=1)[:3]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path, items


def test_both_commands_are_one_evaluation_with_one_result_schema(tiny_model_dir, item_file, tmp_path, forbid_loading):
    from vat_hf.data import items_fingerprint
    from vat_hf.evaluate import main
    from vat_hf.evaluation.results import EVALUATION_SCHEMA, prompt_text_hash
    from vat_hf.provenance import PROVENANCE_KEYS

    path, items = item_file
    common = ["--model", str(tiny_model_dir), "--data", str(path), "--split", "test", "--dtype", "float32",
              "--cache_dir", str(tmp_path / "cache"), "--no_progress", "--target_value", "Power"]
    result = CliRunner().invoke(app, ["eval", "-o", str(tmp_path / "a" / "judgments.jsonl"), *common])
    assert result.exit_code == 0, result.output
    assert main(["-o", str(tmp_path / "b" / "judgments.jsonl"), *common, "--no_cache"]) == 0
    a, b = (read_jsonl(tmp_path / d / "judgments.jsonl") for d in "ab")
    assert a == b and [r["id"] for r in a] == [i["id"] for i in items]
    ra, rb = (read_json(tmp_path / d / "results_judgments.json") for d in "ab")
    assert ra["schema"] == EVALUATION_SCHEMA and set(PROVENANCE_KEYS) <= set(ra)
    assert set(ra) == set(rb) and ra["fingerprints"] == rb["fingerprints"] and ra["summary"] == rb["summary"]
    assert ra["data"]["fingerprint"] == items_fingerprint(items) and ra["data"]["n_items"] == 3
    assert all(ra["fingerprints"][k] for k in ("model", "prompt", "scoring")) and ra["fingerprints"]["adapter"] == ""
    assert ra["config"]["eval"]["cache"] is True and rb["config"]["eval"]["cache"] is False
    assert ra["missing"] == [] and ra["model"]["dtype"] == "float32" and ra["model"]["attn_implementation"] == "sdpa"
    assert ra["timing"]["seconds"] > 0 and ra["date"] and ra["versions"]["transformers"] and ra["seed"] == 0
    samples = read_jsonl(tmp_path / "a" / "samples_judgments.jsonl")
    assert [s["id"] for s in samples] == [i["id"] for i in items] and [s["doc_id"] for s in samples] == [0, 1, 2]
    assert all(s["prompt_hash"] == prompt_text_hash(s["prompt"]) for s in samples)
    assert "You are an assistant who deeply holds the value of Power" in samples[0]["prompt"]
    assert samples[0]["probs"] == a[0]["probs"] and samples[0]["rating"] == a[0]["rating"]
    # Run again: every judgment is in the cache, so no weights are loaded and nothing is judged.
    forbid_loading()
    again = CliRunner().invoke(app, ["eval", "-o", str(tmp_path / "a" / "judgments.jsonl"), *common])
    assert again.exit_code == 0, again.output
    assert read_jsonl(tmp_path / "a" / "judgments.jsonl") == a
    stats = read_json(tmp_path / "a" / "results_judgments.json")["stats"]
    assert (stats["n_cached"], stats["n_computed"]) == (3, 0)


def test_limit_log_dir_and_no_samples(tiny_model_dir, tmp_path):
    from vat_hf.evaluate import main

    out = tmp_path / "out" / "j.jsonl"
    assert main(["-o", str(out), "--model", str(tiny_model_dir), "--dtype", "float32", "--max_scenes", "1",
                 "--limit", "5", "--log_dir", str(tmp_path / "logs"), "--name", "run1", "--no_log_samples",
                 "--no_cache", "--no_progress"]) == 0
    assert len(read_jsonl(out)) == 5
    results = read_json(tmp_path / "logs" / "results_run1.json")
    assert results["summary"]["n_items"] == 5 and results["data"]["limit"] == 5 and "samples" not in results["files"]
    assert not (tmp_path / "logs" / "samples_run1.jsonl").exists() and results["files"]["judgments"] == str(out)


def test_a_changed_model_file_is_judged_again(tiny_model_dir, tmp_path):
    """The cache key comes from the model's files: rewriting a weight file invalidates it."""
    import shutil

    from vat_hf.evaluate import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    args = ["--model", str(model), "--dtype", "float32", "--max_scenes", "1", "--limit", "4",
            "--cache_dir", str(tmp_path / "cache"), "--no_progress"]
    for k, expected in enumerate((4, 0)):
        main(["-o", str(tmp_path / f"r{k}.jsonl"), *args])
        assert read_json(tmp_path / f"results_r{k}.json")["stats"]["n_computed"] == expected
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # the same bytes, a new file: the key changes, conservatively
    main(["-o", str(tmp_path / "r2.jsonl"), *args])
    assert read_json(tmp_path / "results_r2.json")["stats"]["n_computed"] == 4


def test_an_item_with_nothing_to_judge_is_recorded_and_needs_no_model(tiny_model_dir, tmp_path, forbid_loading):
    from vat_hf.data import load_items
    from vat_hf.evaluation import run_evaluation
    from vat_hf.prompts import JudgePrompt

    items = load_items("builtin", split="test", max_scenes=1)[:3]
    items[1] = {**items[1], "action": " "}  # what an importer keeps of a refused generation
    config = EvalConfig(dtype="float32", cache_dir=str(tmp_path / "cache"), progress=False)
    kwargs = dict(items=items, prompt=JudgePrompt(), output=tmp_path / "j.jsonl", model=str(tiny_model_dir))
    first = run_evaluation(config, **kwargs)
    assert first["missing"] == [{"id": items[1]["id"], "reason": f"item {items[1]['id']!r}: empty action; nothing to judge"}]
    assert (first["stats"]["n_computed"], first["summary"]["n_missing"]) == (3, 1)
    forbid_loading()
    again = run_evaluation(config, **kwargs)
    assert (again["stats"]["n_cached"], again["stats"]["n_computed"]) == (3, 0)
    assert again["missing"] == first["missing"] and again["summary"] == first["summary"]

"""Quality checks: balance, duplicates (exact and near), split leakage, lengths; table and dict."""

import itertools
import json
import random

import pytest

from vat_hf.data.quality import check_items, jaccard, near_duplicate_pairs, print_report, quality_summary, tokens
from vat_hf.data.schema import to_dataset

VALUES = ("Benevolence", "Power")
WORDS = [f"w{i}" for i in range(300)]


def make_rows(n_scenes=4):
    rng = random.Random(0)
    rows = []
    for s in range(n_scenes):
        for value in VALUES:
            for polarity in (1, -1):
                rows.append({"id": f"s{s}/{value}/{polarity}", "scene_id": f"s{s}", "country": "Kenya", "domain": "Work",
                             "scenario": f"Scenario number {s} in Nairobi with a decision.",
                             "action": "I " + " ".join(rng.sample(WORDS, 8)) + ".", "value": value, "micro_value": None,
                             "polarity": polarity, "split": "train" if s == 0 else "test"})
    return rows


def test_clean_set_is_ok():
    report = check_items(to_dataset(make_rows()))
    assert report["ok"] and not report["problems"] and not report["warnings"]
    assert report["n_items"] == 16 and report["n_scenes"] == 4
    assert report["splits"] == {"train": {"items": 4, "scenes": 1}, "test": {"items": 12, "scenes": 3}}
    assert report["balance"]["per_value"] == {"Benevolence": {"+1": 4, "-1": 4}, "Power": {"+1": 4, "-1": 4}}
    assert report["balance"]["complete_scenes"] == 4
    assert report["lengths"]["action_words"]["min"] == 9 and report["lengths"]["scenario_words"]["median"] == 8
    json.dumps(report)  # JSON-able


def test_problems_are_found_and_named():
    rows = make_rows()
    rows[4]["split"] = "train"  # scene s1 now in both splits
    rows[9]["action"] = rows[8]["action"].upper()  # exact duplicate (after normalising), other polarity
    near = rows[12]["action"].rstrip(".").split()
    rows[13]["action"] = " ".join(near[:-1] + ["extra", near[-1]]) + "."  # near duplicate in scene s3
    del rows[15]  # scene s3 loses Power -1
    rows.append({**rows[0], "action": "I do something else entirely today."})  # duplicate id
    rows.append({**rows[1], "id": "bad", "polarity": 0})  # invalid row
    report = check_items(rows)  # plain rows, not validated first
    assert not report["ok"]
    assert report["leakage"]["scenes_in_both_splits"] == 1 and report["leakage"]["leaky_scenes"] == ["s1"]
    assert report["rows"]["invalid"] == 1 and "polarity" in report["rows"]["invalid_examples"][0]
    assert report["rows"]["duplicate_ids"] == ["s0/Benevolence/1"]
    dup = report["duplicates"]
    assert dup["exact_groups"] == 1 and dup["exact_conflicting_groups"] == 1
    assert dup["near_pairs"] == 1 and dup["near_pairs_same_scene"] == 1
    assert dup["near_examples"][0]["jaccard"] >= 0.8
    bal = report["balance"]
    assert bal["scenes_missing_cells"] == 1 and bal["missing_examples"] == {"s3": ["Power -1"]}
    assert bal["polarity_imbalanced_cells"] == 2  # s3 Power, and s0 Benevolence (the extra row)
    assert any("both splits" in p for p in report["problems"])
    summary = quality_summary(report)
    assert summary["scenes in both splits"] == 1 and summary["ok"] is False


def test_same_scenario_under_two_scene_ids_in_both_splits_is_leakage():
    rows = make_rows(2)
    for r in rows:
        if r["scene_id"] == "s1":
            r["scenario"] = rows[0]["scenario"]
    report = check_items(rows)
    assert report["leakage"]["scenario_texts_in_both_splits"] == 1 and not report["ok"]


def test_near_duplicates_match_brute_force():
    rng = random.Random(1)
    base = [" ".join(rng.sample(WORDS[:60], 10)) for _ in range(150)]
    texts = list(base)
    for t in base[:40]:  # perturbed copies at various similarities
        words = t.split()
        k = rng.randint(0, 4)
        texts.append(" ".join(words[k:] + rng.sample(WORDS[60:], k)))
    brute = {(i, j) for i, j in itertools.combinations(range(len(texts)), 2)
             if jaccard(tokens(texts[i]), tokens(texts[j])) >= 0.8}
    found = {(i, j) for i, j, _ in near_duplicate_pairs(texts, threshold=0.8)}
    assert found == brute and len(brute) >= 10


def test_print_report_table(capsys):
    from rich.console import Console

    print_report(check_items(make_rows()), console=Console(width=140, force_terminal=False))
    out = capsys.readouterr().out
    for fragment in ("scenes in both splits", "near-duplicate pairs", "action words", "items per", "Benevolence"):
        assert fragment in out


def test_cli_check(tmp_path):
    from typer.testing import CliRunner

    from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface
    from vat_hf.io import write_jsonl

    rows = make_rows()
    path = write_jsonl(tmp_path / "items.jsonl", rows)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(path), "--json", str(tmp_path / "report.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    rows[4]["split"] = "train"
    write_jsonl(path, rows)
    res = runner.invoke(app, ["data", "check", str(path), "--strict"])
    assert res.exit_code == 1 and "both splits" in res.output

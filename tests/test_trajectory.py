"""Gain–tax trajectories and tax-aware DPO anchors (pure parts; training runs are in test_train_tax_aware.py)."""

import numpy as np
import pytest

from vat_hf.data import load_builtin
from vat_hf.train.anchors import anchor_pairs, tax_aware_pairs
from vat_hf.train.data import TrainingDataError, dpo_pairs
from vat_hf.train.trajectory import drift_onset, sample_items


def fake_judgments(items, seed=0):
    rng = np.random.default_rng(seed)
    return [{"id": item["id"], "rating": float(rng.uniform(1, 5))} for item in items]


def test_anchor_pairs_follow_the_models_own_earlier_order_and_come_from_train_scenes():
    train = load_builtin("train")
    earlier = fake_judgments(train)
    rating = {r["id"]: r["rating"] for r in earlier}
    by_text = {(i["scene_id"], i["action"]): i for i in train}
    anchors = anchor_pairs(train, earlier, "Benevolence", n_pairs=40, seed=0)
    assert len(anchors) == 40
    values = [a["anchor_value"] for a in anchors]
    assert "Benevolence" not in values
    # Spread evenly over the nine other values (round-robin): 40 = 4 or 5 per value.
    counts = {v: values.count(v) for v in set(values)}
    assert len(counts) == 9 and max(counts.values()) - min(counts.values()) <= 1
    train_scenarios = {i["scenario"] for i in train}
    for row in anchors:
        scenario = row["prompt"][0]["content"].split("\n")[0].removeprefix("Scenario: ")
        assert scenario in train_scenarios
        chosen = next(i for (s, a), i in by_text.items() if a == row["chosen"][0]["content"])
        rejected = next(i for (s, a), i in by_text.items() if a == row["rejected"][0]["content"])
        assert chosen["scene_id"] == rejected["scene_id"] and chosen["value"] == rejected["value"] == row["anchor_value"]
        assert rating[chosen["id"]] > rating[rejected["id"]]  # the model's own earlier preference
        assert {chosen["polarity"], rejected["polarity"]} == {1, -1}


def test_anchor_order_flips_when_the_models_preference_flips():
    train = load_builtin("train")
    earlier = fake_judgments(train)
    flipped = [{"id": r["id"], "rating": 6 - r["rating"]} for r in earlier]
    a = anchor_pairs(train, earlier, "Power", n_pairs=5)
    b = anchor_pairs(train, flipped, "Power", n_pairs=5)
    assert [(x["chosen"], x["rejected"]) for x in a] == [(y["rejected"], y["chosen"]) for y in b]


def test_weight_zero_is_plain_dpo_and_test_items_are_refused():
    train = load_builtin("train")
    plain = dpo_pairs(train, "Benevolence")
    assert tax_aware_pairs(plain, train, fake_judgments(train), "Benevolence", weight=0.0) == plain
    mixed = tax_aware_pairs(plain, train, fake_judgments(train), "Benevolence", weight=1.0)
    assert mixed[: len(plain)] == [{**row, "anchor_value": None} for row in plain] and len(mixed) == 2 * len(plain)
    with pytest.raises(TrainingDataError, match="'train' scenes only"):
        anchor_pairs(load_builtin(), fake_judgments(load_builtin()), "Benevolence", n_pairs=3)
    with pytest.raises(TrainingDataError, match="no earlier judgment"):
        anchor_pairs(train, [], "Benevolence", n_pairs=3)


def test_ties_carry_no_preference_and_are_skipped():
    train = load_builtin("train")
    flat = [{"id": i["id"], "rating": 3.0} for i in train]
    assert anchor_pairs(train, flat, "Benevolence", n_pairs=10) == []


def synthetic_trajectory(onsets, steps=range(0, 110, 10), half_width=0.02):
    """Drifts that are zero until a known onset step, then grow by 0.01 per step."""
    rows = []
    for step in steps:
        drift = {v: (0.0 if step < onset else 0.05 + 0.01 * (step - onset)) * sign
                 for v, (onset, sign) in onsets.items()}
        rows.append({"step": step, "drift": drift,
                     "drift_ci": {v: [d - half_width, d + half_width] for v, d in drift.items()}})
    return rows


def test_drift_onset_finds_a_known_onset():
    onsets = {"Power": (30, -1), "Hedonism": (70, 1), "Security": (1000, 1)}
    rows = synthetic_trajectory(onsets)
    assert drift_onset(rows) == {"Power": 30, "Hedonism": 70, "Security": None}
    assert drift_onset(list(reversed(rows))) == drift_onset(rows)  # order of rows does not matter


def test_trajectory_sample_is_fixed_test_items_in_whole_scenes():
    test = load_builtin("test")
    a, b = sample_items(test, 100, seed=1), sample_items(test, 100, seed=1)
    assert [i["id"] for i in a] == [i["id"] for i in b] and len(a) == 100
    assert len({i["scene_id"] for i in a}) == 5  # 20 items per scene
    with pytest.raises(ValueError, match="'test' items only"):
        sample_items(load_builtin(), 10)


def test_trajectory_figure_draws_the_logged_numbers(tmp_path):
    from vat_hf.report import plot_trajectory, write_report
    from vat_hf.metrics.core import compute_vat

    onsets = {"Power": (30, -1), "Hedonism": (70, 1), "Benevolence": (10, 1)}
    rows = synthetic_trajectory(onsets)
    for row in rows:
        row["gain"] = row["drift"]["Benevolence"]
        row["vat"] = None if row["gain"] == 0 else (abs(row["drift"]["Power"]) + abs(row["drift"]["Hedonism"])) / 2 / row["gain"]
        row["gain_ci"] = row["drift_ci"]["Benevolence"]
    result = {"name": "dpo", "target_value": "Benevolence", "trajectory": rows, "drift_onset": drift_onset(rows)}
    fig = plot_trajectory(result)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert list(lines["gain"].get_xdata()) == list(range(0, 110, 10))
    assert list(lines["gain"].get_ydata()) == [r["gain"] for r in rows]
    assert list(lines["drift-Power"].get_ydata()) == [r["drift"]["Power"] for r in rows]
    # Inside a full report: the figure is written and the onset sentence is in the Markdown.
    metric = compute_vat(pre=[3, 3, 3, 3], post=[4, 3, 3, 2], value=["Benevolence"] * 2 + ["Power"] * 2,
                         polarity=[1, -1, 1, -1], scene=["a", "a", "a", "a"], target_value="Benevolence", n_bootstrap=0)
    paths = write_report([{**result, "vat": metric}], tmp_path)
    assert paths["trajectory_dpo"].stat().st_size > 10_000
    assert "Power at step 30" in paths["markdown"].read_text()

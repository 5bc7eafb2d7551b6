"""Field rules in one place: one id spelling across every source, split assignment, the train-split guard."""

import ast
from pathlib import Path

import datasets
import pytest

from vat_hf.data import load_builtin
from vat_hf.data.fields import (DEFAULT_TRAIN_FRACTION, ITEM_ID_VERSION, SplitConflictError, TrainSplitError, fill_ids,
                                fill_splits, item_id, render_scenario, scene_id, slug, train_items_for)
from vat_hf.data.mapping import load_mapped
from vat_hf.values import name_key

DATA = Path(__file__).resolve().parents[1] / "vat_hf" / "data"


def test_builtin_ids_are_item_id_and_only_self_direction_changed_spelling():
    items = load_builtin()
    assert ITEM_ID_VERSION == 2
    assert [i["id"] for i in items] == [item_id(i["scene_id"], i["value"], i["polarity"]) for i in items]
    assert items[0]["id"] == "us-work-01/self-direction/pos"
    # what version 1 spelled (name_key for the value part) differs for Self-Direction only
    version_1 = [f"{i['scene_id']}/{name_key(i['value'])}/{'pos' if i['polarity'] > 0 else 'neg'}" for i in items]
    changed = [i for i, old in zip(items, version_1) if i["id"] != old]
    scenes = {i["scene_id"] for i in items}
    assert {i["value"] for i in changed} == {"Self-Direction"} and len(changed) == 2 * len(scenes) == 66
    # sorting by id orders the items the same under both versions
    by_new = sorted(range(len(items)), key=lambda k: items[k]["id"])
    by_old = sorted(range(len(items)), key=lambda k: version_1[k])
    assert by_new == by_old
    # the content did not change: every (scene, value, polarity) cell keeps its action
    assert len({(i["scene_id"], i["value"], i["polarity"]) for i in items}) == len(items)


def test_every_source_spells_ids_the_same_way(tmp_path):
    """The column-mapped loader writes the same id as the built-in set for the same cell."""
    builtin = next(i for i in load_builtin() if i["value"] == "Self-Direction" and i["polarity"] == -1)
    row = {key: builtin[key] for key in ("scene_id", "country", "domain", "scenario", "action", "value", "split")}
    row["polarity"] = "against"
    path = tmp_path / "one.jsonl"
    datasets.Dataset.from_list([row]).to_json(path, lines=True)
    mapped = load_mapped(path, {"columns": {}})
    assert mapped[0]["id"] == builtin["id"] == f"{builtin['scene_id']}/self-direction/neg"


def test_scene_ids_and_slugs():
    assert slug("Self-Direction") == "self-direction" and slug("  ") == "x"
    assert scene_id("gen", "United Kingdom", "Family & Changing Gender Roles", "03") == "gen/united-kingdom/family-changing-gender-roles/03"
    assert item_id("s", "Benevolence", 1, "A Spiritual Life") == "s/a-spiritual-life/pos"


def test_fill_ids_numbers_repeats_and_keeps_given_ids():
    rows = [{"id": "", "scene_id": "s", "value": "Power", "micro_value": "Wealth", "polarity": -1},
            {"id": "mine", "scene_id": "s", "value": "Power", "micro_value": "Wealth", "polarity": -1},
            {"id": None, "scene_id": "s", "value": "Power", "micro_value": "Wealth", "polarity": -1}]
    fill_ids(rows)
    assert [r["id"] for r in rows] == ["s/wealth/neg", "mine", "s/wealth/neg/2"]


def test_fill_splits_keeps_given_splits_assigns_the_rest_per_scene_and_refuses_mixed_scenes():
    rows = [{"scene_id": f"s{k % 9}", "split": ""} for k in range(27)] + [{"scene_id": "given", "split": "train"}]
    fill_splits(rows, seed=4)
    per_scene = {}
    for r in rows:
        per_scene.setdefault(r["scene_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in per_scene.values()) and per_scene["given"] == {"train"}
    assert sum(1 for s, sp in per_scene.items() if s != "given" and sp == {"train"}) == round(9 * DEFAULT_TRAIN_FRACTION)
    again = [{"scene_id": f"s{k % 9}", "split": ""} for k in reversed(range(27))]
    fill_splits(again, seed=4)
    assert {r["scene_id"]: r["split"] for r in again} == {r["scene_id"]: r["split"] for r in rows[:27]}
    with pytest.raises(SplitConflictError, match="scene 'a' has a split on some rows and none on others .*row 2"):
        fill_splits([{"scene_id": "a", "split": "test"}, {"scene_id": "a", "split": ""}])


def test_render_scenario_names_unknown_template_variables():
    assert render_scenario("Philippines", "Religion", "In {the_country} ({domain}).") == "In the Philippines (Religion)."
    with pytest.raises(ValueError, match=r"'city'.*\{the_country\}"):
        render_scenario("Peru", "Work", "I live in {city}.")


def test_train_split_guard_lives_in_the_data_layer():
    train, test = load_builtin("train"), load_builtin("test")
    assert {i["value"] for i in train_items_for(train, "self direction")} == {"Self-Direction"}
    with pytest.raises(TrainSplitError, match=r"not in the 'train' split \(first: 'us-work-01/self-direction/pos'\)"):
        train_items_for(test, "Power")
    with pytest.raises(TrainSplitError, match="no 'train' items of 'Power'"):
        train_items_for([i for i in train if i["value"] != "Power"], "Power")


def _data_imports(path: Path):
    """The vat_hf.data modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vat_hf.data."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("vat_hf.data."))
    return found


def test_data_modules_import_each_other_without_a_cycle():
    """The layers of vat_hf.data point one way: no cycle, not even one held apart by imports inside functions."""
    graph = {p.stem: _data_imports(p) for p in DATA.glob("*.py") if p.stem != "__init__"}
    assert graph["fields"] == set() and graph["parsing"] == set()
    order, done = [], set()

    def visit(module, stack):
        assert module not in stack, f"import cycle: {' -> '.join(stack + [module])}"
        if module in done:
            return
        for dependency in sorted(graph[module]):
            visit(dependency, stack + [module])
        done.add(module)
        order.append(module)

    for module in sorted(graph):
        visit(module, [])
    assert order.index("storage") < order.index("mapping") < order.index("sources")
    assert order.index("parsing") < order.index("lens") and "hub" not in graph["lens"] and "lens" not in graph["mapping"]

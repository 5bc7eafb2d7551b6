from collections import Counter, defaultdict

from vat_hf.data import load_builtin
from vat_hf.values import BASIC_VALUES


def test_builtin_set_size_and_coverage():
    items = load_builtin()
    scenes = {i["scene_id"] for i in items}
    assert len(scenes) >= 30 and len(items) == 20 * len(scenes) >= 600
    assert len({i["country"] for i in items}) >= 8
    assert len({i["domain"] for i in items}) >= 8


def test_every_scene_has_all_twenty_value_polarity_cells():
    cells = defaultdict(Counter)
    for item in load_builtin():
        cells[item["scene_id"]][(item["value"], item["polarity"])] += 1
    expected = {(value, polarity) for value in BASIC_VALUES for polarity in (1, -1)}
    for scene, counter in cells.items():
        assert set(counter) == expected, scene
        assert set(counter.values()) == {1}, scene


def test_splits_are_disjoint_by_scene_and_about_a_third_train():
    items = load_builtin()
    train = {i["scene_id"] for i in items if i["split"] == "train"}
    test = {i["scene_id"] for i in items if i["split"] == "test"}
    assert train and test and not train & test
    assert 0.25 <= len(train) / (len(train) + len(test)) <= 0.40
    assert load_builtin("train") and all(i["split"] == "train" for i in load_builtin("train"))


def test_actions_are_first_person_and_distinct():
    items = load_builtin()
    assert all(i["action"].startswith("I ") for i in items)
    assert len({i["action"] for i in items}) == len(items)
    assert len({i["scenario"] for i in items}) == len({i["scene_id"] for i in items})

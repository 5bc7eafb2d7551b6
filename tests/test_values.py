import math

import pytest

from vat_hf import values as v


def test_ten_values_in_circumplex_order_with_36_degree_steps():
    assert v.BASIC_VALUES == ("Self-Direction", "Stimulation", "Hedonism", "Achievement", "Power", "Security",
                              "Conformity", "Tradition", "Benevolence", "Universalism")
    assert [v.angle(name) for name in v.BASIC_VALUES] == [36.0 * i for i in range(10)]
    assert all(v.definition(name) for name in v.BASIC_VALUES)


@pytest.mark.parametrize("spelling", ["Self-Direction", "self direction", "SELF_DIRECTION", " self-direction ", "selfdirection"])
def test_lookup_ignores_case_and_punctuation(spelling):
    assert v.canonical_value(spelling) == "Self-Direction"


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(v.UnknownValueError) as err:
        v.canonical_value("Kindness")
    assert "Kindness" in str(err.value)
    for name in v.BASIC_VALUES:
        assert name in str(err.value)


def test_56_survey_items_map_to_basic_values():
    assert len(v.MICRO_VALUES) == 56
    assert set(v.MICRO_VALUES.values()) == set(v.BASIC_VALUES)
    counts = {name: len(v.micro_values_of(name)) for name in v.BASIC_VALUES}
    assert counts == {"Power": 5, "Achievement": 6, "Hedonism": 2, "Stimulation": 3, "Self-Direction": 5,
                      "Universalism": 9, "Benevolence": 9, "Tradition": 6, "Conformity": 4, "Security": 7}
    assert v.resolve_value("honoring of parents and elders") == "Conformity"
    assert v.resolve_value("power") == "Power"
    with pytest.raises(v.UnknownValueError, match="56 value-survey items"):
        v.resolve_value("Bravery")


def test_higher_order_groups_and_hedonism():
    groups = {g: [x for x in v.BASIC_VALUES if v.higher_order_of(x) == g] for g in v.HIGHER_ORDER_GROUPS}
    assert groups == {
        "Openness to Change": ["Self-Direction", "Stimulation", "Hedonism"],
        "Self-Enhancement": ["Achievement", "Power"],
        "Conservation": ["Security", "Conformity", "Tradition"],
        "Self-Transcendence": ["Benevolence", "Universalism"],
    }
    assert v.HEDONISM_ALSO_IN == "Self-Enhancement"
    assert v.canonical_group("self transcendence") == "Self-Transcendence"


def test_circumplex_cosine_neighbours_and_opposites():
    assert v.circumplex_cosine("Benevolence", "Benevolence") == pytest.approx(1.0)
    assert v.circumplex_cosine("Universalism", "Benevolence") == pytest.approx(math.cos(math.radians(36)))
    # Benevolence (288°) and Achievement (108°) sit 180° apart.
    assert v.circumplex_cosine("Achievement", "Benevolence") == pytest.approx(-1.0)

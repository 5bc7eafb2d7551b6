import pytest

from vat_hf.data.schema import FIELDS, ITEM_FEATURES, ItemValidationError, to_dataset, validate_items


def row(**overrides):
    base = {"id": "s1/a", "scene_id": "s1", "country": "Kenya", "domain": "Work", "scenario": "A shop owner must decide.",
            "action": "I help my colleague.", "value": "benevolence", "micro_value": "Helpful", "polarity": 1, "split": "test"}
    base.update(overrides)
    return base


def test_valid_rows_are_normalised():
    items = validate_items([row(), row(id="s1/b", polarity="-1", micro_value="")])
    assert items[0]["value"] == "Benevolence" and items[0]["micro_value"] == "Helpful"
    assert items[1]["polarity"] == -1 and items[1]["micro_value"] is None
    ds = to_dataset(items)
    assert ds.features == ITEM_FEATURES and ds.column_names == list(FIELDS)
    assert ds[1]["polarity"] == -1


@pytest.mark.parametrize(
    "overrides, field, fix",
    [
        ({"value": "Kindness"}, "value", "basic values"),
        ({"polarity": 0}, "polarity", "1 (expresses"),
        ({"polarity": "positive"}, "polarity", "1 (expresses"),
        ({"split": "dev"}, "split", "per scene"),
        ({"action": "  "}, "action", "fill in"),
        ({"micro_value": "Wealth"}, "micro_value", "basic value"),
        ({"micro_value": "Bravery"}, "micro_value", "value-survey item"),
    ],
)
def test_errors_name_row_field_and_fix(overrides, field, fix):
    with pytest.raises(ItemValidationError) as err:
        validate_items([row(), row(id="s1/b", **overrides)])
    assert err.value.row == 1 and err.value.field == field
    assert "row 2" in str(err.value) and repr(field) in str(err.value) and fix in str(err.value)


def test_missing_column_is_named():
    bad = row()
    del bad["country"]
    with pytest.raises(ItemValidationError, match="row 1.*'country': missing"):
        validate_items([bad])


def test_duplicate_ids_and_scene_in_two_splits_are_refused():
    with pytest.raises(ItemValidationError, match="row 2 .*duplicate of row 1"):
        validate_items([row(), row()])
    with pytest.raises(ItemValidationError, match="scene 's1' is 'train' here but 'test' at row 1"):
        validate_items([row(), row(id="s1/b", split="train")])

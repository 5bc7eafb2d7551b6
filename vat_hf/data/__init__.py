"""Scenario–action items: the schema, the built-in set and the importers."""

from vat_hf.data.builtin import load_builtin
from vat_hf.data.schema import FIELDS, ITEM_FEATURES, ItemValidationError, to_dataset, validate_items

__all__ = ["FIELDS", "ITEM_FEATURES", "ItemValidationError", "load_builtin", "to_dataset", "validate_items"]

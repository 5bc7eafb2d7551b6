"""Scenario–action items: the schema, the built-in set and the importers."""

from vat_hf.data.builtin import load_builtin
from vat_hf.data.schema import FIELDS, ITEM_FEATURES, ItemValidationError, items_fingerprint, to_dataset, validate_items
from vat_hf.data.sources import load_items

__all__ = ["FIELDS", "ITEM_FEATURES", "ItemValidationError", "items_fingerprint", "load_builtin", "load_items", "to_dataset",
           "validate_items"]

# Research-scale data: the ValueActionLens importer, column-mapped Hub/disk loading, pushing,
# two-stage generation and quality checks (the `vat-hf data` command group, vat_hf.data.cli).
from vat_hf.data.generate import BuildConfig, HFGenerator, build_items
from vat_hf.data.hub import (ColumnMapping, ColumnMappingError, assign_splits, dataset_card, load_mapped, push_to_hub,
                             read_items, save_items)
from vat_hf.data.lens import extract_field, import_value_action_lens, parse_structured
from vat_hf.data.quality import check_items, print_report

__all__ += ["BuildConfig", "ColumnMapping", "ColumnMappingError", "HFGenerator", "assign_splits", "build_items",
            "check_items", "dataset_card", "extract_field", "import_value_action_lens", "load_mapped", "parse_structured",
            "print_report", "push_to_hub", "read_items", "save_items"]

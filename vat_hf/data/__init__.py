"""Scenario–action items: the schema, the field rules, the sources and the one loader.

Layers, each importing only those above it:

* :mod:`~vat_hf.data.fields` (splits, polarity, ids, scenario templates, the train-split guard)
  and :mod:`~vat_hf.data.parsing` (the forgiving parser of model output);
* :mod:`~vat_hf.data.schema` (what an item is; validation; the data fingerprint);
* :mod:`~vat_hf.data.storage` (reading and writing item sets, for every entry point);
* the sources: :mod:`~vat_hf.data.builtin`, :mod:`~vat_hf.data.mapping` (any table with other
  column names), :mod:`~vat_hf.data.lens` (the ValueActionLens corpus), :mod:`~vat_hf.data.generate`
  (two-stage generation); :mod:`~vat_hf.data.quality` (checks);
* :mod:`~vat_hf.data.sources` (:func:`load_items`, the one loader every caller uses) and
  :mod:`~vat_hf.data.hub` (the dataset card and the upload); :mod:`~vat_hf.data.cli` (``vat-hf data``).
"""

from vat_hf.data.builtin import load_builtin
from vat_hf.data.fields import (DEFAULT_TRAIN_FRACTION, ITEM_ID_VERSION, SPLITS, TrainSplitError, assign_splits, item_id,
                                polarity_of, train_items_for)
from vat_hf.data.generate import BuildConfig, HFGenerator, build_items
from vat_hf.data.hub import dataset_card, push_to_hub
from vat_hf.data.lens import import_value_action_lens
from vat_hf.data.mapping import ColumnMapping, ColumnMappingError, load_mapped
from vat_hf.data.parsing import ParseError, extract_field, parse_structured
from vat_hf.data.quality import check_items, print_report
from vat_hf.data.schema import FIELDS, ITEM_FEATURES, ItemValidationError, items_fingerprint, to_dataset, validate_items
from vat_hf.data.sources import load_items
from vat_hf.data.storage import read_items, save_items

__all__ = ["BuildConfig", "ColumnMapping", "ColumnMappingError", "DEFAULT_TRAIN_FRACTION", "FIELDS", "HFGenerator",
           "ITEM_FEATURES", "ITEM_ID_VERSION", "ItemValidationError", "ParseError", "SPLITS", "TrainSplitError",
           "assign_splits", "build_items", "check_items", "dataset_card", "extract_field", "import_value_action_lens",
           "item_id", "items_fingerprint", "load_builtin", "load_items", "load_mapped", "parse_structured", "polarity_of",
           "print_report", "push_to_hub", "read_items", "save_items", "to_dataset", "train_items_for", "validate_items"]

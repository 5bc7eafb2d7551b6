"""Importer for the ValueActionLens scenario–action corpus.

The corpus (Shen, Clark, Mitra, "Mind the Value-Action Gap", EMNLP 2025; public repository
``huashen218/value_action_gap``, file ``outputs/data_release/value_action_gap_full_data_generation.zip``)
has 14,784 rows = 12 countries x 11 topics x 56 value-survey items x 2 polarities, each with one
GPT-4o generated action. vat-hf reads it from a path (a ``.csv`` or the released ``.zip``) or from a
URL; it never copies it into the project.

Mapping of one corpus row to the item schema (:data:`vat_hf.data.schema.ITEM_FEATURES`):

==============  =========================================================================
item field      from the corpus
==============  =========================================================================
``scene_id``    ``vl/<country>/<topic>`` (:func:`~vat_hf.data.fields.scene_id`): one scene =
                one country x topic, 132 scenes
``country``     ``country``
``domain``      ``topic``
``scenario``    :data:`~vat_hf.data.fields.SCENARIO_TEMPLATE` filled with country and topic
                (the corpus has no scenario sentence)
``action``      the ``Human Action`` field recovered from ``generation_prompt``
``micro_value`` ``value`` (one of the 56 survey items, canonical name)
``value``       the survey item's basic value (:data:`vat_hf.values.MICRO_VALUES`)
``polarity``    ``positive`` -> +1, ``negative`` -> -1
``split``       per scene, from ``seed`` and ``train_fraction`` (:func:`vat_hf.data.fields.fill_splits`)
``id``          ``<scene_id>/<survey item slug>/<pos|neg>`` (:func:`vat_hf.data.fields.item_id`)
==============  =========================================================================

``generation_prompt`` holds the model's raw answer, and it is messy: JSON, Python dict literals
with single quotes (some with unescaped apostrophes), Markdown code fences, chatter before the
object, truncated answers, and refusals. :func:`vat_hf.data.parsing.extract_field` recovers the
``Human Action`` from all of them except refusals (answers that contain no action at all). Every
row that cannot be recovered is reported by :func:`import_value_action_lens` with its index and
reason; none is dropped silently.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from vat_hf.data.fields import (DEFAULT_TRAIN_FRACTION, SCENARIO_TEMPLATE, fill_ids, fill_splits, polarity_of,
                                render_scenario, scene_id)
from vat_hf.data.parsing import excerpt, extract_field
from vat_hf.data.schema import to_dataset
from vat_hf.data.storage import items_metadata, read_table
from vat_hf.values import UnknownValueError, resolve_value_pair

logger = logging.getLogger(__name__)

LENS_FILE = "value_action_gap_full_data_generation.csv"
LENS_RAW_URL = (
    "https://raw.githubusercontent.com/huashen218/value_action_gap/main/"
    "outputs/data_release/value_action_gap_full_data_generation.zip"
)
"""The released archive in the public repository (a zip holding the CSV). Pass it, or any other
URL or path of the CSV or the zip, to :func:`import_value_action_lens`."""
LENS_ROWS = 14_784
LENS_CITATION = """@inproceedings{shen2025valueaction,
  title     = {Mind the Value-Action Gap: Do LLMs Act in Alignment with Their Values?},
  author    = {Shen, Hua and Clark, Nicholas and Mitra, Tanushree},
  booktitle = {Proceedings of EMNLP 2025},
  year      = {2025}
}"""
LENS_COLUMNS = ("country", "topic", "value", "polarity", "generation_prompt")
ACTION_KEY = "Human Action"

# ---------------------------------------------------------------------------------------------
# The importer
# ---------------------------------------------------------------------------------------------

@dataclass
class LensImport:
    """Result of :func:`import_value_action_lens`."""

    dataset: Any  # datasets.Dataset with ITEM_FEATURES
    failures: List[Dict[str, Any]]  # one per unrecovered row: row, index, reason, ...
    n_rows: int
    metadata: Dict[str, Any] = field(default_factory=dict)
    methods: Dict[str, int] = field(default_factory=dict)  # how many actions each parser step recovered
    seconds: float = 0.0

    @property
    def n_recovered(self) -> int:
        return len(self.dataset)


def _read_lens_table(source: Union[str, Path], cache_dir: Optional[str] = None):
    """The raw corpus as a :class:`datasets.Dataset` (CSV, or a zip holding it; a path, a folder
    holding one, or a URL), read by :func:`vat_hf.data.storage.read_table`."""
    source = str(source)
    if "://" not in source:
        path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.csv")) + sorted(path.glob("*.zip"))
            if not found:
                raise FileNotFoundError(f"{path} holds no .csv or .zip file of the corpus (expected {LENS_FILE})")
            path = found[0]
        if not path.exists():
            raise FileNotFoundError(
                f"no value-action corpus at {path}; give the path of {LENS_FILE} (or its .zip), or a URL such as {LENS_RAW_URL}")
        source = str(path)
    # keep_default_na=False: cells are read verbatim ("NA" stays "NA", an empty cell is "").
    table = read_table(source, cache_dir=cache_dir, keep_default_na=False)
    missing = [c for c in LENS_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: not the value-action corpus: missing column(s) {missing}; it has {table.column_names}")
    return table


def _index_column(columns: List[str]) -> Optional[str]:
    for name in columns:
        if name not in LENS_COLUMNS:
            return name  # the first unnamed index column
    return None


def import_value_action_lens(
    source: Union[str, Path],
    seed: int = 0,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    cache_dir: Optional[str] = None,
) -> LensImport:
    """Import the ValueActionLens corpus into the item schema.

    ``source``: the CSV, the released zip, a folder holding either, or a URL of either (for example
    :data:`LENS_RAW_URL`). Splits are assigned per scene from ``seed`` (``train_fraction`` of the
    scenes are ``train``). Unrecoverable rows come back in :attr:`LensImport.failures`, each with its
    0-based data row, the corpus index column's value, its cells and the reason.
    """
    started = time.perf_counter()
    table = _read_lens_table(source, cache_dir=cache_dir)
    index_col = _index_column(table.column_names)
    cols = table.to_dict()
    n_rows = len(table)
    rows: List[Dict[str, Any]] = []
    failures: List[Dict[str, Any]] = []
    methods: Dict[str, int] = {}
    for row in range(n_rows):
        country = str(cols["country"][row] or "").strip()
        topic = str(cols["topic"][row] or "").strip()
        item_name = str(cols["value"][row] or "").strip()
        polarity_raw = str(cols["polarity"][row] or "").strip()
        where = {"row": row, "index": cols[index_col][row] if index_col else row, "country": country,
                 "topic": topic, "value": item_name, "polarity": polarity_raw}
        problems = []
        if not country:
            problems.append("empty 'country'")
        if not topic:
            problems.append("empty 'topic'")
        micro = basic = None
        try:
            basic, micro = resolve_value_pair(item_name, "micro")
        except UnknownValueError:
            problems.append(f"'value' {item_name!r} is not one of the 56 value-survey items")
        try:
            polarity = polarity_of(polarity_raw)
        except ValueError as err:
            polarity = None
            problems.append(f"'polarity': {err}")
        result = extract_field(cols["generation_prompt"][row], ACTION_KEY)
        if result.value is None:
            problems.append(result.reason)
        if problems:
            failures.append({**where, "reason": "; ".join(problems), "excerpt": excerpt(cols["generation_prompt"][row], 120)})
            continue
        methods[result.method] = methods.get(result.method, 0) + 1
        rows.append({
            "id": "", "scene_id": scene_id("vl", country, topic), "country": country, "domain": topic,
            "scenario": render_scenario(country, topic), "action": result.value, "value": basic,
            "micro_value": micro, "polarity": polarity, "split": "",
        })
    fill_ids(rows)  # the corpus has one row per cell; a repeat would be kept under its own id
    fill_splits(rows, seed=seed, train_fraction=train_fraction)
    metadata = {
        "source": "ValueActionLens (huashen218/value_action_gap, value_action_gap_full_data_generation)",
        "source_location": str(source),
        "generator": "gpt-4o (by the corpus authors)",
        "scenario_template": SCENARIO_TEMPLATE,
        "seed": seed,
        "train_fraction": train_fraction,
        "rows_in_source": n_rows,
        "rows_recovered": len(rows),
        "rows_unrecovered": len(failures),
        "parser_methods": methods,
        "citation": LENS_CITATION,
        "license": "see the source repository huashen218/value_action_gap",
    }
    dataset = to_dataset(rows)
    dataset.info.description = json.dumps(items_metadata(metadata), ensure_ascii=False)
    seconds = time.perf_counter() - started
    if failures:
        logger.warning("value-action corpus: %d of %d rows could not be recovered (first: row %d, %s)",
                       len(failures), n_rows, failures[0]["row"], failures[0]["reason"])
    return LensImport(dataset=dataset, failures=failures, n_rows=n_rows, metadata=metadata, methods=methods, seconds=seconds)

"""The scenario–action item schema: the one place vat-hf defines what an item is.

One item = one action in one concrete scene, tied to one basic Schwartz value, either
expressing it (``polarity = +1``) or going against it (``polarity = -1``). Every source of items
(the built-in set, the ValueActionLens importer, Hub datasets with other column names, the
generator pipeline) produces rows of :data:`ITEM_FEATURES` and passes :func:`validate_items`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import datasets

from vat_hf.data.fields import POLARITIES, SPLITS
from vat_hf.errors import VatHfError
from vat_hf.values import MICRO_VALUES, UnknownValueError, canonical_micro_value, canonical_value

FIELD_DOCS = {
    "id": "unique id of the item (vat_hf.data.fields.item_id for sources that make one)",
    "scene_id": "the scene; all items of a scene share it, and splits are assigned per scene",
    "country": "country the scene is set in",
    "domain": "social domain (topic) of the scene, e.g. \"Work Orientation\"",
    "scenario": "the concrete situation, 1-3 sentences",
    "action": "one action in the first person (\"I ...\")",
    "value": "the basic Schwartz value the action is about (one of ten, vat_hf.values.BASIC_VALUES)",
    "micro_value": "the Schwartz Value Survey item, when the source has one (else null)",
    "polarity": "+1: the action expresses the value; -1: it goes against it",
    "split": "`train` (material for alignment interventions) or `test` (evaluation); per scene",
}
"""What each field means: the one description, shown in dataset cards."""
ITEM_FEATURES = datasets.Features({
    **{name: datasets.Value("string") for name in FIELD_DOCS},
    "polarity": datasets.Value("int8"),
})
FIELDS = tuple(ITEM_FEATURES)
REQUIRED_TEXT_FIELDS = ("id", "scene_id", "country", "domain", "scenario", "action", "value", "split")


def row_label(index: int, source: Optional[str] = None) -> str:
    """How a message names the row at 0-based ``index``: counted from 1, as a person counts rows,
    and for a JSON-lines or CSV file also the line an editor shows (a CSV's header is line 1).

    >>> row_label(3), row_label(3, "items.jsonl"), row_label(3, "items.csv.gz")
    ('row 4', 'line 4', 'row 4 (line 5)')
    """
    suffixes = [s.lower() for s in Path(str(source)).suffixes] if source else []
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else None
    if kind == ".jsonl":
        return f"line {index + 1}"
    if kind == ".csv":
        return f"row {index + 1} (line {index + 2})"
    return f"row {index + 1}"


class ItemValidationError(VatHfError, ValueError):
    """A row (or a table) that does not fit the item schema. Names the source when known, the row
    (``row``: its 0-based index, ``None`` for the whole table; shown counted from 1, see
    :func:`row_label`), the field and the fix."""

    def __init__(self, row: Optional[int], field: str, problem: str, fix: str, item_id: Optional[str] = None,
                 source: Optional[str] = None):
        super().__init__(problem, fix)
        self.row, self.field, self.problem, self.item_id, self.source = row, field, problem, item_id, source

    def where(self) -> List[str]:
        """The parts of the message that say where: source, row (and id), field."""
        parts = [str(self.source)] if self.source else []
        if self.row is not None:
            parts.append(row_label(self.row, self.source) + (f" (id {self.item_id!r})" if self.item_id else ""))
        parts.append(f"field {self.field!r}")
        return parts

    def __str__(self) -> str:
        return f"{', '.join(self.where())}: {self.problem}\n  fix: {self.fix}"

    def __reduce__(self):  # picklable with a source set after the error was made
        return type(self), (self.row, self.field, self.problem, self.fix, self.item_id, self.source)


def normalize_item(row: Mapping[str, Any], index: int) -> Dict[str, Any]:
    """Check one row and return it with canonical value names and an int polarity.

    Raises :class:`ItemValidationError` naming ``index`` and the offending field.
    """
    item_id = row.get("id")
    item_id = str(item_id) if item_id not in (None, "") else None
    for field in FIELDS:
        if field not in row and field != "micro_value":
            raise ItemValidationError(index, field, "missing", f"add a {field!r} column (schema: {', '.join(FIELDS)})", item_id)
    out = {field: row.get(field) for field in FIELDS}
    for field in REQUIRED_TEXT_FIELDS:
        value = out[field]
        if not isinstance(value, str) or not value.strip():
            raise ItemValidationError(index, field, f"must be a non-empty string, got {value!r}", f"fill in {field!r}", item_id)
        out[field] = value.strip()
    try:
        out["value"] = canonical_value(out["value"])
    except UnknownValueError as err:
        raise ItemValidationError(index, "value", str(err), "use one of the ten basic values", item_id) from None
    micro = out["micro_value"]
    if micro in ("", None):
        out["micro_value"] = None
    else:
        try:
            out["micro_value"] = canonical_micro_value(micro)
        except UnknownValueError as err:
            raise ItemValidationError(index, "micro_value", str(err), "use a value-survey item or leave it empty", item_id) from None
        if MICRO_VALUES[out["micro_value"]] != out["value"]:
            raise ItemValidationError(
                index, "micro_value",
                f"{out['micro_value']!r} belongs to {MICRO_VALUES[out['micro_value']]!r}, not {out['value']!r}",
                "make 'value' the survey item's basic value", item_id,
            )
    polarity = out["polarity"]
    try:
        polarity_int = int(polarity)
    except (TypeError, ValueError):
        polarity_int = None
    if polarity_int not in POLARITIES or (isinstance(polarity, float) and polarity != polarity_int):
        raise ItemValidationError(index, "polarity", f"must be +1 or -1, got {polarity!r}", "use 1 (expresses the value) or -1 (goes against it)", item_id)
    out["polarity"] = polarity_int
    if out["split"] not in SPLITS:
        raise ItemValidationError(index, "split", f"must be one of {SPLITS}, got {out['split']!r}", "assign 'train' or 'test' per scene", item_id)
    return out


def validate_items(rows: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Validate and normalise a whole item set.

    Beyond each row: ids are unique, and every scene sits in exactly one split (a scene in both
    would leak intervention material into the evaluation).
    """
    items: List[Dict[str, Any]] = []
    seen_ids: Dict[str, int] = {}
    scene_split: Dict[str, tuple] = {}
    for index, row in enumerate(rows):
        item = normalize_item(row, index)
        if item["id"] in seen_ids:
            raise ItemValidationError(index, "id", f"duplicate of {row_label(seen_ids[item['id']])}", "give every item a unique id", item["id"])
        seen_ids[item["id"]] = index
        first = scene_split.setdefault(item["scene_id"], (item["split"], index))
        if first[0] != item["split"]:
            raise ItemValidationError(
                index, "split",
                f"scene {item['scene_id']!r} is {item['split']!r} here but {first[0]!r} at {row_label(first[1])}",
                "assign splits per scene so no scene is in both", item["id"],
            )
        items.append(item)
    return items


def to_dataset(rows: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Validated rows as a :class:`datasets.Dataset` with :data:`ITEM_FEATURES`."""
    items = validate_items(rows)
    columns = {field: [item[field] for item in items] for field in FIELDS}
    return datasets.Dataset.from_dict(columns, features=ITEM_FEATURES)


def items_fingerprint(items: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the items' schema fields in order: two runs on the same fingerprint judged the same
    items. Every result file records it.

    >>> items_fingerprint([{"id": "a"}]) == items_fingerprint([{"id": "a", "extra": 1}])
    True
    """
    digest = hashlib.sha256()
    for item in items:
        row = {field: item.get(field) for field in FIELDS}
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


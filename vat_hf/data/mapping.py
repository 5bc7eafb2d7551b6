"""Column-mapped loading: any table whose columns have other names becomes an item set.

Any dataset on the Hub or on disk (every source :mod:`vat_hf.data.storage` reads) whose columns
have other names becomes an item set in the one schema (:data:`vat_hf.data.schema.ITEM_FEATURES`).
A :class:`ColumnMapping` (a YAML file, a dict, or CLI flags) says which of their columns holds each
of our fields::

    source: Tinyhope/Value_Alignment_Tax      # or a path
    columns: {country: country, domain: topic, value: value, polarity: polarity, action: action}
    scenario_template: "I live in {the_country}, and I am facing a situation related to {domain_lower}."

* ``polarity`` may be spelled as :func:`vat_hf.data.fields.polarity_of` accepts
  (``1``/``+1``/``-1``, ``positive``/``negative``, ``express``/``suppress``, ``support``/``violate``,
  ``pos``/``neg``, ``against``); ``polarity_values`` adds more.
* ``value`` may hold basic values or value-survey items (``value_kind: auto``, the default, takes
  either; an item also fills ``micro_value``), resolved by :func:`vat_hf.values.resolve_value_pair`.
* A field with a column of its own name needs no mapping (``country`` -> ``country``).
* Fields without a column: ``scenario`` from ``scenario_template``
  (:func:`vat_hf.data.fields.render_scenario`); ``scene_id`` from country, domain and the scenario
  text; ``id`` from the scene, value and polarity (:func:`vat_hf.data.fields.fill_ids`); ``split``
  per scene from ``seed`` and ``train_fraction`` (:func:`vat_hf.data.fields.fill_splits`); any
  other field from ``constants``.
* A missing column or a value that cannot be mapped is a :class:`ColumnMappingError` naming the
  source, the column, the row and the accepted spellings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import datasets

from vat_hf.data.fields import (DEFAULT_TRAIN_FRACTION, SCENARIO_TEMPLATE, SPLITS, SplitConflictError, fill_ids,
                                fill_splits, polarity_of, render_scenario, scene_id)
from vat_hf.data.parsing import extract_field
from vat_hf.data.schema import FIELDS, ItemValidationError, to_dataset
from vat_hf.data.storage import items_metadata, read_table
from vat_hf.values import VALUE_KINDS, UnknownValueError, accepted_values, resolve_value_pair

logger = logging.getLogger(__name__)


class ColumnMappingError(ItemValidationError):
    """A column that is missing, or a cell that cannot be mapped into the item schema.
    Names the source, the row (when there is one), the source column and the accepted spellings."""

    def __init__(self, row: Optional[int], field: str, column: Optional[str], problem: str, fix: str,
                 source: Optional[str] = None):
        super().__init__(row, field, problem, fix, source=source)
        self.column = column

    def __reduce__(self):
        return type(self), (self.row, self.field, self.column, self.problem, self.fix, self.source)

    def where(self) -> List[str]:
        parts = super().where()
        if self.column:
            parts[-1] = f"column {self.column!r} (field {self.field!r})"
        return parts


@dataclass
class ColumnMapping:
    """How a foreign dataset's columns become item fields. See the module docstring."""

    columns: Dict[str, str] = field(default_factory=dict)  # our field -> their column
    source: Optional[str] = None  # Hub id or path (optional: can be given separately)
    config: Optional[str] = None  # Hub config name
    source_split: Optional[str] = None  # which of their splits to read (None: all, concatenated)
    revision: Optional[str] = None
    value_kind: str = "auto"  # auto | basic | micro: what the 'value' column holds
    polarity_values: Dict[str, int] = field(default_factory=dict)  # extra spellings, e.g. {agree: 1}
    split_values: Dict[str, str] = field(default_factory=dict)  # their split names -> train/test
    scenario_template: Optional[str] = None  # when there is no scenario column
    action_field: Optional[str] = None  # the action column holds JSON; take this key (e.g. "Human Action")
    constants: Dict[str, Any] = field(default_factory=dict)  # field -> fixed value (e.g. country)
    scene_prefix: str = "hub"  # scene ids made here start with it
    seed: int = 0
    train_fraction: float = DEFAULT_TRAIN_FRACTION
    on_error: str = "raise"  # raise | skip (skipped rows are reported, never dropped silently)
    note: Optional[str] = None  # free text for the user (kept in metadata)

    def __post_init__(self):
        self.columns = {str(k): str(v) for k, v in (self.columns or {}).items()}
        unknown = [k for k in list(self.columns) + list(self.constants) if k not in FIELDS]
        if unknown:
            raise ValueError(f"unknown item field(s) {unknown} in the column mapping; fields: {', '.join(FIELDS)}")
        if self.value_kind not in VALUE_KINDS:
            raise ValueError(f"value_kind must be one of {VALUE_KINDS}, got {self.value_kind!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        for spelling, polarity in self.polarity_values.items():
            polarity_of(polarity)
        for their, ours in self.split_values.items():
            if ours not in SPLITS:
                raise ValueError(f"split_values maps {their!r} to {ours!r}; map to one of {SPLITS}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ColumnMapping":
        raw = dict(raw or {})
        if "columns" not in raw and all(isinstance(v, str) for v in raw.values()) and set(raw) <= set(FIELDS):
            raw = {"columns": raw}  # a plain {field: column} dict
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the column mapping; keys: {', '.join(sorted(known))}")
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "ColumnMapping":
        import yaml

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path}: a column mapping is a YAML mapping, got {type(raw).__name__}")
        return cls.from_dict(raw)

    @classmethod
    def coerce(cls, mapping: Union["ColumnMapping", Mapping, str, Path, None]) -> "ColumnMapping":
        if mapping is None:
            return cls()
        if isinstance(mapping, ColumnMapping):
            return mapping
        if isinstance(mapping, (str, Path)):
            return cls.from_yaml(mapping)
        return cls.from_dict(mapping)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_map_flags(flags: Sequence[str]) -> Dict[str, str]:
    """``["action=Human Action", "domain=topic"]`` -> ``{"action": "Human Action", "domain": "topic"}``."""
    out: Dict[str, str] = {}
    for flag in flags or ():
        if "=" not in flag:
            raise ValueError(f"--map {flag!r}: write FIELD=COLUMN, e.g. --map domain=topic (fields: {', '.join(FIELDS)})")
        ours, theirs = flag.split("=", 1)
        out[ours.strip()] = theirs.strip()
    return out


def _error(row: int, field: str, column: Optional[str], problem: str, fix: str) -> str:
    return json.dumps({"row": row, "field": field, "column": column, "problem": problem, "fix": fix})


_NOT_A_VALUE = {"basic": "is not a basic value", "micro": "is not a value-survey item",
                "auto": "is neither a basic value nor a value-survey item"}


def _convert_batch(batch: Dict[str, List], indices: List[int], mapping: ColumnMapping) -> Dict[str, List]:
    cols = mapping.columns
    out: Dict[str, List] = {f: [] for f in FIELDS}
    out["_error"] = []
    n = len(indices)

    def cell(fieldname: str, i: int) -> Any:
        if fieldname in cols:
            return batch[cols[fieldname]][i]
        return mapping.constants.get(fieldname)

    for i in range(n):
        row = indices[i]
        rec: Dict[str, Any] = {}
        err = ""
        try:
            for fieldname in ("country", "domain", "action"):
                raw = cell(fieldname, i)
                if raw is None or not str(raw).strip():
                    raise _Bad(fieldname, f"empty {fieldname!r} ({raw!r})", "fill it in, or drop the row")
                rec[fieldname] = " ".join(str(raw).split())
            if mapping.action_field:
                parsed = extract_field(rec["action"], mapping.action_field)
                if parsed.value is None:
                    raise _Bad("action", parsed.reason, f"the column must hold an answer with a {mapping.action_field!r} field")
                rec["action"] = parsed.value
            # value / micro_value
            raw_value, raw_micro = cell("value", i), cell("micro_value", i)
            micro: Optional[str] = None
            if raw_value is not None and str(raw_value).strip():
                try:
                    value, micro = resolve_value_pair(str(raw_value), mapping.value_kind)
                except UnknownValueError:
                    raise _Bad("value", f"{raw_value!r} {_NOT_A_VALUE[mapping.value_kind]}",
                               f"give {accepted_values(mapping.value_kind)}") from None
            elif raw_micro is None or not str(raw_micro).strip():
                raise _Bad("value", f"empty value ({raw_value!r})", "fill in a basic value or a value-survey item")
            else:
                value = None
            if raw_micro is not None and str(raw_micro).strip():
                try:
                    basic, micro = resolve_value_pair(str(raw_micro), "micro")
                except UnknownValueError:
                    raise _Bad("micro_value", f"unknown value-survey item {raw_micro!r}",
                               f"give {accepted_values('micro')}, or leave the cell empty") from None
                if value is None:
                    value = basic
                elif basic != value:
                    raise _Bad("micro_value", f"{micro!r} belongs to {basic!r}, not {value!r}",
                               "make the value column the survey item's basic value")
            rec["value"], rec["micro_value"] = value, micro
            raw_pol = cell("polarity", i)
            try:
                rec["polarity"] = polarity_of(raw_pol, mapping.polarity_values)
            except ValueError as exc:
                raise _Bad("polarity", f"{raw_pol!r} is not a polarity", "accepted: " + str(exc).split("accepted: ", 1)[-1]) from None
            # scenario
            raw_scn = cell("scenario", i) if "scenario" in cols or "scenario" in mapping.constants else None
            if raw_scn is not None and str(raw_scn).strip():
                rec["scenario"] = " ".join(str(raw_scn).split())
            elif mapping.scenario_template:
                try:
                    rec["scenario"] = render_scenario(rec["country"], rec["domain"], mapping.scenario_template)
                except ValueError as exc:
                    raise _Bad("scenario", str(exc), "fix scenario_template") from None
            else:
                raise _Bad("scenario", "no scenario", "map a scenario column or set scenario_template")
            # scene, split, id
            raw_scene = cell("scene_id", i)
            if raw_scene is not None and str(raw_scene).strip():
                rec["scene_id"] = str(raw_scene).strip()
            else:
                digest = hashlib.sha256(rec["scenario"].encode()).hexdigest()[:8]
                rec["scene_id"] = scene_id(mapping.scene_prefix, rec["country"], rec["domain"], digest)
            raw_split = cell("split", i)
            if raw_split is not None and str(raw_split).strip():
                s = str(raw_split).strip()
                s = mapping.split_values.get(s, s.lower())
                if s not in SPLITS:
                    raise _Bad("split", f"{raw_split!r} is not a split",
                               f"accepted: {', '.join(SPLITS)}, or add split_values: {{{raw_split}: train|test}}")
                rec["split"] = s
            else:
                rec["split"] = ""
            raw_id = cell("id", i)
            rec["id"] = str(raw_id).strip() if raw_id is not None and str(raw_id).strip() else ""
        except _Bad as bad:
            column = cols.get(bad.field) or (cols.get("value") if bad.field == "micro_value" else None)
            err = _error(row, bad.field, column, bad.problem, bad.fix)
            rec = {}
        for f in FIELDS:
            out[f].append(rec.get(f, None) if f != "polarity" else rec.get(f, 0))
        out["_error"].append(err)
    return out


class _Bad(Exception):
    def __init__(self, field: str, problem: str, fix: str):
        super().__init__(problem)
        self.field, self.problem, self.fix = field, problem, fix


_MAPPED_FEATURES = datasets.Features({**{k: datasets.Value("string") for k in FIELDS}, "polarity": datasets.Value("int8"),
                                      "_error": datasets.Value("string")})


def map_items(raw: datasets.Dataset, mapping: Union[ColumnMapping, Mapping, str, Path, None] = None,
              batch_size: int = 2000) -> Tuple[datasets.Dataset, List[Dict[str, Any]]]:
    """Apply a column mapping to a raw table: ``(items, failures)``.

    With ``on_error: raise`` (the default) the first unmappable row raises
    :class:`ColumnMappingError`; with ``skip`` every such row is returned in ``failures`` (row,
    field, column, problem, fix) and left out of ``items``.
    """
    mapping = ColumnMapping.coerce(mapping)
    columns = raw.column_names
    # a field with a column of its own name needs no mapping
    same = {f: f for f in FIELDS if f in columns and f not in mapping.columns and f not in mapping.constants}
    if same:
        mapping = ColumnMapping.from_dict({**mapping.to_dict(), "columns": {**same, **mapping.columns}})
    for ours, theirs in mapping.columns.items():
        if theirs not in columns:
            raise ColumnMappingError(None, ours, theirs, f"no such column; the source has {columns}",
                                     f"map {ours!r} to one of those columns (--map {ours}=COLUMN)")
    for needed in ("country", "domain", "action", "polarity"):
        if needed not in mapping.columns and needed not in mapping.constants:
            raise ColumnMappingError(None, needed, None, f"no column is mapped to {needed!r}; the source has {columns}",
                                     f"add '{needed}: <column>' under columns:, or a constant under constants:")
    if not ({"value", "micro_value"} & (set(mapping.columns) | set(mapping.constants))):
        raise ColumnMappingError(None, "value", None, f"no column is mapped to 'value' or 'micro_value'; the source has {columns}",
                                 "map the column holding basic values or value-survey items to 'value'")
    if "scenario" not in mapping.columns and "scenario" not in mapping.constants and not mapping.scenario_template:
        raise ColumnMappingError(None, "scenario", None, f"no column is mapped to 'scenario' and no scenario_template is set; the source has {columns}",
                                 f"map the scenario column, or set scenario_template, e.g. {SCENARIO_TEMPLATE!r}")
    if len(raw) == 0:
        return to_dataset([]), []
    mapped = raw.map(_convert_batch, batched=True, batch_size=batch_size, with_indices=True,
                     fn_kwargs={"mapping": mapping}, remove_columns=columns, features=_MAPPED_FEATURES,
                     keep_in_memory=True, desc="mapping columns")
    errors = [json.loads(e) for e in mapped["_error"] if e]
    if errors and mapping.on_error == "raise":
        e = errors[0]
        more = f" ({len(errors) - 1} more rows fail; on_error: skip reports them all)" if len(errors) > 1 else ""
        raise ColumnMappingError(e["row"], e["field"], e["column"], e["problem"] + more, e["fix"])
    cols = mapped.to_dict()
    keep = [i for i, e in enumerate(cols["_error"]) if not e]
    rows = [{f: cols[f][i] for f in FIELDS} for i in keep]
    try:
        fill_splits(rows, seed=mapping.seed, train_fraction=mapping.train_fraction)
    except SplitConflictError as err:
        raise ColumnMappingError(None, "split", mapping.columns.get("split"), str(err),
                                 "give every row of a scene the same split, or none") from None
    fill_ids(rows)
    return to_dataset(rows), errors


def load_mapped(source: Optional[Union[str, Path]] = None,
                columns: Union[ColumnMapping, Mapping, str, Path, None] = None,
                return_failures: bool = False, **overrides: Any):
    """Load any dataset as an item set (a :class:`datasets.Dataset` with ``ITEM_FEATURES``).

    ``columns``: a :class:`ColumnMapping`, a YAML path, a full mapping dict, or a plain
    ``{field: column}`` dict. ``overrides`` set mapping keys (``config=``, ``source_split=``,
    ``scenario_template=``, ``seed=`` ...). ``source`` defaults to the mapping's ``source``.
    With ``return_failures=True`` returns ``(items, failures)``.
    """
    mapping = ColumnMapping.coerce(columns)
    if overrides:
        mapping = ColumnMapping.from_dict({**mapping.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    source = source or mapping.source
    if not source:
        raise ValueError("no source: give a Hub id or a path, or set 'source:' in the mapping")
    raw = read_table(source, config=mapping.config, split=mapping.source_split, revision=mapping.revision)
    try:
        items, failures = map_items(raw, mapping)
    except ItemValidationError as err:
        err.source = str(source)
        raise
    if failures:
        logger.warning("%s: %d rows could not be mapped and were left out (first: row %s, %s)",
                       source, len(failures), failures[0]["row"], failures[0]["problem"])
    meta = {"source": str(source), "column_mapping": {k: v for k, v in mapping.to_dict().items() if v not in (None, {}, "")},
            "rows_in_source": len(raw), "rows_mapped": len(items), "rows_unmapped": len(failures)}
    items.info.description = json.dumps(items_metadata(meta), ensure_ascii=False)
    return (items, failures) if return_failures else items



"""Item sets on the Hugging Face Hub and on disk: column-mapped loading, saving, pushing, the card.

Loading (:func:`load_mapped`): any dataset on the Hub or on disk (CSV, JSON/JSONL, Parquet, a
``save_to_disk`` folder) whose columns have other names becomes an item set in the one schema
(:data:`vat_hf.data.schema.ITEM_FEATURES`). A :class:`ColumnMapping` (a YAML file, a dict, or CLI
flags) says which of their columns holds each of our fields::

    source: Tinyhope/Value_Alignment_Tax      # or a path
    columns: {country: country, domain: topic, value: value, polarity: polarity, action: action}
    scenario_template: "I live in {the_country}, and I am facing a situation related to {domain_lower}."

* ``polarity`` may be spelled ``1``/``+1``/``-1``, ``positive``/``negative``, ``express``/``suppress``,
  ``support``/``violate`` (also ``pos``/``neg``, ``against``); ``polarity_values`` adds more.
* ``value`` may hold basic values or value-survey items (``value_kind: auto``, the default, takes
  either; an item also fills ``micro_value``).
* A field with a column of its own name needs no mapping (``country`` -> ``country``).
* Fields without a column: ``scenario`` from ``scenario_template``; ``scene_id`` from country, domain
  and the scenario text; ``id`` from the scene, value and polarity; ``split`` per scene from ``seed``
  and ``train_fraction`` (:func:`assign_splits`); any other field from ``constants``.
* A missing column or a value that cannot be mapped is a :class:`ColumnMappingError` naming the
  column, the row and the accepted spellings.

Pushing (:func:`push_to_hub`): one commit with one Parquet file per split under ``data/``, a
``vat_hf_metadata.json`` and a dataset card (``README.md``; :func:`dataset_card`) that documents the
schema, the taxonomy, the construction, the splits, the licence and the citation.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import datasets

from vat_hf.data.schema import FIELDS, ITEM_FEATURES, SPLITS, ItemValidationError, to_dataset
from vat_hf.values import (BASIC_VALUES, MICRO_VALUES, VALUES, UnknownValueError, name_key, canonical_micro_value,
                           canonical_value)

from vat_hf import CITATION, PAPER_URL
from vat_hf.io import atomic_write

logger = logging.getLogger(__name__)

METADATA_FILE = "vat_hf_metadata.json"
FAILURES_FILE = "failures.jsonl"
DEFAULT_TRAIN_FRACTION = 1 / 3
VAT_CITATION = CITATION

# ---------------------------------------------------------------------------------------------
# Splits, polarity, values
# ---------------------------------------------------------------------------------------------


def assign_splits(scene_ids: Iterable[str], seed: int = 0, train_fraction: float = DEFAULT_TRAIN_FRACTION) -> Dict[str, str]:
    """``{scene_id: "train" | "test"}``: ``round(train_fraction * n)`` scenes go to ``train``.

    Scenes are ordered by ``sha256(f"{seed}:{scene_id}")`` and the first ones are ``train``, so the
    assignment depends only on the seed and the set of scene ids (not on row order), and every
    scene sits in exactly one split. The default fraction, 1/3, matches the built-in set.

    >>> assign_splits(["a", "b", "c"], seed=0)
    {'a': 'train', 'b': 'test', 'c': 'test'}
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be within [0, 1], got {train_fraction}")
    scenes = sorted(set(scene_ids))
    order = sorted(scenes, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_train = int(round(train_fraction * len(scenes)))
    train = set(order[:n_train])
    return {s: ("train" if s in train else "test") for s in scenes}


POLARITY_SPELLINGS: Dict[str, int] = {
    "1": 1, "+1": 1, "1.0": 1, "positive": 1, "pos": 1, "express": 1, "expresses": 1, "support": 1, "supports": 1,
    "-1": -1, "-1.0": -1, "negative": -1, "neg": -1, "suppress": -1, "suppresses": -1, "violate": -1, "violates": -1,
    "against": -1,
}
POLARITY_ACCEPTED = "+1/1 or -1, positive/negative, express/suppress, support/violate (also pos/neg, against)"


def polarity_of(value: Any, extra: Optional[Mapping[str, int]] = None) -> int:
    """+1 or -1 from any accepted spelling; ``ValueError`` naming the accepted ones otherwise.

    >>> polarity_of("Violate"), polarity_of(1), polarity_of("+1")
    (-1, 1, 1)
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a polarity; accepted: {POLARITY_ACCEPTED}")
    if isinstance(value, (int, float)) and value in (1, -1):
        return int(value)
    key = str(value).strip().lower()
    if extra:
        for k, v in extra.items():
            if str(k).strip().lower() == key:
                return polarity_of(v)
    if key in POLARITY_SPELLINGS:
        return POLARITY_SPELLINGS[key]
    more = f", or {sorted(extra)}" if extra else ""
    raise ValueError(f"{value!r} is not a polarity; accepted: {POLARITY_ACCEPTED}{more}")


VALUE_KINDS = ("auto", "basic", "micro")


def resolve_value_pair(raw: Any, kind: str = "auto") -> Tuple[str, Optional[str]]:
    """``(basic value, survey item or None)`` from a basic value or a survey item name."""
    name = str(raw)
    if kind in ("auto", "basic"):
        try:
            return canonical_value(name), None
        except UnknownValueError:
            if kind == "basic":
                raise UnknownValueError(f"{raw!r} is not a basic value; accepted: {', '.join(BASIC_VALUES)}") from None
    micro = canonical_micro_value(name) if kind == "micro" else None
    if micro is None:
        try:
            micro = canonical_micro_value(name)
        except UnknownValueError:
            raise UnknownValueError(
                f"{raw!r} is neither a basic value nor a value-survey item; accepted: the basic values "
                f"({', '.join(BASIC_VALUES)}) or the 56 survey items ({', '.join(MICRO_VALUES)})") from None
    return MICRO_VALUES[micro], micro


# ---------------------------------------------------------------------------------------------
# Column mapping
# ---------------------------------------------------------------------------------------------


class ColumnMappingError(ItemValidationError):
    """A column that is missing, or a cell that cannot be mapped into the item schema.
    Names the source column, the row (when there is one) and the accepted spellings."""

    def __init__(self, row: Optional[int], field: str, column: Optional[str], problem: str, fix: str):
        self.column = column
        ValueError.__init__(self)
        self.row, self.field, self.item_id = row, field, None
        where = f"row {row}, " if row is not None else ""
        col = f"column {column!r} (field {field!r})" if column else f"field {field!r}"
        self.args = (f"{where}{col}: {problem}. Fix: {fix}",)

    def __str__(self) -> str:
        return self.args[0]


MAPPABLE_FIELDS = FIELDS


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
        unknown = [k for k in list(self.columns) + list(self.constants) if k not in MAPPABLE_FIELDS]
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


# ---------------------------------------------------------------------------------------------
# Reading tables
# ---------------------------------------------------------------------------------------------

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
                 ".zip": "csv", ".gz": "json"}


def is_disk_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "dataset_dict.json", "state.json"))


def read_table(source: Union[str, Path], config: Optional[str] = None, split: Optional[str] = None,
               revision: Optional[str] = None) -> datasets.Dataset:
    """Any table as one :class:`datasets.Dataset`, columns untouched.

    ``source``: a CSV/JSON/JSONL/Parquet file, a ``save_to_disk`` folder, a folder of data files,
    a URL of a file, or a Hub dataset id. ``split`` picks one of the source's splits; without it all
    splits are concatenated (a ``DatasetDict``'s split names are then lost).
    """
    text = str(source)
    path = Path(text).expanduser()
    loaded: Any
    if "://" in text and not text.startswith("hf://"):
        suffix = Path(text.split("?", 1)[0]).suffix.lower()
        loaded = datasets.load_dataset(FILE_BUILDERS.get(suffix, "csv"), data_files=text, split=split or "train")
    elif is_disk_dataset(path):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        suffix = path.suffix.lower()
        builder = FILE_BUILDERS.get(suffix)
        if builder is None:
            raise ValueError(f"{path}: unknown file type {suffix!r}; use one of {sorted(FILE_BUILDERS)} or a save_to_disk folder")
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    elif path.is_dir():
        loaded = datasets.load_dataset(str(path), split=split)
    elif path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{source!r} is not a file, a save_to_disk folder or a Hub dataset id")
    else:
        loaded = datasets.load_dataset(text, name=config, split=split, revision=revision)
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise ValueError(f"{source!r} has no split {split!r}; it has {sorted(loaded)}")
            loaded = loaded[split]
        else:
            loaded = datasets.concatenate_datasets([loaded[k] for k in loaded])
    return loaded


# ---------------------------------------------------------------------------------------------
# Mapping rows
# ---------------------------------------------------------------------------------------------


def _template_vars(country: str, domain: str) -> Dict[str, str]:
    from vat_hf.data.lens import template_vars

    return template_vars(country, domain)


def _error(row: int, field: str, column: Optional[str], problem: str, fix: str) -> str:
    return json.dumps({"row": row, "field": field, "column": column, "problem": problem, "fix": fix})


def _convert_batch(batch: Dict[str, List], indices: List[int], mapping: ColumnMapping) -> Dict[str, List]:
    from vat_hf.data.lens import extract_field, slug

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
                    raise _Bad(fieldname, f"empty {fieldname!r} ({raw!r})", f"fill it in, or drop the row")
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
                    value, micro = resolve_value_pair(raw_value, mapping.value_kind)
                except UnknownValueError as exc:
                    raise _Bad("value", str(exc).split("; accepted")[0], "accepted" + str(exc).split("; accepted", 1)[-1]) from None
            elif raw_micro is None or not str(raw_micro).strip():
                raise _Bad("value", f"empty value ({raw_value!r})", "fill in a basic value or a value-survey item")
            else:
                value = None
            if raw_micro is not None and str(raw_micro).strip():
                try:
                    micro = canonical_micro_value(str(raw_micro))
                except UnknownValueError:
                    raise _Bad("micro_value", f"{raw_micro!r} is not a value-survey item",
                               f"accepted: the 56 survey items ({', '.join(MICRO_VALUES)}) or an empty cell") from None
                if value is None:
                    value = MICRO_VALUES[micro]
                elif MICRO_VALUES[micro] != value:
                    raise _Bad("micro_value", f"{micro!r} belongs to {MICRO_VALUES[micro]!r}, not {value!r}",
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
                rec["scenario"] = mapping.scenario_template.format(**_template_vars(rec["country"], rec["domain"]))
            else:
                raise _Bad("scenario", "no scenario", "map a scenario column or set scenario_template")
            # scene, split, id
            raw_scene = cell("scene_id", i)
            if raw_scene is not None and str(raw_scene).strip():
                rec["scene_id"] = str(raw_scene).strip()
            else:
                digest = hashlib.sha256(rec["scenario"].encode()).hexdigest()[:8]
                rec["scene_id"] = f"{mapping.scene_prefix}/{slug(rec['country'])}/{slug(rec['domain'])}/{digest}"
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
                                 "map the scenario column, or set scenario_template, e.g. "
                                 "'I live in {the_country}, and I am facing a situation related to {domain_lower}.'")
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
    _fill_ids_and_splits(rows, mapping)
    return to_dataset(rows), errors


def _fill_ids_and_splits(rows: List[Dict[str, Any]], mapping: ColumnMapping) -> None:
    from vat_hf.data.lens import slug

    missing_split = [r["scene_id"] for r in rows if not r["split"]]
    if missing_split:
        given = {r["scene_id"] for r in rows if r["split"]}
        splits = assign_splits(set(missing_split) - given, seed=mapping.seed, train_fraction=mapping.train_fraction)
        for r in rows:
            if not r["split"]:
                if r["scene_id"] in given:
                    raise ColumnMappingError(None, "split", mapping.columns.get("split"),
                                             f"scene {r['scene_id']!r} has a split on some rows and none on others",
                                             "give every row of a scene the same split, or none")
                r["split"] = splits[r["scene_id"]]
    counts: Dict[str, int] = {}
    for r in rows:
        if not r["id"]:
            base = f"{r['scene_id']}/{slug(r['micro_value'] or r['value'])}/{'pos' if r['polarity'] > 0 else 'neg'}"
            counts[base] = counts.get(base, 0) + 1
            r["id"] = base if counts[base] == 1 else f"{base}/{counts[base]}"


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
    items, failures = map_items(raw, mapping)
    if failures:
        logger.warning("%s: %d rows could not be mapped and were left out (first: row %s, %s)",
                       source, len(failures), failures[0]["row"], failures[0]["problem"])
    meta = {"source": str(source), "column_mapping": {k: v for k, v in mapping.to_dict().items() if v not in (None, {}, "")},
            "rows_in_source": len(raw), "rows_mapped": len(items), "rows_unmapped": len(failures)}
    items.info.description = json.dumps(items_metadata(meta), ensure_ascii=False)
    return (items, failures) if return_failures else items


# ---------------------------------------------------------------------------------------------
# Metadata, saving, reading item sets
# ---------------------------------------------------------------------------------------------


def items_metadata(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Metadata of an item set as stored in ``Dataset.info.description`` (JSON) and the sidecar."""
    from vat_hf import __version__

    return {"vat_hf_item_set": 1, "vat_hf_version": __version__, **dict(meta)}


def read_metadata(ds: datasets.Dataset) -> Dict[str, Any]:
    try:
        meta = json.loads(ds.info.description or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _sidecar(path: Path, name: str) -> Path:
    if path.suffix:
        return path.with_name(f"{path.stem}.{name}")
    return path / name


def save_items(ds: Union[datasets.Dataset, Sequence[Mapping]], path: Union[str, Path],
               metadata: Optional[Mapping[str, Any]] = None,
               failures: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """Write an item set: ``.jsonl``/``.json`` (JSON lines), ``.parquet``, ``.csv``, or else a
    ``save_to_disk`` folder. Metadata goes into ``info.description`` and a sidecar
    (``<stem>.meta.json`` beside a file, ``vat_hf_metadata.json`` inside a folder); failures, when
    given, into ``<stem>.failures.jsonl`` / ``failures.jsonl``."""
    from vat_hf.io import write_json, write_jsonl

    if not isinstance(ds, datasets.Dataset):
        ds = to_dataset(ds)
    path = Path(path)
    meta = items_metadata({**read_metadata(ds), **(metadata or {})})
    ds.info.description = json.dumps(meta, ensure_ascii=False)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        write_jsonl(path, ds)
        meta_path, fail_path = _sidecar(path, "meta.json"), _sidecar(path, "failures.jsonl")
    elif suffix == ".parquet":
        atomic_write(path, ds.to_parquet)
        meta_path, fail_path = _sidecar(path, "meta.json"), _sidecar(path, "failures.jsonl")
    elif suffix == ".csv":
        atomic_write(path, lambda p: ds.to_csv(p, index=False))
        meta_path, fail_path = _sidecar(path, "meta.json"), _sidecar(path, "failures.jsonl")
    elif suffix:
        raise ValueError(f"{path}: unknown output type {suffix!r}; use .jsonl, .json, .parquet, .csv or a folder")
    else:
        if path.exists() and any(path.iterdir()) and not is_disk_dataset(path):
            raise FileExistsError(f"{path} exists and is not a saved item set; choose an empty or new folder")
        tmp = path.with_name(f".{path.name}.tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        ds.save_to_disk(str(tmp))
        if path.exists():
            import shutil

            shutil.rmtree(path)
        os.replace(tmp, path)
        meta_path, fail_path = path / METADATA_FILE, path / FAILURES_FILE
    write_json(meta_path, meta)
    if failures is not None:
        write_jsonl(fail_path, failures)
    return path


def read_items(source: Union[str, Path], columns: Union[ColumnMapping, Mapping, str, Path, None] = None,
               validate: bool = True, **read_kwargs: Any) -> datasets.Dataset:
    """An item set from a file/folder/Hub id in the item schema (or through ``columns``).

    ``validate=False`` returns the rows as they are (for :func:`vat_hf.data.quality.check_items`,
    which must report problems such as split leakage rather than stop at them).
    """
    if columns:
        return load_mapped(source, columns, **read_kwargs)
    raw = read_table(source, **read_kwargs)
    missing = [f for f in FIELDS if f not in raw.column_names and f != "micro_value"]
    if missing:
        raise ColumnMappingError(None, missing[0], None,
                                 f"{source!r} is not in the item schema: missing column(s) {missing}; it has {raw.column_names}",
                                 "load it with a column mapping (--mapping FILE.yaml or --map FIELD=COLUMN)")
    if not validate:
        return raw
    ds = to_dataset(raw)
    ds.info.description = raw.info.description
    sidecar = None
    path = Path(str(source))
    if path.is_dir():
        sidecar = path / METADATA_FILE
    elif path.is_file():
        sidecar = _sidecar(path, "meta.json")
    if sidecar is not None and sidecar.exists() and not read_metadata(ds):
        ds.info.description = sidecar.read_text(encoding="utf-8")
    return ds


# ---------------------------------------------------------------------------------------------
# The dataset card
# ---------------------------------------------------------------------------------------------

FIELD_DOCS = {
    "id": "unique id of the item",
    "scene_id": "the scene; all items of a scene share it, and splits are assigned per scene",
    "country": "country the scene is set in",
    "domain": "social domain (topic) of the scene",
    "scenario": "the concrete situation, 1-3 sentences",
    "action": "one action in the first person (\"I ...\")",
    "value": "the basic Schwartz value the action is about (one of ten)",
    "micro_value": "the Schwartz Value Survey item, when the source has one (else null)",
    "polarity": "+1: the action expresses the value; -1: it goes against it",
    "split": "`train` (material for alignment interventions) or `test` (evaluation); per scene",
}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def split_parts(ds: datasets.Dataset) -> Dict[str, datasets.Dataset]:
    """``{split: the rows of that split}``, in row order."""
    column = ds["split"]
    return {s: ds.select([i for i, x in enumerate(column) if x == s]) for s in SPLITS}


def dataset_card(ds: datasets.Dataset, metadata: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None,
                 license: str = "other", pretty_name: Optional[str] = None, quality: Optional[Mapping] = None) -> str:
    """The README.md of an item set: YAML metadata (licence, configs with the split files, the
    features) and sections on the schema, taxonomy, construction, splits, quality, licence and
    citation."""
    import yaml

    meta = {**read_metadata(ds), **(metadata or {})}
    splits = {s: d for s, d in split_parts(ds).items() if len(d)}
    name = pretty_name or meta.get("pretty_name") or (repo_id.split("/")[-1] if repo_id else "vat-hf item set")
    header = {
        "license": license,
        "language": ["en"],
        "pretty_name": name,
        "task_categories": ["text-classification"],
        "tags": ["schwartz-values", "value-alignment", "scenario-action", "vat-hf"],
        "size_categories": [_size_category(len(ds))],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}],
        "dataset_info": {
            "features": ITEM_FEATURES._to_yaml_list(),
            "splits": [{"name": s, "num_examples": len(d)} for s, d in splits.items()],
        },
    }
    scenes = {s: len(set(d["scene_id"])) for s, d in splits.items()}
    micro_present = any(m for m in ds["micro_value"])
    lines = [f"# {name}", ""]
    lines += [
        "Scenario–action items for measuring the **Value Alignment Tax** (VAT): how aligning a language model toward "
        "one Schwartz value moves its judgments of actions tied to the other values. Each item is one action in one "
        "concrete scene, tied to one basic value, either expressing it (`polarity = +1`) or going against it "
        "(`polarity = -1`). Made with vat-hf for the Value Alignment Tax "
        f"([Chen & Shen, 2026]({PAPER_URL})) "
        f"(version {meta.get('vat_hf_version', '?')}).",
        "",
        f"**{len(ds)} items** in **{len(set(ds['scene_id']))} scenes**; countries: "
        f"{', '.join(sorted(set(ds['country'])))}; domains: {', '.join(sorted(set(ds['domain'])))}.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"items = load_dataset({(repo_id or 'REPO_ID')!r})  # splits: {', '.join(splits)}",
        "```",
        "",
        "## Schema",
        "",
        "| field | type | meaning |",
        "|---|---|---|",
    ]
    for f in FIELDS:
        lines.append(f"| `{f}` | {ITEM_FEATURES[f].dtype} | {FIELD_DOCS[f]} |")
    lines += ["", "## Taxonomy", "",
              "The ten basic values of Schwartz's theory (Schwartz 1992; 2012), in circumplex order (adjacent values are "
              "compatible, opposite ones conflict), with their higher-order group"
              + (" and the Schwartz Value Survey items that map to them:" if micro_present else ":"), "",
              "| value | higher-order group | definition |" + (" survey items |" if micro_present else ""),
              "|---|---|---|" + ("---|" if micro_present else "")]
    for v in BASIC_VALUES:
        row = f"| {v} | {VALUES[v].higher_order} | {VALUES[v].definition} |"
        if micro_present:
            row += " " + ", ".join(m for m, b in MICRO_VALUES.items() if b == v) + " |"
        lines.append(row)
    lines += ["", "Hedonism is counted in Openness to Change (it shares elements with Self-Enhancement).", "",
              "## Construction", ""]
    construction = {k: v for k, v in meta.items() if k not in ("citation", "vat_hf_item_set", "quality", "license", "pretty_name")}
    if construction:
        lines.append("| key | value |")
        lines.append("|---|---|")
        for k, v in construction.items():
            text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
            text = text.replace("|", "\\|").replace("\n", "<br>")
            if len(text) > 600:
                text = text[:597] + "..."
            lines.append(f"| `{k}` | {text} |")
        lines.append("")
        lines.append(f"The full construction record (generator, prompts, seed, sampling settings) is in `{METADATA_FILE}`.")
    else:
        lines.append("No construction record was given.")
    lines += ["", "## Splits", "",
              "Splits are assigned **per scene**: every item of a scene is in the same split, so no scene used to build "
              "an intervention (`train`) is ever evaluated (`test`).", "",
              "| split | items | scenes |", "|---|---|---|"]
    for s, d in splits.items():
        lines.append(f"| {s} | {len(d)} | {scenes[s]} |")
    if quality:
        lines += ["", "## Quality checks", "", "From `vat_hf.data.quality.check_items`:", ""]
        for k, v in quality.items():
            lines.append(f"- **{k}**: {v}")
    lines += ["", "## Licence", "", f"`{license}`." + (f" {meta['license']}." if meta.get("license") else ""),
              "", "## Citation", "", "```bibtex", VAT_CITATION, "```"]
    if meta.get("citation"):
        lines += ["", "Source corpus:", "", "```bibtex", str(meta["citation"]), "```"]
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Push to the Hub
# ---------------------------------------------------------------------------------------------


@dataclass
class PushResult:
    repo_id: str
    files: Dict[str, bytes]  # path in the repo -> content
    card: str
    commit: Any = None  # huggingface_hub.CommitInfo, None for a dry run
    deleted: List[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}"


def hub_files(ds: datasets.Dataset, metadata: Optional[Mapping[str, Any]] = None, repo_id: Optional[str] = None,
              license: str = "other", pretty_name: Optional[str] = None, with_quality: bool = True) -> Tuple[Dict[str, bytes], str]:
    """The files of an upload: ``data/<split>-00000-of-00001.parquet`` per split, the metadata JSON
    and the card. Returns ``(files, card)``."""
    meta = items_metadata({**read_metadata(ds), **(metadata or {})})
    quality = None
    if with_quality:
        from vat_hf.data.quality import check_items, quality_summary

        report = check_items(ds)
        quality = quality_summary(report)
        meta["quality"] = quality
    card = dataset_card(ds, meta, repo_id=repo_id, license=license, pretty_name=pretty_name, quality=quality)
    files: Dict[str, bytes] = {}
    for split, part in split_parts(ds).items():
        if len(part):
            buf = io.BytesIO()
            part.to_parquet(buf)
            files[f"data/{split}-00000-of-00001.parquet"] = buf.getvalue()
    files[METADATA_FILE] = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode()
    files["README.md"] = card.encode()
    return files, card


def push_to_hub(items: Union[datasets.Dataset, Sequence[Mapping], str, Path], repo_id: str, *,
                metadata: Optional[Mapping[str, Any]] = None, license: str = "other", pretty_name: Optional[str] = None,
                private: Optional[bool] = None, token: Optional[str] = None, revision: Optional[str] = None,
                create_pr: bool = False, commit_message: Optional[str] = None, dry_run_dir: Optional[Union[str, Path]] = None,
                api: Any = None) -> PushResult:
    """Upload an item set to the Hub as a dataset repository, in one commit.

    ``items``: a Dataset, item rows, or a path of a saved item set. The set is validated first (a
    leaky or malformed set is never pushed). The commit holds one Parquet file per split under
    ``data/`` (loadable with ``load_dataset(repo_id)``), ``vat_hf_metadata.json`` and ``README.md``
    (:func:`dataset_card`); stale files under ``data/`` from earlier pushes are deleted in the same
    commit. ``dry_run_dir`` writes the files there instead and makes no network call.
    """
    if isinstance(items, (str, Path)):
        items = read_items(items)
    elif not isinstance(items, datasets.Dataset):
        items = to_dataset(items)
    ds = to_dataset(items)  # validate
    ds.info.description = items.info.description if isinstance(items, datasets.Dataset) else ""
    files, card = hub_files(ds, metadata, repo_id=repo_id, license=license, pretty_name=pretty_name)
    if dry_run_dir is not None:
        out = Path(dry_run_dir)
        for name, content in files.items():
            target = out / name
            atomic_write(target, lambda p, c=content: Path(p).write_bytes(c))
        return PushResult(repo_id=repo_id, files=files, card=card)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = api or HfApi(token=token)
    create_kwargs: Dict[str, Any] = {"repo_type": "dataset", "exist_ok": True}
    if private is not None:
        create_kwargs["private"] = private
    repo_url = api.create_repo(repo_id, **create_kwargs)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    if revision is not None and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    try:
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except Exception as err:  # a fresh repository, or a revision that does not exist yet
        logger.info("could not list %s (%s); nothing to delete", repo_id, err)
        existing = []
    stale = [p for p in existing if p.startswith("data/") and p not in files]
    operations: List[Any] = [CommitOperationDelete(path_in_repo=p) for p in stale]
    operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()]
    commit = api.create_commit(repo_id, operations=operations, repo_type="dataset", revision=revision, create_pr=create_pr,
                               commit_message=commit_message or f"Upload vat-hf item set ({len(ds)} items)")
    return PushResult(repo_id=repo_id, files=files, card=card, commit=commit, deleted=stale)

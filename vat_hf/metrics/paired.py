"""Pairing judgments by item id: the bridge from evaluator records to the metric.

Pairing is strict, because a wrong pair gives a wrong number without any error:

* an id may occur once per record list (a duplicate would pair an item with another action's
  rating): refused, naming both lines;
* an item judged before and after must be the same item in both: the same value, survey item,
  polarity, scene and text (``item_hash``: the scenario and action the model read, recorded by
  the evaluator): a mismatch is refused, naming the id, the field and both lines;
* items present on one side only, and items without a rating (``rating: null``: refused as too
  long, unparseable, or missing), are counted in ``pairing`` and logged as a warning with their
  first ids; paired items without a rating reach the metric as missing, so its
  ``dropped.missing_rating`` counts them too.

:func:`score_judgments` scores one intervention (``compute_vat``); :func:`compare_judgments`
compares several arms on the items they all judged (``compare_paired``), each arm with its own
before and after records. Positions in messages are lines of a JSONL file, counted from 1 (the
record at index 0 is line 1).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from vat_hf.metrics.core import VATInputError

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ("value", "polarity", "scene", "micro_value", "country", "domain")
_RECORD_KEY = {"scene": "scene_id"}  # metric column -> judgment-record field
SAME_ITEM_FIELDS = ("value", "micro_value", "polarity", "scene_id", "item_hash")
"""What must agree between an item's records before and after (``item_hash`` where both have it)."""
MAX_LISTED = 5


def _item_columns(records: Sequence[Mapping], where: str) -> Dict[str, List]:
    columns: Dict[str, List] = {k: [] for k in ITEM_COLUMNS}
    for record in records:
        for key in ITEM_COLUMNS:
            field = _RECORD_KEY.get(key, key)
            if key in ("value", "polarity", "scene") and field not in record:
                raise VATInputError(f"{where}: record {record.get('id')!r}", f"has no {field!r}",
                                    "score judgment records written by vat-hf eval / vat-hf run")
            columns[key].append(int(record[field]) if key == "polarity" else record.get(field))
    for key in ("micro_value", "country", "domain"):
        if not any(v not in (None, "") for v in columns[key]):
            columns.pop(key)
    return columns


def index_records(records: Sequence[Mapping], name: str) -> Dict[Any, int]:
    """``{id: index}`` of a record list; a record without an id, or an id twice, is refused
    (naming the lines, counted from 1).

    >>> index_records([{"id": "a"}, {"id": "b"}], "pre.jsonl")
    {'a': 0, 'b': 1}
    >>> index_records([{"id": "a"}, {"id": "a"}], "post.jsonl")
    Traceback (most recent call last):
    ...
    vat_hf.metrics.core.VATInputError: post.jsonl: line 2: id 'a' is also on line 1
      fix: each item is judged once per file; rerun the evaluation, or remove the repeated records
    """
    index: Dict[Any, int] = {}
    for i, record in enumerate(records):
        item_id = record.get("id") if isinstance(record, Mapping) else None
        if item_id in (None, ""):
            raise VATInputError(f"{name}: line {i + 1}", "record has no 'id'",
                                "score judgment records written by vat-hf eval / vat-hf run")
        if item_id in index:
            raise VATInputError(f"{name}: line {i + 1}", f"id {item_id!r} is also on line {index[item_id] + 1}",
                                "each item is judged once per file; rerun the evaluation, or remove the repeated records")
        index[item_id] = i
    return index


def _check_same_item(item_id, a: Mapping, b: Mapping, names: Tuple[str, str], lines: Tuple[int, int]) -> None:
    for field in SAME_ITEM_FIELDS:
        if field == "item_hash" and (a.get(field) is None or b.get(field) is None):
            continue  # records written before the evaluator recorded the item's text hash
        x, y = a.get(field), b.get(field)
        if field == "polarity" and x is not None and y is not None:
            x, y = int(x), int(y)
        if x != y:
            what = "text (scenario or action)" if field == "item_hash" else field
            shown = "" if field == "item_hash" else f": {x!r} in {names[0]}, {y!r} in {names[1]}"
            raise VATInputError(f"item {item_id!r} ({names[0]} line {lines[0] + 1}, {names[1]} line {lines[1] + 1})",
                                f"its {what} differs{shown}",
                                "pair judgments of the same item set (same source, split and ids) before and after")


def _rated(record: Mapping) -> bool:
    rating = record.get("rating")
    return rating is not None and not (isinstance(rating, float) and math.isnan(rating))


def _rating(record: Mapping) -> float:
    return float(record["rating"]) if _rated(record) else float("nan")


def pair_records(pre: Sequence[Mapping], post: Sequence[Mapping], pre_name: str = "pre", post_name: str = "post"
                 ) -> Tuple[List[Tuple[Mapping, Mapping]], Dict[str, Any]]:
    """The (before, after) record pairs of the items in both lists, in ``pre``'s order, and the
    ``pairing`` counts: ``n_pre``, ``n_post``, ``n_paired``, ``n_rated`` (paired with a rating on
    both sides), ``only_pre``/``only_post`` and ``unrated_pre``/``unrated_post`` (paired items
    without a rating), each ``{"n": ..., "first": [ids]}``. Refuses duplicates and items that
    differ between the two lists (see the module docstring)."""
    pre_index, post_index = index_records(pre, pre_name), index_records(post, post_name)
    pairs = []
    for item_id, i in pre_index.items():
        j = post_index.get(item_id)
        if j is None:
            continue
        _check_same_item(item_id, pre[i], post[j], (pre_name, post_name), (i, j))
        pairs.append((pre[i], post[j]))

    def listed(ids: List) -> Dict[str, Any]:
        return {"n": len(ids), "first": ids[:MAX_LISTED]}

    pairing = {
        "pre": pre_name, "post": post_name, "n_pre": len(pre), "n_post": len(post), "n_paired": len(pairs),
        "n_rated": sum(1 for a, b in pairs if _rated(a) and _rated(b)),
        "only_pre": listed([k for k in pre_index if k not in post_index]),
        "only_post": listed([k for k in post_index if k not in pre_index]),
        "unrated_pre": listed([a["id"] for a, _ in pairs if not _rated(a)]),
        "unrated_post": listed([b["id"] for _, b in pairs if not _rated(b)]),
    }
    return pairs, pairing


def pairing_summary(pairing: Mapping[str, Any]) -> Optional[str]:
    """One sentence on what pairing left out (None when every item was paired and rated).

    >>> pairing_summary({"pre": "a.jsonl", "post": "b.jsonl", "n_pre": 40, "n_post": 35, "n_paired": 35,
    ...                  "n_rated": 34, "only_pre": {"n": 5, "first": ["x"]}, "only_post": {"n": 0, "first": []},
    ...                  "unrated_pre": {"n": 0, "first": []}, "unrated_post": {"n": 1, "first": ["y"]}})
    "scored 34 of 40 items: 5 only in a.jsonl (first: 'x'), 1 without a rating in b.jsonl (first: 'y')"
    """
    parts = []
    for key, words, side in (("only_pre", "only in", "pre"), ("only_post", "only in", "post"),
                             ("unrated_pre", "without a rating in", "pre"), ("unrated_post", "without a rating in", "post")):
        entry = pairing[key]
        if entry["n"]:
            first = ", ".join(repr(i) for i in entry["first"])
            parts.append(f"{entry['n']} {words} {pairing[side]} (first: {first})")
    if not parts:
        return None
    total = pairing["n_pre"] + pairing["only_post"]["n"]  # distinct ids on either side
    return f"scored {pairing['n_rated']} of {total} items: " + ", ".join(parts)


def _check_scale(files, scale_min: float, scale_max: float) -> None:
    """Refuse the first rating outside ``[scale_min, scale_max]``, naming its file and line."""
    for records, name in files:
        for line, record in enumerate(records, start=1):
            if _rated(record) and not scale_min - 1e-9 <= float(record["rating"]) <= scale_max + 1e-9:
                raise VATInputError(f"{name}: line {line}", f"rating {record['rating']!r} of item {record.get('id')!r} "
                                    f"is outside the scale [{scale_min:g}, {scale_max:g}]",
                                    "set --scale-min/--scale-max (scale_min/scale_max) to the scale the items were rated on")


def pair_judgments(pre: Sequence[Mapping], post: Sequence[Mapping], pre_name: str = "pre",
                   post_name: str = "post") -> Dict[str, List]:
    """Metric input columns (``pre``, ``post``, ``value``, ``polarity``, ``scene`` and, where the
    records have them, ``micro_value``, ``country``, ``domain``) for the items present in both
    record lists, in ``pre``'s order; a missing rating is NaN (the metric drops and counts it)."""
    return _columns(*pair_records(pre, post, pre_name, post_name))


def _columns(pairs, pairing) -> Dict[str, List]:
    if not pairing["n_rated"]:
        raise VATInputError("judgments", f"no item was judged (with a rating) both in {pairing['pre']} and in "
                            f"{pairing['post']} ({pairing['n_pre']} and {pairing['n_post']} records, "
                            f"{pairing['n_paired']} ids in both)", "check that both runs judged the same items")
    columns = _item_columns([before for before, _ in pairs], "pre")
    columns["pre"] = [_rating(before) for before, _ in pairs]
    columns["post"] = [_rating(after) for _, after in pairs]
    return columns


def score_judgments(pre: Sequence[Mapping], post: Sequence[Mapping], target_value: str, pre_name: str = "pre",
                    post_name: str = "post", **metric_kwargs) -> Dict:
    """The VAT metric on paired judgments (see :func:`vat_hf.metrics.core.compute_vat`), with the
    ``pairing`` counts; what pairing left out is logged as a warning and added to ``warnings``."""
    from vat_hf.metrics.core import compute_vat

    pairs, pairing = pair_records(pre, post, pre_name, post_name)
    _check_scale(((pre, pre_name), (post, post_name)), metric_kwargs.get("scale_min", 1.0),
                 metric_kwargs.get("scale_max", 5.0))
    columns = _columns(pairs, pairing)
    result = compute_vat(**columns, target_value=target_value, **metric_kwargs)
    result["n_unpaired"] = pairing["only_pre"]["n"] + pairing["only_post"]["n"]
    result["pairing"] = pairing
    note = pairing_summary(pairing)
    if note:
        logger.warning("%s", note)
        result["warnings"] = [*result.get("warnings", []), note]
    return result


def compare_judgments(arms: Mapping[str, Tuple[Sequence[Mapping], Sequence[Mapping]]], target_value: str,
                      **metric_kwargs) -> Dict[str, Any]:
    """Paired comparison of arms from judgment records: ``arms`` maps a name to that arm's
    ``(pre_records, post_records)`` (interventions on one model share the baseline records;
    models under one intervention each bring their own). Records are matched by item ``id``
    (an id twice in one list is refused); the items every arm judged before and after are
    compared (see :func:`vat_hf.metrics.compare.compare_paired`; ``n_unmatched`` counts, per arm,
    the records left out). An item must be the same item (value, survey item, polarity, scene,
    text) in every arm.
    """
    from vat_hf.metrics.compare import compare_paired

    if not arms:
        raise VATInputError("arms", "no arms to compare", "pass {name: (pre_records, post_records)}")
    by_id = {}
    for name, pair in arms.items():
        pre, post = pair
        pre_index, post_index = index_records(pre, f"arms[{name!r}] pre"), index_records(post, f"arms[{name!r}] post")
        by_id[name] = ({k: pre[i] for k, i in pre_index.items()}, {k: post[i] for k, i in post_index.items()})
    first_pre = next(iter(arms.values()))[0]
    ids = [r["id"] for r in first_pre if all(r["id"] in a and r["id"] in b for a, b in by_id.values())]
    if not ids:
        raise VATInputError("judgments", "no item id is in every arm's before and after records",
                            "compare arms judged on the same items")
    first = next(iter(arms))
    reference = [by_id[first][0][i] for i in ids]
    columns = _item_columns(reference, "pre")
    for name, (pre_map, post_map) in by_id.items():
        for side, records in (("pre", pre_map), ("post", post_map)):
            for i, ref in zip(ids, reference):
                other = records[i]
                for field in SAME_ITEM_FIELDS:
                    if field == "item_hash" and (other.get(field) is None or ref.get(field) is None):
                        continue
                    if other.get(field) != ref.get(field):
                        raise VATInputError(f"arms[{name!r}] {side}: item {i!r}", f"{field} is {other.get(field)!r} here but "
                                            f"{ref.get(field)!r} in arm {first!r}'s pre",
                                            "compare judgments of the same item set")
    ratings = {name: ([_rating(pre_map[i]) for i in ids], [_rating(post_map[i]) for i in ids])
               for name, (pre_map, post_map) in by_id.items()}
    result = compare_paired(ratings, **columns, target_value=target_value, **metric_kwargs)
    result["n_unmatched"] = {name: len(pre_map) + len(post_map) - 2 * len(ids) for name, (pre_map, post_map) in by_id.items()}
    return result

"""Pairing judgments by item id: the bridge from evaluator records to the metric.

Only items judged (with a rating) both before and after enter the metric; the rest are counted,
never silently mixed in. :func:`score_judgments` scores one intervention (``compute_vat``);
:func:`compare_judgments` compares several arms on the items they all judged
(``compare_paired``), each arm with its own before and after records.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from vat_hf.metrics.core import VATInputError

ITEM_COLUMNS = ("value", "polarity", "scene", "micro_value", "country", "domain")
_RECORD_KEY = {"scene": "scene_id"}  # metric column -> judgment-record field


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


def pair_judgments(pre: Sequence[Mapping], post: Sequence[Mapping]) -> Dict[str, List]:
    """Metric input columns (``pre``, ``post``, ``value``, ``polarity``, ``scene`` and, where the
    records have them, ``micro_value``, ``country``, ``domain``) for the items present in both
    record lists, in ``pre``'s order."""
    post_by_id = {record["id"]: record for record in post}
    kept = [(record, post_by_id[record["id"]]) for record in pre
            if record["id"] in post_by_id and _rated(record) and _rated(post_by_id[record["id"]])]
    if not kept:
        raise VATInputError("judgments", "no item was judged both before and after",
                            "check that both runs used the same items")
    columns = _item_columns([before for before, _ in kept], "pre")
    columns["pre"] = [float(before["rating"]) for before, _ in kept]
    columns["post"] = [float(after["rating"]) for _, after in kept]
    return columns


def _rated(record: Mapping) -> bool:
    rating = record.get("rating")
    return rating is not None and not (isinstance(rating, float) and math.isnan(rating))


def _rating(record: Mapping) -> float:
    return float(record["rating"]) if _rated(record) else float("nan")


def score_judgments(pre: Sequence[Mapping], post: Sequence[Mapping], target_value: str, **metric_kwargs) -> Dict:
    """The VAT metric on paired judgments (see :func:`vat_hf.metrics.core.compute_vat`)."""
    from vat_hf.metrics.core import compute_vat

    columns = pair_judgments(pre, post)
    result = compute_vat(**columns, target_value=target_value, **metric_kwargs)
    result["n_unpaired"] = len(pre) + len(post) - 2 * len(columns["pre"])
    return result


def compare_judgments(arms: Mapping[str, Tuple[Sequence[Mapping], Sequence[Mapping]]], target_value: str,
                      **metric_kwargs) -> Dict[str, Any]:
    """Paired comparison of arms from judgment records: ``arms`` maps a name to that arm's
    ``(pre_records, post_records)`` (interventions on one model share the baseline records;
    models under one intervention each bring their own). Records are matched by item ``id``;
    the items every arm judged before and after are compared (see
    :func:`vat_hf.metrics.compare.compare_paired`; ``n_unmatched`` counts, per arm, the records
    left out). An item must carry the same value, polarity and scene in every arm.
    """
    from vat_hf.metrics.compare import compare_paired

    if not arms:
        raise VATInputError("arms", "no arms to compare", "pass {name: (pre_records, post_records)}")
    by_id = {}
    for name, pair in arms.items():
        pre, post = pair
        by_id[name] = ({r["id"]: r for r in pre}, {r["id"]: r for r in post})
    first_pre = next(iter(arms.values()))[0]
    ids = [r["id"] for r in first_pre if all(r["id"] in a and r["id"] in b for a, b in by_id.values())]
    if not ids:
        raise VATInputError("judgments", "no item id is in every arm's before and after records",
                            "compare arms judged on the same items")
    reference = [by_id[next(iter(arms))][0][i] for i in ids]
    columns = _item_columns(reference, "pre")
    for name, (pre_map, post_map) in by_id.items():
        for records in (pre_map, post_map):
            for i, ref in zip(ids, reference):
                other = records[i]
                for field in ("value", "polarity", "scene_id"):
                    if other.get(field) != ref.get(field):
                        raise VATInputError(f"arms[{name!r}]: item {i!r}", f"{field} is {other.get(field)!r} here but "
                                            f"{ref.get(field)!r} in the first arm",
                                            "compare judgments of the same item set")
    ratings = {name: ([_rating(pre_map[i]) for i in ids], [_rating(post_map[i]) for i in ids])
               for name, (pre_map, post_map) in by_id.items()}
    result = compare_paired(ratings, **columns, target_value=target_value, **metric_kwargs)
    result["n_unmatched"] = {name: len(pre_map) + len(post_map) - 2 * len(ids) for name, (pre_map, post_map) in by_id.items()}
    return result

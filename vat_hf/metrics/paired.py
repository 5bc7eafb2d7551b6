"""Pairing before/after judgments by item id: the bridge from evaluator records to the metric.

Only items judged (with a rating) both before and after enter the metric; the rest are counted,
never silently mixed in.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence


def pair_judgments(pre: Sequence[Mapping], post: Sequence[Mapping]) -> Dict[str, List]:
    """Metric input columns (``pre``, ``post``, ``value``, ``polarity``, ``scene``,
    ``micro_value``) for the items present in both record lists, in ``pre``'s order."""
    post_by_id = {record["id"]: record for record in post}
    columns: Dict[str, List] = {"pre": [], "post": [], "value": [], "polarity": [], "scene": [], "micro_value": []}
    for record in pre:
        after = post_by_id.get(record["id"])
        if after is None or not _rated(record) or not _rated(after):
            continue
        columns["pre"].append(float(record["rating"]))
        columns["post"].append(float(after["rating"]))
        columns["value"].append(record["value"])
        columns["polarity"].append(int(record["polarity"]))
        columns["scene"].append(record["scene_id"])
        columns["micro_value"].append(record.get("micro_value"))
    if not columns["pre"]:
        raise ValueError("no item was judged both before and after: check that both runs used the same items")
    return columns


def _rated(record: Mapping) -> bool:
    rating = record.get("rating")
    return rating is not None and not (isinstance(rating, float) and math.isnan(rating))


def score_judgments(pre: Sequence[Mapping], post: Sequence[Mapping], target_value: str, **metric_kwargs) -> Dict:
    """The VAT metric on paired judgments (see :func:`vat_hf.metrics.core.compute_vat`)."""
    from vat_hf.metrics.core import compute_vat

    columns = pair_judgments(pre, post)
    if not any(columns["micro_value"]):
        columns.pop("micro_value")
    result = compute_vat(**columns, target_value=target_value, **metric_kwargs)
    result["n_unpaired"] = len(pre) + len(post) - 2 * len(columns["pre"])
    return result

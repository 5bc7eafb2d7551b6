"""Tax-aware DPO: anchor pairs that keep the model's own earlier preferences on the other values.

Plain DPO toward a target value trains only on (expresses target, goes against target) pairs, and
whatever else moves, moves freely: that is the tax. Tax-aware DPO mixes in **anchor pairs** for the
non-target values, built from ``train`` scenes: in a scene, the action expressing value ``v`` and the
action going against it form a pair whose chosen/rejected order is the order **the model itself**
gave them before training (its own zero-shot ratings), never an order that declares either side of
``v`` right. DPO on such a pair rewards keeping that earlier preference, so the non-target values
are held where they were while the target moves.

The **weight** ``w`` is the number of anchor pairs per target pair: ``round(w * n_target_pairs)``
anchors, spread evenly over the non-target values (round-robin over values, scenes shuffled by
seed), appended after the target pairs. Pairs whose two earlier ratings differ by no more than
``min_margin`` carry no preference and are skipped. ``w = 0`` adds nothing: the data, and so the
training run, are exactly plain DPO's. No loss term is added: it is a data mixture for TRL's own
``DPOTrainer``.
"""

from __future__ import annotations

import random
from typing import Dict, List, Mapping, Sequence

from vat_hf.train.data import TrainingDataError, assistant_message, user_message
from vat_hf.values import canonical_value


def anchor_pairs(
    train_items: Sequence[Mapping],
    earlier_judgments: Sequence[Mapping],
    target_value: str,
    n_pairs: int,
    seed: int = 0,
    min_margin: float = 0.0,
) -> List[Dict]:
    """Up to ``n_pairs`` anchor preference rows for the values other than ``target_value``.

    ``earlier_judgments``: the model's own records (``id``, ``rating``) for the train items, taken
    before training.
    """
    target = canonical_value(target_value)
    if any(item["split"] != "train" for item in train_items):
        raise TrainingDataError("anchor pairs come from 'train' scenes only; a 'test' item was given")
    if n_pairs <= 0:
        return []
    rating = {r["id"]: r["rating"] for r in earlier_judgments if r.get("rating") is not None}
    cells: Dict[str, Dict[str, Dict[int, Mapping]]] = {}
    for item in train_items:
        if item["value"] != target:
            cells.setdefault(item["value"], {}).setdefault(item["scene_id"], {})[item["polarity"]] = item
    rng = random.Random(seed)
    candidates: Dict[str, List[Dict]] = {}
    for value in sorted(cells):
        rows = []
        scenes = sorted(cells[value])
        rng.shuffle(scenes)
        for scene in scenes:
            pair = cells[value][scene]
            if 1 not in pair or -1 not in pair:
                continue
            a, b = pair[1], pair[-1]
            if a["id"] not in rating or b["id"] not in rating:
                raise TrainingDataError(f"no earlier judgment for train item {a['id']!r} or {b['id']!r}; judge the train items first")
            if abs(rating[a["id"]] - rating[b["id"]]) <= min_margin:
                continue
            chosen, rejected = (a, b) if rating[a["id"]] > rating[b["id"]] else (b, a)
            rows.append({"prompt": [user_message(chosen)], "chosen": [assistant_message(chosen)],
                         "rejected": [assistant_message(rejected)], "anchor_value": value})
        candidates[value] = rows
    chosen_rows: List[Dict] = []
    depth = 0
    while len(chosen_rows) < n_pairs and any(depth < len(rows) for rows in candidates.values()):
        for value in sorted(candidates):
            if depth < len(candidates[value]) and len(chosen_rows) < n_pairs:
                chosen_rows.append(candidates[value][depth])
        depth += 1
    return chosen_rows


def tax_aware_pairs(target_pairs: Sequence[Dict], train_items: Sequence[Mapping], earlier_judgments: Sequence[Mapping],
                    target_value: str, weight: float, seed: int = 0, min_margin: float = 0.0) -> List[Dict]:
    """Target pairs followed by ``round(weight * len(target_pairs))`` anchor pairs."""
    if weight < 0:
        raise ValueError("the tax-aware weight must be >= 0")
    rows = [dict(row) for row in target_pairs]
    n_anchor = int(round(weight * len(rows)))
    if n_anchor == 0:
        return rows
    anchors = anchor_pairs(train_items, earlier_judgments, target_value, n_anchor, seed=seed, min_margin=min_margin)
    for row in rows:
        row.setdefault("anchor_value", None)
    return rows + anchors

"""Quality checks for any item set: balance, duplicates, split leakage, lengths.

:func:`check_items` takes a Dataset or rows (in the item schema, validated or not: it reports
problems rather than stopping at the first) and returns a dict; :func:`print_report` prints it as a
table. What is checked:

* **rows**: every row passes :func:`vat_hf.data.schema.normalize_item` (known value, polarity ±1,
  split train/test ...); unique ids.
* **balance**: items per polarity and per value x polarity; per scene, which value x polarity cells
  present in the set are missing from the scene; cells (scene x value [x survey item]) whose +1 and
  -1 counts differ; scene sizes.
* **duplicates**: exact duplicate actions (after lower-casing and dropping punctuation), and
  near-duplicates: pairs of actions whose sets of lower-cased word tokens have a Jaccard similarity
  of at least :data:`NEAR_DUPLICATE_THRESHOLD` (0.8). Candidates come from MinHash with
  locality-sensitive hashing (64 permutations, 16 bands of 4 rows: a pair at Jaccard 0.8 is found
  with probability > 0.999, one at 0.3 is a candidate with probability ~0.12), then every candidate
  is verified exactly, so no reported pair is below the threshold. Pairs are flagged when they sit
  in the same scene or carry a different value or polarity (a conflicting label).
* **leakage**: scenes in both splits; the same scenario text under scene ids in both splits.
* **lengths**: words per scenario and per action (min, mean, median, 95th percentile, max).

``problems`` (leakage, invalid rows, duplicate ids) make ``ok`` false; ``warnings`` (imbalance,
duplicates) do not.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import datasets
import numpy as np

from vat_hf.data.fields import SPLITS
from vat_hf.data.schema import FIELDS, ItemValidationError, normalize_item

NEAR_DUPLICATE_THRESHOLD = 0.8
_NUM_PERM, _BANDS = 64, 16
_PRIME = np.uint64(4294967311)  # > 2**32, so (a * x) with a, x < 2**32 fits in uint64
_BIG_GROUP = 200
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MAX_EXAMPLES = 10


def tokens(text: str) -> List[str]:
    """Lower-cased word tokens.

    >>> tokens("I don't vote, ever!")
    ['i', "don't", 'vote', 'ever']
    """
    return _TOKEN.findall(str(text).lower())


def normalise(text: str) -> str:
    return " ".join(tokens(text))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _minhash(token_sets: Sequence[Sequence[str]], seed: int = 0) -> np.ndarray:
    """(n, _NUM_PERM) MinHash signatures; rows of empty sets are all-max (never candidates)."""
    cache: Dict[str, int] = {}
    flat: List[int] = []
    offsets: List[int] = []
    nonempty: List[int] = []
    for i, toks in enumerate(token_sets):
        if not toks:
            continue
        nonempty.append(i)
        offsets.append(len(flat))
        for t in toks:
            h = cache.get(t)
            if h is None:
                h = cache[t] = zlib.crc32(t.encode())
            flat.append(h)
    n = len(token_sets)
    sig = np.full((n, _NUM_PERM), np.iinfo(np.uint64).max, dtype=np.uint64)
    if not flat:
        return sig
    x = np.asarray(flat, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32 - 1, size=_NUM_PERM, dtype=np.uint64)
    b = rng.integers(0, 2**32 - 1, size=_NUM_PERM, dtype=np.uint64)
    idx = np.asarray(nonempty)
    off = np.asarray(offsets)
    for k in range(_NUM_PERM):
        h = (a[k] * x % _PRIME + b[k]) % _PRIME
        sig[idx, k] = np.minimum.reduceat(h, off)
    return sig


def near_duplicate_pairs(texts: Sequence[str], threshold: float = NEAR_DUPLICATE_THRESHOLD,
                         token_sets: Optional[Sequence[Sequence[str]]] = None) -> List[Tuple[int, int, float]]:
    """``(i, j, jaccard)`` for pairs of texts with token-set Jaccard >= ``threshold`` (i < j).

    Not quadratic: MinHash-LSH candidates, verified exactly. In a bucket of more than 200 texts
    (a large cluster of copies) each member is compared with the bucket's first member only.

    >>> near_duplicate_pairs(["I help my neighbour today.", "Today I help my neighbour", "I refuse to vote."])
    [(0, 1, 1.0)]
    """
    sets = [frozenset(t) for t in (token_sets if token_sets is not None else (tokens(s) for s in texts))]
    n = len(sets)
    if n < 2:
        return []
    sig = _minhash([sorted(s) for s in sets])
    rows = _NUM_PERM // _BANDS
    mult = np.uint64(1099511628211)
    candidates = set()
    valid = np.array([bool(s) for s in sets])
    for band in range(_BANDS):
        block = sig[:, band * rows:(band + 1) * rows]
        key = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c in range(rows):
                key = key * mult + block[:, c]
        key = np.where(valid, key, np.arange(n, dtype=np.uint64) + np.uint64(2**63))  # empty sets never collide
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_keys)) + 1))
        lengths = np.diff(np.concatenate((starts, [n])))
        for start, length in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist()):
            members = sorted(order[start:start + length].tolist())
            if len(members) > _BIG_GROUP:
                first = members[0]
                candidates.update((first, m) for m in members[1:])
            else:
                for p in range(len(members)):
                    for q in range(p + 1, len(members)):
                        candidates.add((members[p], members[q]))
    out = []
    for i, j in sorted(candidates):
        a, b = sets[i], sets[j]
        inter = len(a & b)
        sim = inter / (len(a) + len(b) - inter)
        if sim >= threshold:
            out.append((i, j, round(sim, 4)))
    return out


def _stats(values: Sequence[float]) -> Dict[str, float]:
    if not len(values):
        return {"min": 0, "mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    arr = np.asarray(values, dtype=float)
    return {"min": int(arr.min()), "mean": round(float(arr.mean()), 2), "median": float(np.median(arr)),
            "p95": round(float(np.percentile(arr, 95)), 1), "max": int(arr.max())}


def _columns(items: Any) -> Dict[str, List[Any]]:
    if isinstance(items, datasets.Dataset):
        return items.to_dict()
    rows = list(items)
    return {k: [r.get(k) for r in rows] for k in FIELDS}


def _sign(p: int) -> str:
    return "+1" if p > 0 else "-1"


def check_items(items: Any, near_threshold: float = NEAR_DUPLICATE_THRESHOLD) -> Dict[str, Any]:
    """Run every check on an item set (Dataset or rows); the report as a JSON-able dict."""
    cols = _columns(items)
    n = len(cols.get("id", []))
    rows: List[Optional[Dict[str, Any]]] = []
    invalid: List[str] = []
    for i in range(n):
        raw = {k: v[i] for k, v in cols.items()}
        try:
            rows.append(normalize_item(raw, i))
        except ItemValidationError as err:
            rows.append(None)
            invalid.append(str(err))
    good = [r for r in rows if r is not None]
    problems: List[str] = []
    warnings: List[str] = []
    if invalid:
        problems.append(f"{len(invalid)} rows do not fit the item schema (first: {invalid[0]})")
    id_counts = Counter(r["id"] for r in good)
    dup_ids = sorted(i for i, c in id_counts.items() if c > 1)
    if dup_ids:
        problems.append(f"{len(dup_ids)} ids are used more than once (first: {dup_ids[0]!r})")

    # splits and leakage
    scene_splits: Dict[str, set] = defaultdict(set)
    scenario_splits: Dict[str, set] = defaultdict(set)
    scenario_scenes: Dict[str, set] = defaultdict(set)
    for r in good:
        scene_splits[r["scene_id"]].add(r["split"])
        key = normalise(r["scenario"])
        scenario_splits[key].add(r["split"])
        scenario_scenes[key].add(r["scene_id"])
    leaky_scenes = sorted(s for s, sp in scene_splits.items() if len(sp) > 1)
    leaky_scenarios = [next(iter(scenario_scenes[k])) for k, sp in scenario_splits.items()
                       if len(sp) > 1 and len(scenario_scenes[k]) > 1]
    if leaky_scenes:
        problems.append(f"{len(leaky_scenes)} scenes are in both splits (first: {leaky_scenes[0]!r})")
    if leaky_scenarios:
        problems.append(f"{len(leaky_scenarios)} scenario texts appear under scenes in both splits")
    splits = {}
    for split in SPLITS:
        members = [r for r in good if r["split"] == split]
        splits[split] = {"items": len(members), "scenes": len({r["scene_id"] for r in members})}
    action_splits: Dict[str, set] = defaultdict(set)
    for r in good:
        action_splits[normalise(r["action"])].add(r["split"])
    actions_across = sum(1 for sp in action_splits.values() if len(sp) > 1)

    # balance
    polarity = Counter(_sign(r["polarity"]) for r in good)
    per_value = {v: {"+1": 0, "-1": 0} for v in sorted({r["value"] for r in good})}
    for r in good:
        per_value[r["value"]][_sign(r["polarity"])] += 1
    cells_all = {(r["value"], r["polarity"]) for r in good}
    scene_cells: Dict[str, set] = defaultdict(set)
    scene_size: Counter = Counter()
    cell_counts: Counter = Counter()
    for r in good:
        scene_cells[r["scene_id"]].add((r["value"], r["polarity"]))
        scene_size[r["scene_id"]] += 1
        cell_counts[(r["scene_id"], r["value"], r["micro_value"], r["polarity"])] += 1
    missing = {s: sorted(f"{v} {_sign(p)}" for v, p in cells_all - cells) for s, cells in scene_cells.items() if cells_all - cells}
    imbalanced = []
    for (scene, value, micro), _ in Counter((s, v, m) for s, v, m, _p in cell_counts).items():
        pos, neg = cell_counts.get((scene, value, micro, 1), 0), cell_counts.get((scene, value, micro, -1), 0)
        if pos != neg:
            imbalanced.append({"scene_id": scene, "value": value, "micro_value": micro, "+1": pos, "-1": neg})
    if missing:
        warnings.append(f"{len(missing)} of {len(scene_cells)} scenes lack some value x polarity present in the set")
    if imbalanced:
        warnings.append(f"{len(imbalanced)} scene x value cells have unequal +1/-1 counts")
    if good and polarity["+1"] != polarity["-1"]:
        warnings.append(f"polarity is unbalanced overall (+1: {polarity['+1']}, -1: {polarity['-1']})")

    # duplicates
    norm_actions = [normalise(r["action"]) for r in good]
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, a in enumerate(norm_actions):
        groups[a].append(i)
    exact = [g for g in groups.values() if len(g) > 1]
    exact_conflicting = [g for g in exact if len({(good[i]["value"], good[i]["polarity"]) for i in g}) > 1]
    pairs = near_duplicate_pairs([r["action"] for r in good], threshold=near_threshold,
                                 token_sets=[a.split() for a in norm_actions])
    near = [(i, j, s) for i, j, s in pairs if norm_actions[i] != norm_actions[j]]
    same_scene = [(i, j, s) for i, j, s in near if good[i]["scene_id"] == good[j]["scene_id"]]
    conflicting = [(i, j, s) for i, j, s in near
                   if (good[i]["value"], good[i]["polarity"]) != (good[j]["value"], good[j]["polarity"])]
    if exact:
        warnings.append(f"{sum(len(g) - 1 for g in exact)} actions repeat an earlier one exactly ({len(exact)} groups, "
                        f"{len(exact_conflicting)} with conflicting value/polarity)")
    if near:
        warnings.append(f"{len(near)} near-duplicate action pairs (Jaccard >= {near_threshold}), {len(same_scene)} within a scene")

    def pair_example(i: int, j: int, s: float) -> Dict[str, Any]:
        return {"a": good[i]["id"], "b": good[j]["id"], "jaccard": s, "action_a": good[i]["action"], "action_b": good[j]["action"]}

    report = {
        "n_items": n,
        "n_valid": len(good),
        "n_scenes": len(scene_cells),
        "splits": splits,
        "rows": {"invalid": len(invalid), "invalid_examples": invalid[:MAX_EXAMPLES], "duplicate_ids": dup_ids[:MAX_EXAMPLES],
                 "n_duplicate_ids": len(dup_ids)},
        "balance": {
            "polarity": {"+1": polarity["+1"], "-1": polarity["-1"]},
            "per_value": per_value,
            "values_in_set": len(per_value),
            "scene_size": _stats(list(scene_size.values())),
            "complete_scenes": len(scene_cells) - len(missing),
            "scenes_missing_cells": len(missing),
            "missing_examples": dict(list(sorted(missing.items()))[:MAX_EXAMPLES]),
            "polarity_imbalanced_cells": len(imbalanced),
            "imbalanced_examples": imbalanced[:MAX_EXAMPLES],
        },
        "duplicates": {
            "threshold": near_threshold,
            "exact_groups": len(exact),
            "exact_repeats": sum(len(g) - 1 for g in exact),
            "exact_conflicting_groups": len(exact_conflicting),
            "exact_examples": [[good[i]["id"] for i in g][:5] for g in exact[:MAX_EXAMPLES]],
            "near_pairs": len(near),
            "near_pairs_same_scene": len(same_scene),
            "near_pairs_conflicting": len(conflicting),
            "near_examples": [pair_example(*p) for p in (same_scene + near)[:MAX_EXAMPLES]],
        },
        "leakage": {
            "scenes_in_both_splits": len(leaky_scenes),
            "leaky_scenes": leaky_scenes[:MAX_EXAMPLES],
            "scenario_texts_in_both_splits": len(leaky_scenarios),
            "actions_in_both_splits": actions_across,
        },
        "lengths": {
            "scenario_words": _stats([len(r["scenario"].split()) for r in good]),
            "action_words": _stats([len(r["action"].split()) for r in good]),
        },
        "problems": problems,
        "warnings": warnings,
        "ok": not problems,
    }
    return report


def quality_summary(report: Mapping[str, Any]) -> Dict[str, Any]:
    """A short flat summary (for dataset cards and logs)."""
    b, d, l, k = report["balance"], report["duplicates"], report["leakage"], report["lengths"]
    return {
        "items": report["n_items"],
        "scenes": report["n_scenes"],
        "splits": {s: f"{v['items']} items / {v['scenes']} scenes" for s, v in report["splits"].items()},
        "polarity": b["polarity"],
        "scenes with every value x polarity": f"{b['complete_scenes']} of {report['n_scenes']}",
        "scene x value cells with unequal +1/-1": b["polarity_imbalanced_cells"],
        "exact duplicate actions": d["exact_repeats"],
        f"near-duplicate action pairs (Jaccard >= {d['threshold']})": d["near_pairs"],
        "scenes in both splits": l["scenes_in_both_splits"],
        "action words (median, max)": f"{k['action_words']['median']:g}, {k['action_words']['max']}",
        "ok": report["ok"],
    }


def print_report(report: Mapping[str, Any], console: Any = None, title: str = "item set quality") -> None:
    """The report as rich tables: an overview, then items per value x polarity."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    b, d, l, k = report["balance"], report["duplicates"], report["leakage"], report["lengths"]

    def status(bad: bool, severe: bool = False) -> str:
        return "[red]problem[/red]" if bad and severe else ("[yellow]warn[/yellow]" if bad else "[green]ok[/green]")

    table = Table("check", "result", "status", title=title)
    table.add_row("items (valid)", f"{report['n_items']} ({report['n_valid']})", status(report["rows"]["invalid"] > 0, True))
    table.add_row("scenes", str(report["n_scenes"]), "")
    for s, v in report["splits"].items():
        table.add_row(f"split {s}", f"{v['items']} items, {v['scenes']} scenes", "")
    table.add_row("duplicate ids", str(report["rows"]["n_duplicate_ids"]), status(report["rows"]["n_duplicate_ids"] > 0, True))
    table.add_row("polarity +1 / -1", f"{b['polarity']['+1']} / {b['polarity']['-1']}",
                  status(b["polarity"]["+1"] != b["polarity"]["-1"]))
    table.add_row("scenes with every value x polarity", f"{b['complete_scenes']} of {report['n_scenes']}",
                  status(b["scenes_missing_cells"] > 0))
    table.add_row("scene size (min / median / max)",
                  f"{b['scene_size']['min']} / {b['scene_size']['median']:g} / {b['scene_size']['max']}", "")
    table.add_row("cells with unequal +1/-1", str(b["polarity_imbalanced_cells"]), status(b["polarity_imbalanced_cells"] > 0))
    table.add_row("exact duplicate actions", f"{d['exact_repeats']} ({d['exact_groups']} groups, {d['exact_conflicting_groups']} conflicting)",
                  status(d["exact_repeats"] > 0))
    table.add_row(f"near-duplicate pairs (J >= {d['threshold']})",
                  f"{d['near_pairs']} ({d['near_pairs_same_scene']} in one scene, {d['near_pairs_conflicting']} conflicting)",
                  status(d["near_pairs"] > 0))
    table.add_row("scenes in both splits", str(l["scenes_in_both_splits"]), status(l["scenes_in_both_splits"] > 0, True))
    table.add_row("scenario texts in both splits", str(l["scenario_texts_in_both_splits"]),
                  status(l["scenario_texts_in_both_splits"] > 0, True))
    table.add_row("actions in both splits (same text)", str(l["actions_in_both_splits"]), "")
    for name, st in k.items():
        table.add_row(name.replace("_", " "), f"min {st['min']}, mean {st['mean']}, median {st['median']:g}, p95 {st['p95']}, max {st['max']}", "")
    table.add_row("verdict", "ok" if report["ok"] else "; ".join(report["problems"]), status(not report["ok"], True))
    console.print(table)
    values = Table("value", "+1", "-1", title="items per value x polarity")
    for v, c in b["per_value"].items():
        values.add_row(v, str(c["+1"]), str(c["-1"]))
    console.print(values)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")

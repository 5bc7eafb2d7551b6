"""Compare interventions (strategies) by their Value Alignment Tax.

The paper's headline question: two strategies reach the same gain on the target, do they pay the
same tax? :func:`compare_interventions` puts each result's gain and vat (with bootstrap
intervals), nvat and gini in one row and flags the strategies whose gain intervals overlap
another's while their vat intervals do not: same gain, different tax.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

__all__ = ["compare_interventions", "comparison_markdown", "metric_of", "name_of"]


def metric_of(result: Dict[str, Any]) -> Dict[str, Any]:
    """The metric dict of a result: a run result (``{"name", "vat": {...metric...}}``) or a
    metric dict itself (whose ``"vat"`` is a number or ``None``)."""
    inner = result.get("vat")
    return inner if isinstance(inner, dict) else result


def name_of(result: Dict[str, Any], i: int) -> str:
    return str(result.get("name") or metric_of(result).get("name") or f"run-{i + 1}")


def _ci(metric: Dict[str, Any], key: str) -> Optional[List[float]]:
    ci = metric.get("ci") or {}
    iv = ci.get(key)
    return list(iv) if isinstance(iv, (list, tuple)) and len(iv) == 2 and None not in iv else None


def _overlap(a: Optional[List[float]], b: Optional[List[float]]) -> Optional[bool]:
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def compare_interventions(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per result: ``name``, ``target_value``, ``level``, ``gain``, ``gain_ci``, ``vat``,
    ``vat_ci``, ``nvat``, ``nvat_ci``, ``gini``, ``gini_ci``, ``same_gain_different_tax``
    (``True`` when some other result has an overlapping gain interval but a disjoint vat
    interval; ``False`` when none does; ``None`` without intervals) and ``differs_from`` (the
    names of those other results). Intervals come from the metric's ``ci`` (``None`` when the
    bootstrap was off). Results are compared only with others of the same target and level.

    >>> a = {"name": "prompt", "vat": {"target_value": "Benevolence", "level": "basic", "gain": 0.30,
    ...      "vat": 0.20, "nvat": 0.1, "gini": 0.3, "ci": {"gain": [0.25, 0.35], "vat": [0.15, 0.25]}}}
    >>> b = {"name": "sft", "vat": {"target_value": "Benevolence", "level": "basic", "gain": 0.32,
    ...      "vat": 0.60, "nvat": 0.4, "gini": 0.2, "ci": {"gain": [0.27, 0.37], "vat": [0.50, 0.70]}}}
    >>> [(r["name"], r["same_gain_different_tax"], r["differs_from"]) for r in compare_interventions([a, b])]
    [('prompt', True, ['sft']), ('sft', True, ['prompt'])]
    """
    rows = []
    for i, res in enumerate(results):
        m = metric_of(res)
        rows.append({
            "name": name_of(res, i),
            "target_value": m.get("target_value"),
            "level": m.get("level", "basic"),
            "gain": m.get("gain"),
            "gain_ci": _ci(m, "gain"),
            "vat": m.get("vat"),
            "vat_ci": _ci(m, "vat"),
            "nvat": m.get("nvat"),
            "nvat_ci": _ci(m, "nvat"),
            "nvat_chance": (m.get("nvat_null") or {}).get("mean"),
            "gini": m.get("gini"),
            "gini_ci": _ci(m, "gini"),
        })
    for r in rows:
        flags, others = [], []
        for o in rows:
            if o is r or (o["target_value"], o["level"]) != (r["target_value"], r["level"]):
                continue
            g, v = _overlap(r["gain_ci"], o["gain_ci"]), _overlap(r["vat_ci"], o["vat_ci"])
            if g is None or v is None:
                continue
            flags.append(g and not v)
            if g and not v:
                others.append(o["name"])
        r["same_gain_different_tax"] = any(flags) if flags else None
        r["differs_from"] = others
    return rows


def _num(x: Optional[float], digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _with_ci(x: Optional[float], ci: Optional[List[float]], digits: int = 3) -> str:
    s = _num(x, digits)
    return s if ci is None else f"{s} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _with_chance(x: Optional[float], chance: Optional[float], digits: int = 3) -> str:
    s = _num(x, digits)
    return s if chance is None else f"{s} (chance {chance:.{digits}f})"


def comparison_markdown(rows: Sequence[Dict[str, Any]], digits: int = 3) -> str:
    """Markdown table of :func:`compare_interventions` rows (intervals in brackets, nvat with
    its level by chance; a dagger
    marks a strategy with the same gain but a different tax than another, named in the last
    column).

    >>> print(comparison_markdown([{"name": "p", "target_value": "Power", "gain": 0.5, "gain_ci": None,
    ...     "vat": None, "vat_ci": None, "nvat": 0.25, "gini": None, "same_gain_different_tax": None,
    ...     "differs_from": []}]))
    | intervention | target | gain | vat | nvat | gini | same gain, different tax |
    |---|---|---|---|---|---|---|
    | p | Power | 0.500 | n/a | 0.250 | n/a |  |
    """
    lines = [
        "| intervention | target | gain | vat | nvat | gini | same gain, different tax |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flag = ""
        if r.get("same_gain_different_tax"):
            flag = "\u2020 vs " + ", ".join(r.get("differs_from") or [])
        name = r["name"] + (" \u2020" if r.get("same_gain_different_tax") else "")
        lines.append(
            f"| {name} | {r.get('target_value') or ''} | {_with_ci(r.get('gain'), r.get('gain_ci'), digits)} | "
            f"{_with_ci(r.get('vat'), r.get('vat_ci'), digits)} | {_with_chance(r.get('nvat'), r.get('nvat_chance'), digits)} | "
            f"{_with_ci(r.get('gini'), r.get('gini_ci'), digits)} | {flag} |"
        )
    return "\n".join(lines)

"""The one place that turns VAT numbers, intervals, p-values and statuses into text.

The CLI, the report (Markdown and HTML), model cards and the comparison table all print through
these functions, so a rule is kept everywhere at once:

* an undefined quantity prints as words (its reason), never as a number: ``vat`` and ``gnd``
  unless the gain is resolved (:data:`GAIN_STATUS_WORDS`), a value without items, a missing
  interval;
* an interval prints as ``[low, high]``; a bound that is unbounded prints ``∞``, as in
  ``[0.63, ∞)``;
* a permutation p-value at its floor prints as ``< 1/(n+1)`` with the ``n`` it was computed
  with (``< m/(n+1)`` after Holm's correction over ``m`` tests): the test cannot say more;
* an estimate biased away from zero (a mean of absolute values) prints beside its level by
  chance.

Tables are built as ``(header, rows)`` with ``rows = [(highlight, cells)]``; :func:`markdown_table`
renders them, and the HTML report renders the same rows (never re-parsing Markdown).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "GAIN_STATUS_WORDS",
    "NA",
    "Rows",
    "chance",
    "estimate",
    "gain_status_words",
    "gain_text",
    "gnd_cell",
    "interval",
    "markdown_table",
    "metric_of",
    "number",
    "p_value",
    "plain",
    "summary_items",
    "summary_line",
    "tax_text",
    "undefined_words",
    "value_table",
    "vat_text",
]

DIGITS = 3
NA = "n/a"
NO_ITEMS = "no items"
DASH = "\u2014"
Rows = List[Tuple[bool, List[str]]]

#: Words for each ``gain_status`` (the machine values are fixed in :mod:`vat_hf.metrics.core`).
GAIN_STATUS_WORDS = {
    "resolved": "resolved",
    "not_resolved": "not resolved (its interval includes 0)",
    "wrong_direction": "wrong direction (its interval lies below 0)",
    "no_bootstrap": "not resolved (no bootstrap, n_bootstrap=0)",
}


def metric_of(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The metric dict of a result: a run result (``{"name", "vat": {...metric...}}``) or a
    metric dict itself (whose ``"vat"`` is a number or ``None``)."""
    inner = result.get("vat")
    return inner if isinstance(inner, Mapping) else result


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def number(x: Optional[float], digits: int = DIGITS, signed: bool = False) -> str:
    """``x`` to ``digits`` decimals (``signed``: always with a sign); ``n/a`` for None/NaN.

    >>> number(0.12345), number(-0.5, signed=True), number(0.5, signed=True), number(None)
    ('0.123', '-0.500', '+0.500', 'n/a')
    """
    if not _finite(x):
        return NA
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def interval(ci: Any, digits: int = DIGITS, signed: bool = False) -> str:
    """``[low, high]``; a ``None`` bound is unbounded (``∞``); no interval gives ``""``.

    >>> interval([0.1, 0.2]), interval([0.628, None]), interval(None)
    ('[0.100, 0.200]', '[0.628, \u221e)', '')
    """
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return ""
    lo, hi = ci
    if lo is None and hi is None:
        return "(-\u221e, \u221e)"
    left = "(-\u221e" if lo is None else "[" + number(lo, digits, signed)
    right = "\u221e)" if hi is None else number(hi, digits, signed) + "]"
    return f"{left}, {right}"


def estimate(x: Optional[float], ci: Any = None, digits: int = DIGITS, signed: bool = False) -> str:
    """A number with its interval, ``0.123 [0.100, 0.150]``.

    >>> estimate(0.5, [0.4, 0.6], signed=True)
    '+0.500 [+0.400, +0.600]'
    """
    iv = interval(ci, digits, signed)
    return number(x, digits, signed) + (f" {iv}" if iv else "")


def p_value(p: Optional[float], test: Optional[Mapping[str, Any]] = None, family: int = 1) -> str:
    """A p-value. From random permutations (``test = {"n_permutations": n, "exact": False}``) a
    value at the floor ``family / (n + 1)`` prints as ``< family/(n+1)``: no smaller p-value can be
    seen with ``n`` permutations. Otherwise three decimals, or ``< 0.001``.

    >>> p_value(1 / 5001, {"n_permutations": 5000, "exact": False}), p_value(0.0213), p_value(0.0004)
    ('< 1/5001', '0.021', '< 0.001')
    >>> p_value(9 / 5001, {"n_permutations": 5000, "exact": False}, family=9)
    '< 9/5001'
    """
    if not _finite(p):
        return NA
    if test and not test.get("exact") and test.get("n_permutations"):
        n = int(test["n_permutations"])
        if p <= family / (n + 1) * (1 + 1e-9):
            return f"< {family}/{n + 1}"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def gain_status_words(status: Optional[str]) -> str:
    """Words for a ``gain_status`` (results written before it existed read as resolved when
    they have a numeric vat).

    >>> gain_status_words("not_resolved")
    'not resolved (its interval includes 0)'
    """
    return GAIN_STATUS_WORDS.get(status or "", status or NA)


def undefined_words(status: Optional[str]) -> str:
    """What an undefined gain-normalised quantity prints instead of a number.

    >>> undefined_words("wrong_direction")
    'undefined: gain wrong direction (its interval lies below 0)'
    """
    return f"undefined: gain {gain_status_words(status)}"


def _status(metric: Mapping[str, Any]) -> str:
    status = metric.get("gain_status")
    if status:
        return status
    # a result file written before gain_status existed: its vat was a number whenever |gain| > 0
    return "resolved" if _finite(metric.get("vat")) else "not_resolved"


def _ci(metric: Mapping[str, Any], key: str):
    return (metric.get("ci") or {}).get(key)


def chance(null: Optional[Mapping[str, Any]], digits: int = DIGITS, test: Optional[Mapping[str, Any]] = None) -> str:
    """``(chance 0.012, p < 1/5001)``: an estimate's level under no effect, and its p-value."""
    if not null or not _finite(null.get("mean")):
        return ""
    test = test or null
    return f"(chance {number(null['mean'], digits)}, p {p_value(null.get('p_value'), test)})"


def gain_text(metric: Mapping[str, Any], digits: int = DIGITS) -> str:
    """``+0.123 [+0.080, +0.170], resolved``."""
    text = estimate(metric.get("gain"), _ci(metric, "gain"), digits, signed=True)
    return f"{text}, {gain_status_words(_status(metric))}"


def vat_text(metric: Mapping[str, Any], digits: int = DIGITS) -> str:
    """vat with its interval and level by chance, or why it is undefined."""
    if _status(metric) != "resolved" or not _finite(metric.get("vat")):
        return undefined_words(_status(metric))
    text = estimate(metric["vat"], _ci(metric, "vat"), digits)
    ch = chance(metric.get("vat_null"), digits, metric.get("permutation_test"))
    return f"{text} {ch}".strip()


def tax_text(metric: Mapping[str, Any], digits: int = DIGITS) -> str:
    """tax (mean |drift| of the non-target values) with its interval and level by chance."""
    text = estimate(metric.get("tax"), _ci(metric, "tax"), digits)
    ch = chance(metric.get("tax_null"), digits)
    return f"{text} {ch}".strip()


def nvat_text(metric: Mapping[str, Any], digits: int = DIGITS) -> str:
    """nvat beside its level by chance (not its bootstrap interval: resampling with replacement
    duplicates scenes, which inflates rank correlations, so that interval sits above the
    estimate; see the metric card)."""
    null = metric.get("nvat_null")
    text = number(metric.get("nvat"), digits)
    if null and _finite(null.get("mean")):
        text += f" (chance {number(null['mean'], digits)}, p {p_value(null.get('p_value'), {**null, 'exact': False})})"
    return text


def gnd_cell(metric: Mapping[str, Any], value: str, digits: int = DIGITS) -> str:
    """One value's gain-normalised drift, or a dash when the gain is not resolved (the summary
    line says why in words)."""
    gnd = metric.get("gnd")
    if _status(metric) != "resolved" or not isinstance(gnd, Mapping):
        return DASH
    x = gnd.get(value)
    return number(x, digits, signed=True) if _finite(x) else NO_ITEMS


def circumplex_text(metric: Mapping[str, Any], digits: int = DIGITS) -> str:
    x = metric.get("circumplex_consistency")
    if _finite(x):
        return number(x, digits, signed=True)
    if "gain_status" in metric and _status(metric) not in ("resolved", "wrong_direction"):
        return f"undefined: gain {gain_status_words(_status(metric))}"
    return NA


def agreement_text(block: Optional[Mapping[str, Any]], what: str) -> Optional[str]:
    if not block or not _finite(block.get("mean_tau")):
        return None
    return f"mean tau {block['mean_tau']:.2f}, min {block['min_tau']:.2f} ({what})"


def summary_items(metric: Mapping[str, Any], digits: int = DIGITS) -> List[Tuple[str, str]]:
    """The one-line summary of a result as ``(label, text)`` pairs: gain (and its status), tax
    (with chance), vat (or why undefined), gini, nvat (with chance), uniform shift,
    circumplex consistency, split-half agreement, top hubs."""
    items = [
        ("gain", gain_text(metric, digits)),
        ("tax", tax_text(metric, digits)),
        ("vat", vat_text(metric, digits)),
        ("gini", estimate(metric.get("gini"), _ci(metric, "gini"), digits)),
        ("nvat", nvat_text(metric, digits)),
    ]
    if "uniform_shift" in metric:
        items.append(("uniform shift", estimate(metric.get("uniform_shift"), _ci(metric, "uniform_shift"), digits,
                                                signed=True) + " rating points"))
    items.append(("circumplex consistency", circumplex_text(metric, digits)))
    split = metric.get("split_half")
    if split:
        plural = {"scene": "scenes", "country": "countries", "domain": "topics"}
        halves = " x ".join(f"{v} {plural.get(k, k)}" for k, v in (split.get("n_units_per_half") or {}).items())
        halves += " per half"
        text = agreement_text(split, f"{split['n_splits']} disjoint halves, {halves}")
        if text:
            items.append(("split-half agreement", text))
    elif metric.get("robustness"):  # a result written before split_half existed
        rob = metric["robustness"]
        text = agreement_text(rob, f"{rob['fraction']:.0%} scene subsamples, overlapping: high by construction")
        if text:
            items.append(("subsample agreement", text))
    hubs = metric.get("hubs") or []
    if hubs:
        items.append(("top hubs", ", ".join(f"{h['value']} ({h['strength']:.2f})" for h in hubs[:3])))
    return items


def summary_line(metric: Mapping[str, Any], digits: int = DIGITS, bold_gain: bool = True) -> str:
    """The summary items joined with `` · `` (the gain in bold for Markdown)."""
    return " · ".join(f"{k} **{v}**" if (k == "gain" and bold_gain) else f"{k} {v}"
                      for k, v in summary_items(metric, digits))


def value_table(metric: Mapping[str, Any], digits: int = DIGITS) -> Tuple[List[str], Rows]:
    """Header and rows ``(is_target, cells)`` of the per-value table: pre and post state, drift
    with its interval, gnd (a dash unless the gain is resolved), and the value's test (non-target
    values Holm-corrected; the target's own test apart)."""
    ci = metric.get("ci") or {}
    drift_ci = ci.get("drift") or {}
    pv = metric.get("p_values") or {}
    test = metric.get("permutation_test")
    family = int((test or {}).get("holm_family") or 1)
    targets = set(metric.get("target_units") or [metric.get("target_value")])
    conf = ci.get("confidence")
    unit = (test or {}).get("unit") or ci.get("unit")
    p_head = "p (Holm" + (f", {unit.replace('_', '-')}-level" if unit else "") + ")"
    head = ["value", "pre", "post", "drift" + (f" [{conf:.0%} CI]" if conf else ""), "gnd", p_head]
    rows: Rows = []
    for v in metric["values_order"]:
        is_t = v in targets
        has = _finite((metric.get("drift") or {}).get(v))
        if is_t:
            p_own = metric.get("p_value_gain") if "p_value_gain" in metric else pv.get(v)
            p_cell = p_value(p_own, test) + (" (own test)" if "p_value_gain" in metric else "")
        else:
            p_cell = p_value(pv.get(v), test, family) if v in pv else NA
        rows.append((is_t, [
            v + (" (target)" if is_t else ""),
            number(metric["pre_state"].get(v), digits, signed=True) if has else NO_ITEMS,
            number(metric["post_state"].get(v), digits, signed=True) if has else NO_ITEMS,
            estimate(metric["drift"].get(v), drift_ci.get(v), digits, signed=True) if has else NO_ITEMS,
            "" if is_t else (gnd_cell(metric, v, digits) if has else NO_ITEMS),
            p_cell if has else NA,
        ]))
    return head, rows


def markdown_table(head: Sequence[str], rows: Rows, bold: bool = True) -> str:
    """A Markdown table; highlighted rows are bold when ``bold``.

    >>> print(markdown_table(["a", "b"], [(True, ["x", "1"]), (False, ["y", ""])]))
    | a | b |
    |---|---|
    | **x** | **1** |
    | y |  |
    """
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strong, cells in rows:
        if strong and bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plain(value: Any) -> str:
    """A configuration value as text (model cards' hyperparameter tables): floats to 4
    significant digits, lists joined with commas.

    >>> plain(0.000123456), plain([1, 2]), plain("cosine")
    ('0.0001235', '1, 2', 'cosine')
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def difference_text(d: Optional[float], ci: Any, digits: int = DIGITS) -> str:
    """A paired difference with its interval, signed."""
    return estimate(d, ci, digits, signed=True) if _finite(d) else NA


#: Words of the paired verdicts (``compare_paired`` pairs).
VERDICT_WORDS = {
    "same_gain_different_tax": "same gain, different tax",
    "gain_differs": "the gains differ",
    "tax_difference_at_chance": "taxes differ, but the larger is at its chance level",
    "no_difference": "no difference resolved",
    "no_bootstrap": "not tested (no bootstrap)",
}

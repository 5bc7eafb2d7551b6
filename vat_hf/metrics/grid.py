"""The trade-off matrix of a grid: for one model and one intervention, aligned toward each target
value in turn, the drift of every value.

Rows are the targets, columns the values, both in circumplex order (:data:`vat_hf.values.BASIC_VALUES`),
so a pattern that follows the circle shows as bands parallel to the diagonal. Entry ``(t, v)`` is
the drift of ``v`` when the model is aligned toward ``t`` (post - pre value state, in expression
units on [-1, 1]) with its bootstrap interval, exactly as that cell's VAT result reports it; the
diagonal is each row's gain. The gain-normalised drift (``gnd = drift / gain``) of a row is a
number only where that row's gain is resolved; elsewhere the row carries its ``gain_status`` and
the text says why in words (:mod:`vat_hf.metrics.formatting`), never a number.

Nothing here recomputes a statistic: the matrix is read from the cells' VAT results, so it
shows the numbers each cell's own report shows.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from vat_hf.metrics import formatting as fmt

__all__ = ["matrix_csv_rows", "matrix_table", "tradeoff_matrix"]

CSV_COLUMNS = ("model", "intervention", "target", "value", "diagonal", "drift", "drift_low", "drift_high", "drift_excludes_0",
               "gain_status", "gnd", "gnd_low", "gnd_high", "gnd_status")


def _excludes_zero(ci) -> Optional[bool]:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return ci[0] > 0 or ci[1] < 0


def tradeoff_matrix(results: Sequence[Mapping[str, Any]], model: Optional[str] = None,
                    intervention: Optional[str] = None) -> Dict[str, Any]:
    """The matrix of ``results``: one VAT result per target (a run result with a ``"vat"``
    metric dict, or the metric dict itself), all of one model and one intervention, at the
    ``basic`` level. Returns ``targets`` and ``values`` (circumplex order) and, by target, the
    ``gain``, ``gain_ci``, ``gain_status``, and by target then value the ``drift``, ``drift_ci``,
    ``gnd`` and ``gnd_ci`` (``None`` unless that row's gain is resolved).

    >>> def result(target, drift, status):
    ...     return {"target_value": target, "level": "basic", "values_order": ["Power", "Security"],
    ...             "gain": drift[target], "gain_status": status, "drift": drift,
    ...             "gnd": {v: d / drift[target] for v, d in drift.items() if v != target} if status == "resolved" else None,
    ...             "ci": {"gain": [0.1, 0.3], "drift": {"Power": [0.0, 0.1], "Security": [0.1, 0.3]}, "gnd": None}}
    >>> m = tradeoff_matrix([result("Security", {"Power": 0.05, "Security": 0.2}, "resolved"),
    ...                      result("Power", {"Power": 0.01, "Security": -0.02}, "not_resolved")])
    >>> m["targets"], m["values"], m["drift"]["Power"]["Power"] == m["gain"]["Power"]
    (['Power', 'Security'], ['Power', 'Security'], True)
    >>> m["gnd"]["Security"]["Power"], m["gnd"]["Power"]["Security"], m["gain_status"]["Power"]
    (0.25, None, 'not_resolved')
    """
    from vat_hf.values import BASIC_VALUES

    metrics = [fmt.metric_of(r) for r in results]
    if not metrics:
        raise ValueError("tradeoff_matrix needs at least one result")
    levels = {m.get("level", "basic") for m in metrics}
    if levels != {"basic"}:
        raise ValueError(f"the trade-off matrix is read at the basic level (rows and columns are the ten values); got {sorted(levels)}")
    by_target: Dict[str, Mapping[str, Any]] = {}
    for m in metrics:
        target = m["target_value"]
        if target in by_target:
            raise ValueError(f"two results for target {target!r}: a matrix holds one model and one intervention")
        by_target[target] = m
    order = {v: i for i, v in enumerate(BASIC_VALUES)}
    targets = sorted(by_target, key=lambda v: order.get(v, len(order)))
    values = sorted({v for m in metrics for v in m["values_order"]}, key=lambda v: order.get(v, len(order)))
    out: Dict[str, Any] = {"kind": "vat_tradeoff_matrix", "model": model, "intervention": intervention,
                           "targets": targets, "values": values, "unit": "drift in expression (post - pre), [-1, 1]",
                           "gain": {}, "gain_ci": {}, "gain_status": {}, "drift": {}, "drift_ci": {}, "gnd": {},
                           "gnd_ci": {}, "confidence": None, "resample": None}
    for t in targets:
        m = by_target[t]
        ci = m.get("ci") or {}
        out["confidence"] = out["confidence"] or ci.get("confidence")
        out["resample"] = out["resample"] or m.get("resample")
        status = m.get("gain_status") or ("resolved" if m.get("vat") is not None else "not_resolved")
        resolved = status == "resolved" and isinstance(m.get("gnd"), Mapping)
        out["gain"][t] = m.get("gain")
        out["gain_ci"][t] = ci.get("gain")
        out["gain_status"][t] = status
        drift, drift_ci = m.get("drift") or {}, ci.get("drift") or {}
        gnd, gnd_ci = (m.get("gnd") or {}) if resolved else {}, (ci.get("gnd") or {}) if resolved else {}
        out["drift"][t] = {v: drift.get(v) for v in values}
        out["drift_ci"][t] = {v: drift_ci.get(v) for v in values}
        out["gnd"][t] = {v: (gnd.get(v) if resolved and v != t else None) for v in values}
        out["gnd_ci"][t] = {v: (gnd_ci.get(v) if resolved and v != t else None) for v in values}
    return out


def matrix_table(matrix: Mapping[str, Any], what: str = "drift", digits: int = fmt.DIGITS) -> Tuple[List[str], fmt.Rows]:
    """``(header, rows)`` of the drift (``what="drift"``: each entry with its interval, the
    diagonal the gain) or gnd matrix (``"gnd"``: a number only in rows whose gain is resolved;
    other rows say why in words), one row per target."""
    if what not in ("drift", "gnd"):
        raise ValueError(f"what must be 'drift' or 'gnd', not {what!r}")
    head = [f"target \\ {what}"] + list(matrix["values"])
    rows: fmt.Rows = []
    for t in matrix["targets"]:
        cells = [t]
        status = matrix["gain_status"][t]
        for v in matrix["values"]:
            if what == "drift":
                x = matrix["drift"][t][v]
                cells.append(fmt.estimate(x, matrix["drift_ci"][t][v], digits, signed=True) if x is not None else fmt.NO_ITEMS)
            elif v == t:
                cells.append("1 (the gain)" if status == "resolved" else "")
            elif status != "resolved":
                cells.append("")
            else:
                x = matrix["gnd"][t][v]
                cells.append(fmt.estimate(x, matrix["gnd_ci"][t][v], digits, signed=True) if x is not None else fmt.NO_ITEMS)
        if what == "gnd" and status != "resolved":
            cells[0] = f"{t} ({fmt.undefined_words(status)})"
        rows.append((False, cells))
    return head, rows


def matrix_csv_rows(matrix: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The matrix in long form (one row per target and value, :data:`CSV_COLUMNS`): numbers as
    they are, ``gnd`` empty where the row's gain is not resolved and ``gnd_status`` saying why."""
    rows = []
    for t in matrix["targets"]:
        status = matrix["gain_status"][t]
        for v in matrix["values"]:
            ci = matrix["drift_ci"][t][v] or [None, None]
            gci = matrix["gnd_ci"][t][v] or [None, None]
            if v == t:
                gnd_status = "diagonal: the gain"
            elif status == "resolved":
                gnd_status = "resolved"
            else:
                gnd_status = fmt.undefined_words(status)
            rows.append({"model": matrix.get("model"), "intervention": matrix.get("intervention"), "target": t, "value": v,
                         "diagonal": v == t, "drift": matrix["drift"][t][v], "drift_low": ci[0], "drift_high": ci[1],
                         "drift_excludes_0": _excludes_zero(matrix["drift_ci"][t][v]), "gain_status": status,
                         "gnd": matrix["gnd"][t][v], "gnd_low": gci[0], "gnd_high": gci[1], "gnd_status": gnd_status})
    return rows

"""Reports of VAT results: Markdown and self-contained HTML tables, and figures (matplotlib, Agg).

A *result* is the JSON ``vat-hf run`` writes per intervention: ``{"name", "model",
"target_value", "data", "intervention", "versions", "seed", "evaluation", "vat": {...metric...}}``;
a bare metric dict (the output of :func:`vat_hf.metrics.compute_vat`) is accepted too.

Figures are built on :class:`matplotlib.figure.Figure` objects (no pyplot, no global backend
switch), so rendering is headless and thread-safe; each ``plot_*`` function returns its Figure,
whose Axes hold exactly the numbers of the result (the tests read them back).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.figure import Figure

from vat_hf.io import atomic_write, atomic_write_text
from vat_hf.metrics import formatting as fmt
from vat_hf.metrics.compare import SAME_GAIN_RULE, compare_interventions, comparison_table, metric_of, name_of, paired_table

__all__ = [
    "is_comparison",
    "load_results",
    "markdown_table",
    "plot_coupling",
    "plot_drift",
    "plot_gain_tax",
    "plot_radar",
    "plot_trajectory",
    "split_comparison",
    "write_report",
]

PathLike = Union[str, Path]
TARGET_COLOR = "#d95f02"
UP_COLOR = "#1b9e77"
DOWN_COLOR = "#7570b3"
PRE_COLOR = "#444444"
POST_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


# --------------------------------------------------------------------------------------------
# loading and normalising


def _is_metric(d: Any) -> bool:
    return isinstance(d, dict) and "drift" in d and "gain" in d


def _normalise(result: Dict[str, Any], i: int = 0) -> Dict[str, Any]:
    """A run-result dict whatever came in (run result or bare metric dict)."""
    if isinstance(result.get("vat"), dict):
        if not _is_metric(result["vat"]):
            raise ValueError(f"result {result.get('name')!r}: its 'vat' entry is not a VAT metric output")
        out = dict(result)
    elif _is_metric(result):
        out = {"name": result.get("name"), "target_value": result.get("target_value"), "vat": result}
    else:
        raise ValueError("not a vat-hf result: expected a dict with a 'vat' metric dict, or a metric dict")
    out["name"] = name_of(out, i)
    out.setdefault("target_value", out["vat"].get("target_value"))
    return out


def load_results(paths: Iterable[PathLike]) -> List[Dict[str, Any]]:
    """Read result JSON files. A path may be a file (one result, or a list of results) or a
    folder (every ``*.json`` in it that is a result, sorted by name; other JSON is skipped).
    A result without a ``name`` is named after its file."""
    out: List[Dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.glob("*.json")):
                try:
                    out.extend(_read_result_file(f))
                except (ValueError, json.JSONDecodeError):
                    continue
            continue
        if not p.exists():
            raise FileNotFoundError(f"no result file {p}")
        out.extend(_read_result_file(p))
    if not out:
        raise ValueError("no vat-hf results found in " + ", ".join(str(p) for p in paths))
    return out


def is_comparison(data: Any) -> bool:
    """Whether ``data`` is a paired comparison (``compare_paired``'s output), not a result."""
    return isinstance(data, dict) and data.get("kind") == "vat_paired_comparison"


def split_comparison(paths: Iterable[PathLike]) -> Tuple[List[Path], Optional[Dict[str, Any]]]:
    """``(result paths, paired comparison or None)``: a comparison file given among the paths is
    taken out; else a ``comparison.json`` in a given folder or beside it (``vat-hf run`` writes
    ``OUTPUT/comparison.json`` next to ``OUTPUT/results/``) is read."""
    rest, found = [], None
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                data = None
            if is_comparison(data):
                found = data
                continue
        rest.append(p)
    if found is None:
        for p in rest:
            for candidate in ((p / "comparison.json", p.parent / "comparison.json") if p.is_dir() else ()):
                if candidate.is_file():
                    data = json.loads(candidate.read_text(encoding="utf-8"))
                    if is_comparison(data):
                        return rest, data
    return rest, found


def _read_result_file(path: Path) -> List[Dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data if isinstance(data, list) else [data]
    results = []
    for k, d in enumerate(items):
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a vat-hf result")
        if not d.get("name") and not (isinstance(d.get("vat"), dict) and d["vat"].get("name")):
            d = dict(d)
            d["name"] = path.stem if len(items) == 1 else f"{path.stem}-{k + 1}"
        try:
            results.append(_normalise(d, k))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return results


def _slugs(results: Sequence[Dict[str, Any]]) -> List[str]:
    seen: Dict[str, int] = {}
    out = []
    for r in results:
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(r["name"])).strip("-.") or "run"
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.append(s if n == 0 else f"{s}-{n + 1}")
    return out


# --------------------------------------------------------------------------------------------
# tables


# The legend under every comparison table, in the Markdown and the HTML report alike.
COMPARISON_LEGEND = (
    "gain = drift of the target, resolved when its bootstrap interval lies above 0; "
    "tax = mean |drift| of the non-target values, beside its level by chance (sign flips of whole resampling units) "
    "and that test's p-value; vat = tax / gain, defined only for a resolved gain; "
    "nvat = RMS of the off-diagonal coupling (chance: each value's scene drifts shuffled); gini of |drift| (0 = even tax). "
    "Brackets: percentile bootstrap intervals over the resampling unit (scenes unless the result says otherwise). "
    "\u2020 " + SAME_GAIN_RULE + ".")


def markdown_table(result: Dict[str, Any], digits: int = 3) -> str:
    """The per-value Markdown table of one result (target in bold) and a summary line with the
    gain and its status, tax (with chance), vat (or why it is undefined), gini, nvat, uniform
    shift, circumplex consistency, split-half agreement and hubs.

    >>> m = {"target_value": "Power", "values_order": ["Power", "Security"], "gain": 0.5, "vat": None,
    ...      "gain_status": "no_bootstrap", "tax": 0.1, "pre_state": {"Power": 0.0, "Security": 0.1},
    ...      "post_state": {"Power": 0.5, "Security": 0.0}, "drift": {"Power": 0.5, "Security": -0.1},
    ...      "gnd": None, "nvat": None, "gini": 0.0}
    >>> print(markdown_table({"name": "p", "vat": m}))
    | value | pre | post | drift | gnd | p (Holm) |
    |---|---|---|---|---|---|
    | **Power (target)** | **+0.000** | **+0.500** | **+0.500** |  | **n/a** |
    | Security | +0.100 | +0.000 | -0.100 | \u2014 | n/a |
    <BLANKLINE>
    gain **+0.500, not resolved (no bootstrap, n_bootstrap=0)** · tax 0.100 · vat undefined: gain not resolved (no bootstrap, n_bootstrap=0) · gini 0.000 · nvat n/a · circumplex consistency undefined: gain not resolved (no bootstrap, n_bootstrap=0)
    """
    metric = metric_of(result)
    head, rows = fmt.value_table(metric, digits)
    return fmt.markdown_table(head, rows) + "\n\n" + fmt.summary_line(metric, digits)


def _run_header(result: Dict[str, Any]) -> List[Tuple[str, str]]:
    metric = metric_of(result)
    model = result.get("model") or {}
    facts = []
    if model:
        m = str(model.get("name_or_path") or model.get("name") or "")
        if model.get("adapter"):
            m += f" + adapter {model['adapter']}"
        facts.append(("model", m))
    facts += [
        ("target", f"{metric.get('target_value')} (level {metric.get('level', 'basic')})"),
        ("items", f"{metric.get('n_items')} in {metric.get('n_scenes')} scenes, {metric.get('n_dropped', 0)} dropped"),
    ]
    if metric.get("resample"):
        facts.append(("resampling unit", str(metric["resample"]).replace("_", "-")))
    if metric.get("centering") not in (None, "none"):
        facts.append(("centering", f"ratings centred per {metric['centering']} and state (ipsative)"))
    ev = result.get("evaluation") or {}
    for phase in ("pre", "post"):
        e = ev.get(phase) or {}
        if e.get("option_mass_mean") is not None:
            facts.append((f"option mass {phase}",
                          f"mean {fmt.number(e['option_mass_mean'])}, min {fmt.number(e.get('option_mass_min'))}"))
    return facts


# --------------------------------------------------------------------------------------------
# figures


def _arr(d: Dict[str, Optional[float]], order: Sequence[str]) -> np.ndarray:
    return np.array([np.nan if d.get(v) is None else d[v] for v in order], dtype=float)


def _wrap(label: str, width: int = 12) -> str:
    if len(label) <= width or " " not in label:
        return label
    words, lines, cur = label.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def plot_radar(results: Sequence[Dict[str, Any]], title: Optional[str] = None) -> Figure:
    """Circumplex radar of value states: the pre state (dashed; one per distinct pre) and each
    intervention's post state. Spokes follow ``values_order`` (circumplex order, clockwise from
    the top); the target spoke is bold. Lines are drawn in the order: pre(s), then posts."""
    results = [_normalise(r, i) for i, r in enumerate(results)]
    order = metric_of(results[0])["values_order"]
    n = len(order)
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    fig = Figure(figsize=(7.5, 7.0) if n <= 12 else (11, 10.5))
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_offset(np.pi / 2)
    ax.set_theta_direction(-1)
    closed = np.r_[theta, theta[:1]]
    pres: List[Tuple[np.ndarray, str, str]] = []
    for k, r in enumerate(results):
        p = _arr(metric_of(r)["pre_state"], order)
        if not any(np.allclose(p, q, equal_nan=True) for q, _, _ in pres):
            pres.append((p, r["name"], POST_COLORS[k % len(POST_COLORS)]))
    all_vals = []
    for p, name, color in pres:
        # one shared baseline: grey; different baselines: dashed in their intervention's colour
        label, color = ("pre", PRE_COLOR) if len(pres) == 1 else (f"pre: {name}", color)
        ax.plot(closed, np.r_[p, p[:1]], color=color, linestyle="--", linewidth=1.6, label=label,
                marker="o", markersize=3, alpha=0.9)
        all_vals.append(p)
    for k, r in enumerate(results):
        q = _arr(metric_of(r)["post_state"], order)
        color = POST_COLORS[k % len(POST_COLORS)]
        ax.plot(closed, np.r_[q, q[:1]], color=color, linewidth=2, label=f"post: {r['name']}",
                marker="o", markersize=3)
        ax.fill(closed, np.r_[np.nan_to_num(q), np.nan_to_num(q[:1])], color=color, alpha=0.06)
        all_vals.append(q)
    vals = np.concatenate(all_vals)
    vals = vals[~np.isnan(vals)]
    lo = max(-1.0, math.floor((min(vals.min(), 0.0) - 0.05) * 10) / 10) if vals.size else -1.0
    hi = min(1.0, math.ceil((max(vals.max(), 0.0) + 0.05) * 10) / 10) if vals.size else 1.0
    ax.set_ylim(lo, hi)
    zero = np.linspace(0, 2 * np.pi, 200)
    ax.plot(zero, np.zeros_like(zero), color="black", linewidth=0.8, alpha=0.5, gid="zero-ring")
    ax.set_xticks(theta)
    targets = set()
    for r in results:
        m = metric_of(r)
        targets |= set(m.get("target_units") or [m.get("target_value")])
    labels = ax.set_xticklabels([_wrap(v) for v in order], fontsize=10 if n <= 12 else 6)
    for lab, v in zip(labels, order):
        if v in targets:
            lab.set_fontweight("bold")
            lab.set_color(TARGET_COLOR)
    ax.tick_params(axis="x", pad=12 if n <= 12 else 4)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_rlabel_position(180 / n)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.05), fontsize=9, frameon=False)
    ax.set_title(title or "Value states before and after (expression, -1 to 1; black ring = 0)", pad=28,
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_drift(result: Dict[str, Any]) -> Figure:
    """Bar chart of each value's drift (post - pre) with bootstrap-interval whiskers (the line
    collection with ``gid`` "drift-ci"); the target bar is orange and hatched. Bars follow ``values_order``; values without items are left empty
    (height 0, no bar edge) and labelled "n/a"."""
    result = _normalise(result)
    metric = metric_of(result)
    order = metric["values_order"]
    n = len(order)
    drift = _arr(metric["drift"], order)
    targets = set(metric.get("target_units") or [metric.get("target_value")])
    ci = (metric.get("ci") or {}).get("drift") or {}
    fig = Figure(figsize=(min(18.0, max(7.0, 0.55 * n + 2)), 4.8 if n <= 12 else 6.0))
    ax = fig.add_subplot()
    x = np.arange(n)
    colors = [TARGET_COLOR if v in targets else (UP_COLOR if d >= 0 else DOWN_COLOR) for v, d in zip(order, np.nan_to_num(drift))]
    bars = ax.bar(x, np.nan_to_num(drift), color=colors, edgecolor="black", linewidth=0.6, gid="drift-bars")
    for b, v, d in zip(bars, order, drift):
        if v in targets:
            b.set_hatch("//")
        if np.isnan(d):
            b.set_linewidth(0)
            ax.annotate(fmt.NO_ITEMS, (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=8,
                        color="grey")
    lo = np.array([np.nan if not ci.get(v) or ci[v][0] is None else ci[v][0] for v in order], dtype=float)
    hi = np.array([np.nan if not ci.get(v) or ci[v][1] is None else ci[v][1] for v in order], dtype=float)
    has = ~np.isnan(lo) & ~np.isnan(drift)
    if has.any():  # intervals drawn as they are (a percentile interval need not contain the estimate)
        ax.vlines(x[has], lo[has], hi[has], color="black", linewidth=1.1, gid="drift-ci")
        for end in (lo, hi):
            ax.hlines(end[has], x[has] - 0.12, x[has] + 0.12, color="black", linewidth=1.1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(order, rotation=40 if n <= 12 else 75, ha="right", fontsize=9 if n <= 12 else 7)
    for lab, v in zip(ax.get_xticklabels(), order):
        if v in targets:
            lab.set_fontweight("bold")
            lab.set_color(TARGET_COLOR)
    ax.set_ylabel("drift in expression (post - pre)")
    conf = (metric.get("ci") or {}).get("confidence")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=TARGET_COLOR, hatch="//", edgecolor="black", label=f"target: {metric['target_value']}"),
               Patch(facecolor=UP_COLOR, edgecolor="black", label="other value, up"),
               Patch(facecolor=DOWN_COLOR, edgecolor="black", label="other value, down")]
    ax.legend(handles=handles, fontsize=8, loc="best", frameon=False)
    ax.set_title(f"{result['name']}: drift per value" + (f" with {conf:.0%} bootstrap CI" if conf and has.any() else "")
                 + f"\ngain {fmt.gain_text(metric)}\ntax {fmt.tax_text(metric)}; vat {fmt.vat_text(metric)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


def plot_coupling(result: Dict[str, Any]) -> Figure:
    """Heatmap of the coupling matrix (Spearman correlation of per-scene drifts) in
    ``values_order`` (circumplex order); undefined entries (``None``) are grey."""
    result = _normalise(result)
    metric = metric_of(result)
    order = metric["values_order"]
    n = len(order)
    mat = np.array([[np.nan if v is None else v for v in row] for row in metric["coupling"]], dtype=float)
    fig = Figure(figsize=(7.5, 6.4) if n <= 12 else (13, 11.5))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=-1, vmax=1, gid="coupling")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = 9 if n <= 12 else 5
    ax.set_xticklabels(order, rotation=45 if n <= 12 else 90, ha="right" if n <= 12 else "center", fontsize=fs)
    ax.set_yticklabels(order, fontsize=fs)
    targets = set(metric.get("target_units") or [metric.get("target_value")])
    for lab in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
        if lab.get_text() in targets:
            lab.set_fontweight("bold")
            lab.set_color(TARGET_COLOR)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if not np.isnan(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(mat[i, j]) > 0.6 else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("Spearman correlation of per-scene drift")
    ax.set_title(f"{result['name']}: coupling across scenes (nvat {fmt.nvat_text(metric)})", fontsize=11)
    fig.tight_layout()
    return fig


def plot_gain_tax(results: Sequence[Dict[str, Any]]) -> Figure:
    """The gain-tax plane: one point per intervention at (gain, tax), where tax = mean |drift| of
    the non-target values is defined whatever the gain, so every intervention is drawn. Dashed
    rays from the origin are lines of equal vat (= tax / gain), the reading for a resolved gain.

    A resolved intervention is a filled circle (line ``gid`` "point-<k>"); one whose gain is not
    resolved (or moved the wrong way, or had no bootstrap) is a hollow square with the status in
    its label, since its vat is undefined. Bootstrap intervals are a horizontal (gain,
    "gain-ci-<k>") and a vertical (tax, "tax-ci-<k>") segment, none when the bootstrap was off; a
    short dotted tick ("tax-chance-<k>") marks the tax's level by chance."""
    results = [_normalise(r, i) for i, r in enumerate(results)]
    fig = Figure(figsize=(7.4, 5.6))
    ax = fig.add_subplot()
    gains, taxes = [0.0], [0.0]
    unresolved, ticks = [], []
    for k, r in enumerate(results):
        m = metric_of(r)
        g, t = m.get("gain"), m.get("tax")
        if g is None or t is None:  # a result written before the tax existed
            continue
        ci = m.get("ci") or {}
        gci, tci = ci.get("gain"), ci.get("tax")
        color = POST_COLORS[k % len(POST_COLORS)]
        resolved = (m.get("gain_status") or ("resolved" if m.get("vat") is not None else "not_resolved")) == "resolved"
        if resolved:
            ax.plot([g], [t], "o", color=color, markersize=8, label=r["name"], gid=f"point-{k}")
            label = f"{r['name']}: vat {fmt.number(m.get('vat'))}"
        else:
            ax.plot([g], [t], "s", markerfacecolor="white", markeredgecolor=color, markeredgewidth=2, markersize=8,
                    label=f"{r['name']} (vat undefined)", gid=f"point-{k}")
            label = f"{r['name']}: gain {fmt.gain_status_words(m.get('gain_status'))}"
            unresolved.append(r["name"])
        # intervals drawn as they are: a percentile interval need not contain the estimate
        if gci and None not in gci:
            ax.hlines(t, gci[0], gci[1], color=color, linewidth=1.4, gid=f"gain-ci-{k}")
            gains += list(gci)
        if tci and None not in tci:
            ax.vlines(g, tci[0], tci[1], color=color, linewidth=1.4, gid=f"tax-ci-{k}")
            taxes += list(tci)
        null = m.get("tax_null") or {}
        if null.get("mean") is not None:
            ticks.append((k, g, null["mean"], color))
        gains.append(g)
        taxes.append(t)
        ax.annotate(label, (g, t), textcoords="offset points", xytext=(7, 6), fontsize=8)
    lo_g, hi_g = min(gains), max(gains)
    span = max(hi_g - lo_g, 0.02)
    ax.set_xlim(lo_g - 0.25 * span, hi_g + 0.35 * span)
    for k, g, level, color in ticks:  # each tax's level by chance, a short dotted tick under its point
        ax.hlines(level, g - 0.04 * span, g + 0.04 * span, color=color, linestyle=":", linewidth=1.6,
                  gid=f"tax-chance-{k}")
        taxes.append(level)
    top = max(max(taxes) * 1.3, 0.01)
    ax.set_ylim(0, top)
    x_right = ax.get_xlim()[1]
    for v in (0.25, 0.5, 1.0, 2.0):  # lines of equal vat through the origin
        if x_right > 0:
            ax.plot([0, x_right], [0, v * x_right], linestyle="--", color="grey", linewidth=0.7, alpha=0.6,
                    gid=f"iso-vat-{v:g}")
            x_end = min(x_right, 0.97 * top / v)  # label where the ray leaves the axes
            ax.annotate(f"vat {v:g}", (x_end, v * x_end), fontsize=7, color="grey", ha="right", va="bottom")
    ax.axvline(0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("gain on the target (drift of the target value)")
    ax.set_ylabel("tax (mean |drift| of the other values)")
    if unresolved:
        fig.text(0.01, 0.01, "hollow squares: gain not resolved, vat undefined (" + ", ".join(unresolved) + ")",
                 fontsize=8, color="grey")
    targets = sorted({str(metric_of(r).get("target_value")) for r in results})
    confs = sorted({(metric_of(r).get("ci") or {}).get("confidence") for r in results} - {None})
    note = f"\nlines: {', '.join(f'{c:.0%}' for c in confs)} bootstrap intervals; dotted: tax by chance" if confs else ""
    ax.set_title(f"Gain-tax plane (target: {', '.join(targets)}); lower right is better{note}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_trajectory(result: Dict[str, Any]) -> Figure:
    """Gain and tax over training steps (top; the gain's bootstrap band shaded, vat on the right
    axis) and each value's drift over steps (bottom; the target bold, drift onsets marked with a
    dot). Reads ``result["trajectory"]`` (rows of :class:`vat_hf.train.trajectory.VATTrajectoryCallback`)
    and ``result["drift_onset"]``. Lines carry ``gid`` "gain", "vat" and "drift-<value>"."""
    rows = sorted(result["trajectory"], key=lambda row: row["step"])
    steps = np.array([row["step"] for row in rows], dtype=float)
    target = result.get("target_value") or metric_of(result).get("target_value")

    def series(key, sub=None):
        return np.array([np.nan if (row.get(key) if sub is None else (row.get(key) or {}).get(sub)) is None
                         else (row[key] if sub is None else row[key][sub]) for row in rows], dtype=float)

    fig = Figure(figsize=(8.0, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, series("gain"), "-o", color=TARGET_COLOR, label=f"gain ({target})", gid="gain")
    low = np.array([np.nan if not row.get("gain_ci") else row["gain_ci"][0] for row in rows], dtype=float)
    high = np.array([np.nan if not row.get("gain_ci") else row["gain_ci"][1] for row in rows], dtype=float)
    top.fill_between(steps, low, high, color=TARGET_COLOR, alpha=0.15, linewidth=0)
    top.axhline(0, color="black", linewidth=0.6, alpha=0.5)
    top.set_ylabel("gain (drift of the target)")
    right = top.twinx()
    right.plot(steps, series("vat"), "--s", color=PRE_COLOR, markersize=4, label="vat", gid="vat")
    right.set_ylabel("VAT (mean |drift| / |gain|)")
    right.set_ylim(bottom=0)
    handles = top.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    top.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    top.set_title(f"{result.get('name', '')}: gain and tax during training", fontsize=11)
    onset = result.get("drift_onset") or {}
    values = list(rows[0]["drift"]) if rows else []
    cmap = [POST_COLORS[k % len(POST_COLORS)] for k in range(len(values))]
    for k, value in enumerate(values):
        d = series("drift", value)
        is_target = value == target
        color = TARGET_COLOR if is_target else cmap[k]
        bottom.plot(steps, d, "-", color=color, linewidth=2.4 if is_target else 1.1,
                    label=value + (" (target)" if is_target else ""), gid=f"drift-{value}")
        if onset.get(value) is not None and not is_target:
            at = int(np.argmax(steps == onset[value]))
            bottom.plot([steps[at]], [d[at]], "o", color=color, markersize=6)
    bottom.axhline(0, color="black", linewidth=0.6, alpha=0.5)
    bottom.set_xlabel("training step")
    bottom.set_ylabel("drift in expression (vs. step 0)")
    bottom.set_title("drift per value (dot: onset, the first step whose interval excludes 0)", fontsize=10)
    bottom.legend(fontsize=7, ncol=2, loc="best")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# the report


def _save(fig: Figure, path: Path) -> Path:
    # Into a temporary file beside, then renamed: a figure is never left half-written (or 0 bytes).
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _html_table(head: Sequence[str], rows: Sequence[Tuple[bool, Sequence[str]]], mark: str = "target") -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for strong, cells in rows:
        cls = f' class="{mark}"' if strong else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
tr.target td { font-weight: bold; background: #fdf0e6; }
tr.flag td { background: #eef4fb; }
img { max-width: 100%; height: auto; margin: 0.5rem 0; }
.facts { color: #555; }
.warnings { color: #8a4b00; font-size: 0.9rem; }
.summary { background: #f7f7f7; padding: 0.5rem 0.8rem; border-left: 3px solid #d95f02; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.figs img { max-width: 48%; }
"""


#: The rules every number in the report follows, each with its reason (printed under the comparison).
READING = (
    ("Resolved gain", "gnd and vat divide by the gain; they are numbers only when the gain's bootstrap interval lies "
     "above 0. A ratio whose denominator's interval includes 0 has no finite interval, and tax per unit of a gain in "
     "the wrong direction means nothing, so the report prints the reason instead."),
    ("Tax, always, beside its chance level", "tax = mean |drift| of the non-target values is defined whatever the "
     "gain. A mean of absolute values is above 0 even with no effect, so it is printed beside its level by chance "
     "(whole resampling units sign-flipped) and the p-value of that test."),
    ("p-values at the unit of resampling", "per-value tests flip whole scenes (or the chosen unit), so items that "
     "share a scene are never counted as independent; non-target values are Holm-corrected, the target's own test "
     "is apart. A p-value printed as < 1/(n+1) is at the floor of n random permutations."),
    ("Same gain, different tax", "declared only from the paired comparison: differences bootstrapped on the same "
     "resampled units for every intervention, the gain difference's interval containing 0, the tax difference's "
     "excluding it, and the larger tax above its chance level (a mean of |drift| grows with noise, so two taxes at "
     "their chance levels differ whenever the interventions' noise does). Overlap of two separate intervals is not "
     "a test."),
    ("Split-half agreement", "rank agreement (Kendall's tau) of the off-target drift profile between disjoint halves "
     "of the units: unlike overlapping 80% subsamples, it can fail."),
)


def _paired_note(comparison: Optional[Dict[str, Any]], n_results: int) -> Optional[str]:
    if comparison is None and n_results > 1:
        return ("Same gain, different tax: not tested. The test is the paired comparison of interventions judged on "
                "the same items (vat_hf.metrics.compare_judgments; vat-hf run writes it as comparison.json).")
    return None


def _not_scored_lines(not_scored: Sequence[Dict[str, Any]]) -> List[str]:
    """One sentence per intervention that was evaluated but not scored (its flag's words)."""
    return [f"{r.get('name')}: {(r.get('flag') or {}).get('words') or 'not scored'}" for r in not_scored]


def write_report(results: Sequence[Dict[str, Any]], out_dir: PathLike, title: Optional[str] = None,
                 comparison: Optional[Dict[str, Any]] = None,
                 not_scored: Sequence[Dict[str, Any]] = ()) -> Dict[str, Path]:
    """Write ``report.md``, ``report.html`` (self-contained: figures inlined as base64 PNG) and the
    PNG figures into ``out_dir``: ``radar.png`` (states, pre and every post), ``gain_tax.png``
    (all interventions) and, per intervention, ``drift_<name>.png`` and ``coupling_<name>.png``.
    ``comparison`` is the paired comparison of the results' interventions
    (:func:`vat_hf.metrics.compare_paired` / ``compare_judgments``): its differences are shown and
    it alone sets the "same gain, different tax" flag. ``not_scored``: intervention results that
    were evaluated but flagged and never scored (a steering strength whose option mass collapsed);
    each is listed with its reason. Returns ``{"markdown": ..., "html": ...,
    "radar": ..., "gain_tax": ..., "drift_<name>": ..., "coupling_<name>": ...}``.
    """
    if not results:
        raise ValueError("write_report needs at least one result")
    results = [_normalise(r, i) for i, r in enumerate(results)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slugs = _slugs(results)
    title = title or "Value Alignment Tax report"
    paths: Dict[str, Path] = {}

    # radar: one per distinct set of values (results at the same level share one)
    groups: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(tuple(metric_of(r)["values_order"]), []).append(r)
    radar_files = []
    for k, members in enumerate(groups.values()):
        name = "radar.png" if k == 0 else f"radar_{k + 1}.png"
        paths["radar" if k == 0 else f"radar_{k + 1}"] = _save(plot_radar(members), out / name)
        radar_files.append(name)
    paths["gain_tax"] = _save(plot_gain_tax(results), out / "gain_tax.png")
    for r, s in zip(results, slugs):
        paths[f"drift_{s}"] = _save(plot_drift(r), out / f"drift_{s}.png")
        paths[f"coupling_{s}"] = _save(plot_coupling(r), out / f"coupling_{s}.png")
        if r.get("trajectory"):
            paths[f"trajectory_{s}"] = _save(plot_trajectory(r), out / f"trajectory_{s}.png")

    # the tables, once, as (header, rows): Markdown and HTML render the same cells
    comp_head, comp_rows = comparison_table(compare_interventions(results, comparison))
    pairs = paired_table(comparison) if comparison and comparison.get("pairs") else None
    pairs_caption = (f"Paired differences (a - b) on {comparison.get('n_items')} items judged by every intervention, "
                     f"{comparison.get('method')}." if pairs else None)
    note = _paired_note(comparison, len(results))
    per_result = []
    for r in results:
        metric = metric_of(r)
        per_result.append({"facts": _run_header(r), "table": fmt.value_table(metric), "summary": fmt.summary_items(metric),
                           "warnings": list(metric.get("warnings") or [])})

    # Markdown
    md = [f"# {title}", "", "## Comparison", "", fmt.markdown_table(comp_head, comp_rows, bold=False), "",
          COMPARISON_LEGEND, ""]
    if pairs:
        md += [pairs_caption, "", fmt.markdown_table(*pairs, bold=False), ""]
    if note:
        md += [note, ""]
    if not_scored:
        md += ["Evaluated but not scored:", ""] + [f"- {line}" for line in _not_scored_lines(not_scored)] + [""]
    md += ["![gain-tax plane](gain_tax.png)", ""] + [f"![value states]({f})" for f in radar_files] + [""]
    md += ["### Reading this report", ""] + [f"- **{k}.** {v}" for k, v in READING] + [""]
    for r, s, sec in zip(results, slugs, per_result):
        md += [f"## {r['name']}", "", " · ".join(f"{k}: {v}" for k, v in sec["facts"]), ""]
        md += [fmt.markdown_table(*sec["table"]), "",
               " · ".join(f"{k} **{v}**" if k == "gain" else f"{k} {v}" for k, v in sec["summary"]), ""]
        if sec["warnings"]:
            md += ["Warnings:", ""] + [f"- {w}" for w in sec["warnings"]] + [""]
        md += [f"![drift](drift_{s}.png)", f"![coupling](coupling_{s}.png)", ""]
        if r.get("trajectory"):
            md += [f"![trajectory](trajectory_{s}.png)", "", _onset_text(r), ""]
    paths["markdown"] = atomic_write_text(out / "report.md", "\n".join(md))

    # HTML
    def img(name: str, alt: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{html.escape(title)}</h1>", "<h2>Comparison</h2>", _html_table(comp_head, comp_rows, mark="flag"),
         '<p class="facts">' + html.escape(COMPARISON_LEGEND) + "</p>"]
    if pairs:
        h += [f"<p>{html.escape(pairs_caption)}</p>", _html_table(*pairs, mark="flag")]
    if note:
        h.append(f'<p class="facts">{html.escape(note)}</p>')
    if not_scored:
        h += ['<p class="warnings">Evaluated but not scored:</p>', '<ul class="warnings">']
        h += [f"<li>{html.escape(line)}</li>" for line in _not_scored_lines(not_scored)] + ["</ul>"]
    h += ['<div class="figs">', img("gain_tax.png", "gain-tax plane")] + [img(f, "value states") for f in radar_files]
    h += ["</div>", "<h3>Reading this report</h3>", "<ul>"]
    h += [f"<li><b>{html.escape(k)}.</b> {html.escape(v)}</li>" for k, v in READING] + ["</ul>"]
    for r, s, sec in zip(results, slugs, per_result):
        h += [f"<h2>{html.escape(r['name'])}</h2>",
              '<p class="facts">' + " &middot; ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in sec["facts"]) + "</p>",
              _html_table(*sec["table"]),
              '<p class="summary">' + " &middot; ".join(f"{html.escape(k)} <b>{html.escape(v)}</b>" for k, v in sec["summary"])
              + "</p>"]
        if sec["warnings"]:
            h += ['<ul class="warnings">'] + [f"<li>{html.escape(w)}</li>" for w in sec["warnings"]] + ["</ul>"]
        h += ['<div class="figs">', img(f"drift_{s}.png", f"drift {r['name']}"), img(f"coupling_{s}.png", f"coupling {r['name']}")]
        if r.get("trajectory"):
            h += [img(f"trajectory_{s}.png", f"trajectory {r['name']}"), f"<p>{html.escape(_onset_text(r))}</p>"]
        h.append("</div>")
    h.append("</body></html>")
    paths["html"] = atomic_write_text(out / "report.html", "\n".join(h))
    return paths


def _onset_text(result: Dict[str, Any]) -> str:
    onset = {v: o for v, o in (result.get("drift_onset") or {}).items() if o is not None}
    return ("Drift onset (first step whose interval excludes 0): "
            + (", ".join(f"{v} at step {o}" for v, o in sorted(onset.items(), key=lambda kv: kv[1])) or "none"))

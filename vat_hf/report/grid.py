"""The grid report of a sweep: trade-off matrix heatmaps, steering dose-responses and
``index.html`` / ``summary.md`` linking every cell's own report.

Figures are :class:`matplotlib.figure.Figure` objects (no pyplot), whose artists hold exactly the
numbers of the matrix (the tests read them back). Unlike a cell's report, the grid report links
its figures and the cells' reports as files beside it (``grid/`` next to ``cells/``), so the
folder can be browsed as it is; tests/test_sweep.py checks that every link and image resolves.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vat_hf.io import atomic_write_text
from vat_hf.metrics import formatting as fmt
from vat_hf.metrics.grid import matrix_table
from vat_hf.report.render import _CSS, _html_table, _save

__all__ = ["plot_dose_response", "plot_matrix", "write_grid_report"]

MATRIX_READING = (
    "Rows: the target each cell aligned the model toward; columns: the value whose drift is shown (post - pre "
    "expression, on [-1, 1]); both in circumplex order, so a pattern that follows the circle shows as bands along the "
    "diagonal. The outlined diagonal is each row's gain. Bold entries: the bootstrap interval excludes 0. Right: "
    "gain-normalised drift (drift / gain), only in rows whose gain is resolved; other rows are blank, with the gain's "
    "status in words.")


# the grid's tables are wide (ten values, a row per cell): a wider page than a cell's report
_GRID_CSS = "body { max-width: 1500px; } td { vertical-align: top; }"


def _short_status(status: str) -> str:
    return {"not_resolved": "gain not resolved", "wrong_direction": "gain in the wrong direction",
            "no_bootstrap": "no bootstrap"}.get(status, status)


def plot_matrix(matrix: Mapping[str, Any]) -> Figure:
    """Heatmaps of one trade-off matrix: drift (left; the AxesImage with ``gid`` "drift", whose
    array is ``matrix["drift"]`` row by row) and gnd (right, ``gid`` "gnd"; masked where the row's
    gain is not resolved and on the diagonal)."""
    targets, values = list(matrix["targets"]), list(matrix["values"])
    drift = np.array([[np.nan if matrix["drift"][t][v] is None else matrix["drift"][t][v] for v in values] for t in targets],
                     dtype=float)
    gnd = np.array([[np.nan if matrix["gnd"][t][v] is None else matrix["gnd"][t][v] for v in values] for t in targets],
                   dtype=float)
    fig = Figure(figsize=(15.0, 2.8 + 0.42 * len(targets)))
    axes = fig.subplots(1, 2)
    for ax, data, what in ((axes[0], drift, "drift"), (axes[1], gnd, "gnd")):
        finite = data[np.isfinite(data)]
        vmax = float(np.abs(finite).max()) if finite.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#eeeeee")
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
        image.set_gid(what)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03,
                     label="drift (expression, post - pre)" if what == "drift" else "drift / gain")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(values, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(targets)))
        labels = targets if what == "drift" else [
            t if matrix["gain_status"][t] == "resolved" else f"{t}\n({_short_status(matrix['gain_status'][t])})" for t in targets]
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("value")
        ax.set_ylabel("target")
        for i, t in enumerate(targets):
            for j, v in enumerate(values):
                x = data[i, j]
                if v == t:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
                if not np.isfinite(x):
                    continue
                ci = (matrix["drift_ci"] if what == "drift" else matrix["gnd_ci"])[t][v]
                strong = bool(ci and ci[0] is not None and ci[1] is not None and (ci[0] > 0 or ci[1] < 0))
                ax.text(j, i, fmt.number(float(x), 3 if abs(x) < 1 else 2, signed=True), ha="center", va="center", fontsize=6.5,
                        fontweight="bold" if strong else "normal", color="white" if abs(x) > 0.6 * vmax else "black")
    axes[0].set_title("drift per value (diagonal: the gain)", fontsize=10)
    axes[1].set_title("gain-normalised drift (resolved gains only)", fontsize=10)
    conf = matrix.get("confidence")
    note = f"; bold: {conf:.0%} interval excludes 0" if conf else ""
    fig.suptitle(f"Trade-off matrix: {matrix.get('model')} x {matrix.get('intervention')}{note}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_dose_response(entry: Mapping[str, Any]) -> Figure:
    """Gain and tax (top, with intervals; tax by chance dotted) and option mass (bottom, with the
    threshold and the baseline's) against steering strength. Flagged strengths (option mass below
    the threshold) have no gain or tax point: they are marked with an x on the option-mass panel
    only. Lines carry ``gid`` "gain", "tax", "option-mass"."""
    rows = sorted(entry["rows"], key=lambda r: r["strength"])
    fig = Figure(figsize=(7.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    scored = [r for r in rows if r.get("gain") is not None]
    s = np.array([r["strength"] for r in scored], dtype=float)

    def series(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in scored], dtype=float)

    def errors(key, centre):
        lo = np.array([np.nan if not r.get(key) or r[key][0] is None else r[key][0] for r in scored], dtype=float)
        hi = np.array([np.nan if not r.get(key) or r[key][1] is None else r[key][1] for r in scored], dtype=float)
        return np.vstack([centre - lo, hi - centre])

    gain, tax = series("gain"), series("tax")
    if scored:
        top.errorbar(s, gain, yerr=errors("gain_ci", gain), fmt="-o", color="#d95f02", capsize=3, label="gain", gid="gain")
        top.errorbar(s, tax, yerr=errors("tax_ci", tax), fmt="-s", color="#444444", capsize=3, label="tax", gid="tax")
        top.plot(s, series("tax_null"), ":", color="#444444", label="tax by chance")
    else:
        top.text(0.5, 0.5, "no strength scored (every one flagged)", transform=top.transAxes, ha="center", color="grey")
    top.axhline(0, color="black", linewidth=0.6, alpha=0.5)
    top.set_ylabel("gain / tax (expression units)")
    if scored:
        top.legend(fontsize=8, loc="best")
    top.set_title(f"{entry.get('model')}: steering toward {entry.get('target_value')} ({entry.get('intervention')})",
                  fontsize=10)
    all_s = np.array([r["strength"] for r in rows], dtype=float)
    mass = np.array([np.nan if r.get("option_mass_post") is None else r["option_mass_post"] for r in rows], dtype=float)
    bottom.plot(all_s, mass, "-o", color="#1f77b4", label="option mass (steered)", gid="option-mass")
    flagged = np.array([r.get("status") == "flagged" for r in rows])
    if flagged.any():
        bottom.plot(all_s[flagged], mass[flagged], "x", color="#d62728", markersize=10, mew=2,
                    label="flagged: not scored", gid="flagged")
    threshold = entry.get("min_option_mass")
    if threshold is not None:
        bottom.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if entry.get("baseline_option_mass") is not None:
        bottom.axhline(entry["baseline_option_mass"], color="grey", linestyle=":", linewidth=1, label="baseline")
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("steering strength (multiples of the mean contrast vector)")
    bottom.set_ylabel("option mass")
    bottom.legend(fontsize=8, loc="best")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _rel(path: Optional[str], base: Path) -> Optional[str]:
    if not path:
        return None
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _metric_cells(row: Mapping[str, Any]) -> List[str]:
    if row.get("gain") is None:
        flag = (row.get("flag") or {}).get("words")
        return [flag or "", "", ""]
    metric = {"gain": row.get("gain"), "gain_status": row.get("gain_status"), "tax": row.get("tax"),
              "vat": row.get("vat"), "tax_null": {"mean": row.get("tax_null"), "p_value": row.get("tax_p")},
              "ci": {"gain": row.get("gain_ci"), "tax": row.get("tax_ci"), "vat": row.get("vat_ci")}}
    return [fmt.gain_text(metric), fmt.tax_text(metric), fmt.vat_text(metric)]


def write_grid_report(summary: Mapping[str, Any], matrices: Sequence[Mapping[str, Any]], grid_dir,
                      target_tables: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Path]:
    """Write the figures (``matrix/<model>__<intervention>.png``, ``dose_response/<...>.png``),
    ``summary.md`` and ``index.html`` into ``grid_dir``. ``target_tables``: per target, the
    summary table (``head``, ``rows`` from :func:`vat_hf.metrics.compare.comparison_table`) and
    the paired tables (``paired``: ``[(what, method, (head, rows))]``)."""
    grid = Path(grid_dir)
    paths: Dict[str, Path] = {}
    for m, stem in zip(matrices, summary["matrices"]):
        paths[f"matrix_{stem}"] = _save(plot_matrix(m), grid / "matrix" / f"{stem}.png")
    for entry in summary.get("dose_response") or []:
        paths[f"dose_{entry['stem']}"] = _save(plot_dose_response(entry), grid / "dose_response" / f"{entry['stem']}.png")
    target_tables = target_tables or {}

    head = ["cell", "model", "target", "intervention", "status", "time", "gain", "tax (chance)", "vat", "option mass"]
    rows_md, rows_html = [], []
    for row in summary["cells"]:
        link = _rel(row.get("report") or row.get("result"), grid)
        secs = row.get("seconds")
        cells = [row["cell"], str(row.get("model_slug")), str(row.get("target_value")), str(row.get("intervention")),
                 row["status"] + (f": {row['error']}" if row.get("error") else ""), f"{secs:.0f} s" if secs else "",
                 *_metric_cells(row), fmt.number(row.get("option_mass_post"))]
        rows_md.append(cells if not link else [f"[{cells[0]}]({link})"] + cells[1:])
        rows_html.append((link, cells))
    counts = " · ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    data = summary.get("data") or {}
    facts = [f"{summary['n_cells']} cells: {counts}",
             f"items: {data.get('n_items')} in {data.get('n_scenes')} {data.get('split') or ''} scenes of "
             f"{data.get('source')} (fingerprint {str(data.get('fingerprint'))[:12]})" if data else "items: none scored yet"]
    for model, b in (summary.get("baselines") or {}).items():
        facts.append(f"baseline of {model}: judged once ({b['n_computed']} items, {b['judged_seconds']:.0f} s), "
                     f"read back from the judgment cache by {b['read_back']} more cells")

    md = [f"# {summary['name']}: grid report", ""] + [f"- {f}" for f in facts] + ["", "## Cells", "",
                                                                                  fmt.markdown_table(head, [(False, r) for r in rows_md], bold=False), ""]
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{html.escape(summary['name'])}: grid report</title><style>{_CSS}{_GRID_CSS}</style></head><body>",
         f"<h1>{html.escape(summary['name'])}: grid report</h1>", '<ul class="facts">']
    h += [f"<li>{html.escape(f)}</li>" for f in facts] + ["</ul>", "<h2>Cells</h2>", "<table>",
                                                           "<thead><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in head)
                                                           + "</tr></thead><tbody>"]
    for link, cells in rows_html:
        first = f'<a href="{html.escape(link)}">{html.escape(cells[0])}</a>' if link else html.escape(cells[0])
        h.append("<tr><td>" + first + "</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>")
    h.append("</tbody></table>")

    if matrices:
        md += ["## Trade-off matrices", "", MATRIX_READING, ""]
        h += ["<h2>Trade-off matrices</h2>", f'<p class="facts">{html.escape(MATRIX_READING)}</p>']
    for m, stem in zip(matrices, summary["matrices"]):
        title = f"{m['model']} x {m['intervention']}"
        md += [f"### {title}", "", f"![trade-off matrix {title}](matrix/{stem}.png)", "",
               f"Numbers: [matrix/{stem}.csv](matrix/{stem}.csv), [matrix/{stem}.json](matrix/{stem}.json)", "",
               fmt.markdown_table(*matrix_table(m, "drift"), bold=False), ""]
        h += [f"<h3>{html.escape(title)}</h3>",
              f'<a href="matrix/{stem}.png"><img alt="trade-off matrix {html.escape(title)}" src="matrix/{stem}.png"></a>',
              f'<p>Numbers: <a href="matrix/{stem}.csv">CSV</a>, <a href="matrix/{stem}.json">JSON</a></p>',
              _html_table(*matrix_table(m, "drift")), _html_table(*matrix_table(m, "gnd"))]

    if target_tables:
        md += ["## Comparisons per target", ""]
        h += ["<h2>Comparisons per target</h2>"]
    for target, table in target_tables.items():
        md += [f"### {target}", "", fmt.markdown_table(table["head"], table["rows"], bold=False), ""]
        h += [f"<h3>{html.escape(target)}</h3>", _html_table(table["head"], table["rows"], mark="flag")]
        for what, method, (phead, prows) in table.get("paired") or []:
            md += [f"Paired differences (a - b), {what}: {method}.", "", fmt.markdown_table(phead, prows, bold=False), ""]
            h += [f"<p>Paired differences (a - b), {html.escape(what)}: {html.escape(method)}.</p>",
                  _html_table(phead, prows, mark="flag")]

    if summary.get("dose_response"):
        md += ["## Steering dose-response", ""]
        h += ["<h2>Steering dose-response</h2>"]
    for entry in summary.get("dose_response") or []:
        title = f"{entry['model']}: {entry['intervention']} toward {entry['target_value']}"
        md += [f"### {title}", "", f"![dose-response {title}](dose_response/{entry['stem']}.png)", "",
               f"Numbers: [dose_response/{entry['stem']}.json](dose_response/{entry['stem']}.json)", ""]
        h += [f"<h3>{html.escape(title)}</h3>",
              f'<img alt="dose-response {html.escape(title)}" src="dose_response/{entry["stem"]}.png">',
              f'<p>Numbers: <a href="dose_response/{entry["stem"]}.json">JSON</a></p>']
    h.append("</body></html>")
    paths["markdown"] = atomic_write_text(grid / "summary.md", "\n".join(md))
    paths["html"] = atomic_write_text(grid / "index.html", "\n".join(h))
    return paths

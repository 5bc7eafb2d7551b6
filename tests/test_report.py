"""Reports: files, tables, and figures that draw exactly the metric's numbers."""

import json
import re

import numpy as np
import pytest
from matplotlib.container import BarContainer

from vat_hf.metrics import VATWarning, compare_interventions, compare_paired, compute_vat
from vat_hf.report import (
    load_results,
    markdown_table,
    plot_coupling,
    plot_drift,
    plot_gain_tax,
    plot_radar,
    report_command,
    write_report,
)
from vat_hf.values import BASIC_VALUES, MICRO_VALUES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def simulate(seed, target_shift, side, n_scenes=16, n_bootstrap=100, micro=False, columns=False):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)  # the same baseline for every intervention
    cols = {k: [] for k in ("pre", "post", "value", "polarity", "scene", "micro_value")}
    for s in range(n_scenes):
        for k, v in enumerate(BASIC_VALUES):
            shift = target_shift if v == "Benevolence" else side * np.cos(k) + rng.normal(0, 0.05)
            for pol in (1, -1):
                pre = float(np.clip(3 + pol * base.normal(0.3, 0.6), 1, 5))
                cols["pre"].append(pre)
                cols["post"].append(float(np.clip(pre + pol * 2 * shift + rng.normal(0, 0.2), 1, 5)))
                cols["value"].append(v)
                cols["polarity"].append(pol)
                cols["scene"].append(f"s{s}")
                cols["micro_value"].append([m for m, b in MICRO_VALUES.items() if b == v][pol > 0])
    if not micro:
        cols.pop("micro_value")
    if columns:
        return cols
    return compute_vat(**cols, target_value="Benevolence", n_bootstrap=n_bootstrap, n_subsamples=20,
                       level="micro" if micro else "basic")


def run_result(name, metric):
    return {
        "name": name,
        "model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "adapter": None},
        "target_value": "Benevolence",
        "data": {"source": "builtin"},
        "intervention": {"type": "prompt"},
        "versions": {"vat-hf": "0.1.0"},
        "seed": 0,
        "evaluation": {"pre": {"n_items": 320, "option_mass_mean": 0.97, "option_mass_min": 0.81},
                       "post": {"n_items": 320, "option_mass_mean": 0.95, "option_mass_min": 0.77}},
        "vat": metric,
    }


@pytest.fixture(scope="module")
def results():
    return [run_result("prompt-k4", simulate(1, 0.25, 0.02)), run_result("sft lora", simulate(2, 0.3, 0.12))]


@pytest.fixture(scope="module")
def comparison():
    """The two interventions of ``results`` compared on their shared items and baseline."""
    a, b = simulate(1, 0.25, 0.02, columns=True), simulate(2, 0.3, 0.12, columns=True)
    assert a["pre"] == b["pre"]  # one baseline
    return compare_paired({"prompt-k4": (a["pre"], a["post"]), "sft lora": (b["pre"], b["post"])}, a["value"],
                          a["polarity"], a["scene"], target_value="Benevolence", n_bootstrap=100)


def test_write_report_files(results, comparison, tmp_path):
    paths = write_report(results, tmp_path / "report", title="Toward Benevolence", comparison=comparison)
    expected = {"markdown", "html", "radar", "gain_tax", "drift_prompt-k4", "coupling_prompt-k4",
                "drift_sft-lora", "coupling_sft-lora"}
    assert set(paths) == expected
    for key, path in paths.items():
        assert path.exists() and path.parent == tmp_path / "report"
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(PNG_MAGIC) and 15_000 < len(data) < 2_000_000, (key, len(data))
    md = paths["markdown"].read_text()
    assert md.startswith("# Toward Benevolence")
    assert md.count("| **Benevolence (target)** |") == 2
    assert "## Comparison" in md
    assert re.search(r"^\| prompt-k4( \u2020)? \| Benevolence \|", md, flags=re.M)
    for name in ("gain_tax.png", "radar.png", "drift_sft-lora.png", "coupling_prompt-k4.png"):
        assert f"]({name})" in md
    html = paths["html"].read_text()
    n_png = sum(1 for p in paths.values() if p.suffix == ".png")
    assert html.count('src="data:image/png;base64,') == n_png  # self-contained
    assert not re.search(r'src="(?!data:)', html) and "<link" not in html
    assert html.count('<tr class="target">') == 2 and "Toward Benevolence" in html
    pair = comparison["pairs"][0]
    flagged = [r for r in compare_interventions(results, comparison) if r["same_gain_different_tax"]]
    assert len(flagged) == (2 if pair["same_gain_different_tax"] else 0)
    assert html.count('<tr class="flag">') == len(flagged) + bool(pair["same_gain_different_tax"])
    # the numbers in the tables are the metric's, with the gain's status in words
    m = results[1]["vat"]
    assert m["gain_status"] == "resolved"
    g = m["ci"]["gain"]
    assert f"gain **{m['gain']:+.3f} [{g[0]:+.3f}, {g[1]:+.3f}], resolved**" in md
    assert f"vat {m['vat']:.3f}" in md and f"{m['vat']:.3f}" in html
    assert f"tax {m['tax']:.3f} [{m['ci']['tax'][0]:.3f}, {m['ci']['tax'][1]:.3f}] (chance {m['tax_null']['mean']:.3f}" in md
    # the paired differences, in both files from the same cells
    assert f"| prompt-k4 - sft lora | {pair['gain_diff']:+.3f} [" in md
    assert f"<td>prompt-k4 - sft lora</td><td>{pair['gain_diff']:+.3f} [" in html
    assert "Reading this report" in md and "Resolved gain" in html
    # without a paired comparison the flag is "not tested", never guessed from overlapping intervals
    bare = write_report(results, tmp_path / "bare")["markdown"].read_text()
    assert "| not tested |" in bare and "Same gain, different tax: not tested" in bare


def test_markdown_table_rows(results):
    m = results[0]["vat"]
    table = markdown_table(results[0])
    lines = table.splitlines()
    assert lines[0].startswith("| value | pre | post | drift [95% CI] | gnd | p (Holm, scene-level) |")
    rows = lines[2:12]
    assert [r.split("|")[1].strip().strip("*").replace(" (target)", "") for r in rows] == list(BASIC_VALUES)
    bene = rows[BASIC_VALUES.index("Benevolence")]
    assert bene.startswith("| **Benevolence (target)** | **") and f"**{m['drift']['Benevolence']:+.3f} [" in bene
    assert "(own test)" in bene  # the target's test is apart from the Holm family
    power = rows[BASIC_VALUES.index("Power")]
    assert f"| {m['pre_state']['Power']:+.3f} | {m['post_state']['Power']:+.3f} | {m['drift']['Power']:+.3f} [" in power
    assert f"| {m['gnd']['Power']:+.3f} |" in power
    # a bare metric dict works too (what `vat-hf score` prints)
    assert markdown_table(m) == table


def _bars(ax):
    return next(c for c in ax.containers if isinstance(c, BarContainer))


def test_drift_plot_draws_the_drifts_and_intervals(results):
    m = results[1]["vat"]
    ax = plot_drift(results[1]).axes[0]
    bars = _bars(ax)
    assert [b.get_height() for b in bars] == pytest.approx([m["drift"][v] for v in BASIC_VALUES])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(BASIC_VALUES)
    target = bars[BASIC_VALUES.index("Benevolence")]
    assert target.get_hatch() == "//"
    assert sum(b.get_hatch() == "//" for b in bars) == 1
    segments = next(c for c in ax.collections if c.get_gid() == "drift-ci").get_segments()
    assert [s[0][0] for s in segments] == list(range(10))
    drawn = np.array([[s[0][1], s[1][1]] for s in segments])
    assert drawn == pytest.approx(np.array([m["ci"]["drift"][v] for v in BASIC_VALUES]))


def test_coupling_heatmap_is_the_coupling_matrix(results):
    m = results[0]["vat"]
    ax = plot_coupling(results[0]).axes[0]
    arr = ax.images[0].get_array()
    expected = np.array([[np.nan if x is None else x for x in row] for row in m["coupling"]])
    assert np.allclose(np.ma.filled(arr.astype(float), np.nan), expected, equal_nan=True)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(BASIC_VALUES)
    assert ax.images[0].get_clim() == (-1, 1)


def _by_gid(ax, gid):
    found = [a for a in list(ax.lines) + list(ax.collections) if a.get_gid() == gid]
    return found[0] if found else None


def test_gain_tax_plane_points_and_error_bars(results):
    ax = plot_gain_tax(results).axes[0]
    for k, r in enumerate(results):
        m = r["vat"]
        point = _by_gid(ax, f"point-{k}")
        assert point.get_xydata()[0] == pytest.approx([m["gain"], m["tax"]]) and point.get_marker() == "o"
        (a, b), = _by_gid(ax, f"gain-ci-{k}").get_segments()
        assert (a[1], b[1]) == pytest.approx((m["tax"], m["tax"])) and [a[0], b[0]] == pytest.approx(m["ci"]["gain"])
        (a, b), = _by_gid(ax, f"tax-ci-{k}").get_segments()
        assert (a[0], b[0]) == pytest.approx((m["gain"], m["gain"])) and [a[1], b[1]] == pytest.approx(m["ci"]["tax"])
        (a, _), = _by_gid(ax, f"tax-chance-{k}").get_segments()
        assert a[1] == pytest.approx(m["tax_null"]["mean"])
    labels = [t.get_text() for t in ax.texts]
    assert labels[:2] == [f"prompt-k4: vat {results[0]['vat']['vat']:.3f}", f"sft lora: vat {results[1]['vat']['vat']:.3f}"]
    # lines of equal vat through the origin: tax = vat * gain
    (x0, y0), (x1, y1) = _by_gid(ax, "iso-vat-0.5").get_xydata()
    assert (x0, y0) == (0, 0) and y1 == pytest.approx(0.5 * x1)


def test_radar_draws_pre_and_every_post_state(results):
    ax = plot_radar(results).axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_gid() != "zero-ring"]
    assert [ln.get_label() for ln in lines] == ["pre", "post: prompt-k4", "post: sft lora"]  # one shared baseline
    want = [results[0]["vat"]["pre_state"], results[0]["vat"]["post_state"], results[1]["vat"]["post_state"]]
    for ln, state in zip(lines, want):
        y = ln.get_ydata()
        assert y[:-1] == pytest.approx([state[v] for v in BASIC_VALUES]) and y[-1] == y[0]  # closed polygon
    assert [t.get_text() for t in ax.get_xticklabels()][3] == "Achievement"


def test_undefined_vat_and_no_bootstrap_still_render(tmp_path):
    with pytest.warns(VATWarning):
        flat = compute_vat(pre=[3, 4, 3, 4], post=[3, 4, 3, 4], value=["Power", "Power", "Security", "Security"],
                           polarity=[1, 1, 1, -1], scene=["a", "b", "a", "b"], target_value="Power", n_bootstrap=0)
    nob = simulate(3, 0.2, 0.05, n_bootstrap=0)
    paths = write_report([run_result("flat", flat), {"name": "nob", "vat": nob}], tmp_path)
    assert paths["gain_tax"].stat().st_size > 10_000
    ax = plot_gain_tax([run_result("flat", flat), run_result("nob", nob)]).axes[0]
    # both drawn on their tax, as hollow squares: the vat of neither is defined
    for k, m in enumerate((flat, nob)):
        point = _by_gid(ax, f"point-{k}")
        assert point.get_xydata()[0] == pytest.approx([m["gain"], m["tax"]])
        assert point.get_marker() == "s" and point.get_markerfacecolor() == "white"
    assert _by_gid(ax, "gain-ci-1") is None and _by_gid(ax, "tax-ci-1") is None  # no bootstrap, no intervals
    assert "hollow squares: gain not resolved, vat undefined (flat, nob)" in [t.get_text() for t in ax.figure.texts]
    md = paths["markdown"].read_text()
    assert ("| flat | Power | +0.000, not resolved (no bootstrap, n_bootstrap=0) | 0.000 (chance 0.000, p 1.000) | "
            "undefined: gain not resolved") in md
    assert f"vat undefined: gain not resolved (no bootstrap, n_bootstrap=0)" in md
    assert nob["vat"] is None and "- gain +" in md  # the warnings are listed under the result


def test_micro_level_report(tmp_path):
    micro = simulate(4, 0.3, 0.1, n_bootstrap=20, micro=True)
    paths = write_report([run_result("micro", micro)], tmp_path)
    ax = plot_drift(run_result("micro", micro)).axes[0]
    assert len(_bars(ax)) == len(micro["values_order"]) == 20
    assert sum(b.get_hatch() == "//" for b in _bars(ax)) == 2  # Benevolence's two survey items
    assert paths["coupling_micro"].stat().st_size > 15_000


def test_load_results_and_report_command(results, tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    for r in results:
        (d / f"{r['name'].replace(' ', '_')}.json").write_text(json.dumps(r))
    (d / "config.json").write_text(json.dumps({"name": "not a result"}))
    bare = dict(results[0]["vat"])
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    (tmp_path / "list.json").write_text(json.dumps(results))
    loaded = load_results([d])
    assert [r["name"] for r in loaded] == ["prompt-k4", "sft lora"] and loaded[0]["vat"] == results[0]["vat"]
    assert load_results([tmp_path / "bare.json"])[0]["name"] == "bare"
    assert len(load_results([tmp_path / "list.json"])) == 2
    with pytest.raises(ValueError, match="not a vat-hf result"):
        load_results([d / "config.json"])
    with pytest.raises(FileNotFoundError):
        load_results([tmp_path / "missing.json"])
    printed = []
    paths = report_command([d, tmp_path / "bare.json"], tmp_path / "out", "T", echo=printed.append)
    assert paths["markdown"].exists() and paths["html"].exists() and "drift_bare" in paths
    text = "\n".join(printed)
    assert "| **Benevolence (target)** |" in text and str(paths["html"]) in text

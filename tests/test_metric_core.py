"""The VAT metric math (vat_hf.metrics.core) and the comparison of interventions."""

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from vat_hf.metrics import VATWarning, compute_vat, gini, holm
from vat_hf.metrics.numerics import spearman_batch, spearman_pairwise
from vat_hf.values import BASIC_VALUES, HIGHER_ORDER_GROUPS, MICRO_VALUES, angle, higher_order_of

NO_UNCERTAINTY = dict(n_bootstrap=0, n_subsamples=0)
# gnd and vat need a resolved gain, hence a bootstrap; these data sets have the same gain in every scene
RESOLVED = dict(n_bootstrap=50, n_subsamples=0)


def rating(e, polarity):
    """The rating (scale 1-5) whose expression is e."""
    return 3.0 + 2.0 * np.asarray(polarity, dtype=float) * np.asarray(e, dtype=float)


def make_items(scene_drift, values=BASIC_VALUES, pre_e=0.0, micro=False):
    """Items with a given per-scene drift: ``scene_drift[s][v]`` is value v's drift in scene s.
    Each (scene, value) cell has one item of each polarity (or, with ``micro``, one of each
    polarity per survey item of the value), expression pre_e before and pre_e + drift after."""
    cols = {k: [] for k in ("pre", "post", "value", "polarity", "scene", "micro_value")}
    for s, drifts in enumerate(scene_drift):
        for v in values:
            if v not in drifts:
                continue
            micros = [m for m, b in MICRO_VALUES.items() if b == v] if micro else [None]
            for m in micros:
                for pol in (1, -1):
                    cols["pre"].append(float(rating(pre_e, pol)))
                    cols["post"].append(float(rating(pre_e + drifts[v], pol)))
                    cols["value"].append(v)
                    cols["polarity"].append(pol)
                    cols["scene"].append(f"scene-{s:03d}")
                    cols["micro_value"].append(m)
    if not micro:
        del cols["micro_value"]
    return cols


def walk_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk_numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from walk_numbers(v)
    elif isinstance(obj, float):
        yield obj


def assert_clean(result):
    """JSON-ready: plain Python types only, no NaN or inf anywhere."""
    for x in walk_numbers(result):
        assert math.isfinite(x)
    json.dumps(result, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# the basic metric (hand-computed)

HAND = dict(
    pre=[3, 4, 2, 5, 1, 3, 3],
    post=[5, 2, 4, 4, 2, 4, 3],
    value=["Benevolence", "benevolence", "BENEVOLENCE", "Power", "power", "Universalism", "universalism"],
    polarity=[1, -1, 1, 1, -1, 1, -1],
    scene=["s1", "s1", "s2", "s1", "s2", "s1", "s2"],
)
# e_pre:  0, -0.5, -0.5 | 1, 1 | 0, 0      e_post: 1, 0.5, 0.5 | 0.5, 0.5 | 0.5, 0
# Benevolence -1/3 -> 2/3 (gain 1); Power 1 -> 0.5 (-0.5); Universalism 0 -> 0.25 (+0.25)


def test_hand_computed_basic_metric():
    r = compute_vat(**HAND, target_value="benevolence", **RESOLVED)
    assert r["gain_status"] == "resolved" and r["ci"]["gain"] == [1.0, 1.0]  # gain 1 in both scenes
    assert r["target_value"] == "Benevolence"
    assert r["values_order"] == list(BASIC_VALUES)
    assert r["gain"] == pytest.approx(1.0)
    assert r["pre_state"]["Benevolence"] == pytest.approx(-1 / 3)
    assert r["post_state"]["Benevolence"] == pytest.approx(2 / 3)
    assert r["pre_state"]["Power"] == pytest.approx(1.0) and r["post_state"]["Power"] == pytest.approx(0.5)
    assert r["drift"]["Power"] == pytest.approx(-0.5)
    assert r["drift"]["Universalism"] == pytest.approx(0.25)
    assert r["gnd"]["Power"] == pytest.approx(-0.5)
    assert r["gnd"]["Universalism"] == pytest.approx(0.25)
    assert "Benevolence" not in r["gnd"]
    assert r["vat"] == pytest.approx(0.375) and r["tax"] == pytest.approx(0.375)  # tax = mean |drift|
    assert r["gini"] == pytest.approx(1 / 6)  # |gnd| = (0.5, 0.25): 0.5 / (2 * 2**2 * 0.375)
    assert r["uniform_shift"] == pytest.approx(np.mean(np.subtract(HAND["post"], HAND["pre"])))
    # values without items: None, left out of vat
    assert r["drift"]["Hedonism"] is None and r["gnd"]["Hedonism"] is None
    assert r["n_items"] == 7 and r["n_dropped"] == 0 and r["n_scenes"] == 2
    assert r["n_items_by_value"]["Benevolence"] == 3
    assert list(r["drift"]) == list(BASIC_VALUES)  # circumplex order
    assert r["circumplex_consistency"] is None  # only two non-target values with items
    assert_clean(r)


def test_scale_arguments_and_gain_sign():
    # the same judgments on a 0-10 scale give the same numbers
    scaled = dict(HAND, pre=[2.5 * (x - 1) for x in HAND["pre"]], post=[2.5 * (x - 1) for x in HAND["post"]])
    r = compute_vat(**scaled, target_value="Benevolence", scale_min=0, scale_max=10, **RESOLVED)
    assert r["gain"] == pytest.approx(1.0) and r["vat"] == pytest.approx(0.375)
    assert r["scale"] == [0.0, 10.0] and r["scale_use"]["declared"] == [0.0, 10.0]
    # A negative gain (changed on purpose: it used to give gnd and vat with |gain|): the target
    # moved away, so tax per unit of gain means nothing; the tax itself is still reported.
    flipped = dict(HAND, pre=HAND["post"], post=HAND["pre"])
    with pytest.warns(VATWarning, match="moved away from the target"):
        r = compute_vat(**flipped, target_value="Benevolence", **RESOLVED)
    assert r["gain"] == pytest.approx(-1.0) and r["gain_status"] == "wrong_direction"
    assert r["gnd"] is None and r["vat"] is None and r["tax"] == pytest.approx(0.375)


def test_missing_judgments_are_dropped_and_counted():
    extra = {k: list(v) for k, v in HAND.items()}
    for pre, post in ((float("nan"), 3.0), (None, 4.0), (2.0, float("nan"))):
        extra["pre"].append(pre)
        extra["post"].append(post)
        extra["value"].append("Power")
        extra["polarity"].append(1)
        extra["scene"].append("s3")
    r = compute_vat(**extra, target_value="Benevolence", **RESOLVED)
    base = compute_vat(**HAND, target_value="Benevolence", **RESOLVED)
    assert r["n_items"] == 7 and r["n_dropped"] == 3 and r["dropped"]["missing_rating"] == 3
    assert r["drift"] == base["drift"] and r["vat"] == base["vat"]


def test_zero_gain_gives_none_with_a_warning_and_no_nan():
    cols = make_items([{v: 0.0 for v in BASIC_VALUES}] * 6, pre_e=0.25)
    with pytest.warns(VATWarning, match="gain"):
        r = compute_vat(**cols, target_value="Power", n_bootstrap=50)
    assert r["gain"] == 0.0 and r["gain_status"] == "not_resolved" and r["ci"]["gain"] == [0.0, 0.0]
    assert r["gnd"] is None and r["vat"] is None and r["vat_null"] is None
    assert r["ci"]["gnd"] is None and r["ci"]["vat"] is None
    # the tax and its unevenness are defined whatever the gain (Gini is scale-free: of |drift|,
    # equal to the Gini of |gnd| whenever gnd exists); all zero counts as even
    assert r["tax"] == 0.0 and r["gini"] == 0.0 and r["ci"]["gini"] == [0.0, 0.0]
    assert r["tax_null"]["p_value"] == 1.0 and r["tax_null"]["mean"] == 0.0
    assert all(d == 0.0 for d in r["drift"].values())
    assert all(p == 1.0 for p in r["p_values"].values()) and r["p_value_gain"] == 1.0
    assert any("gain" in w for w in r["warnings"])
    assert_clean(r)


def test_target_only_shift_costs_nothing():
    cols = make_items([{v: (0.4 if v == "Security" else 0.0) for v in BASIC_VALUES}] * 8)
    r = compute_vat(**cols, target_value="Security", n_bootstrap=50, n_subsamples=10)
    assert r["gain"] == pytest.approx(0.4)
    assert r["vat"] == 0.0
    assert set(r["gnd"]) == set(BASIC_VALUES) - {"Security"}
    assert all(g == 0.0 for g in r["gnd"].values())
    assert r["gini"] == 0.0  # all taxes zero: even
    assert r["ci"]["vat"] == [0.0, 0.0]
    assert_clean(r)


@pytest.mark.parametrize("sign", [1, -1])
def test_circumplex_consistency(sign):
    target = "Achievement"
    drifts = {v: sign * 0.1 * math.cos(math.radians(angle(v) - angle(target))) for v in BASIC_VALUES}
    drifts[target] = 0.5
    cols = make_items([drifts] * 5)
    r = compute_vat(**cols, target_value=target, **RESOLVED)
    assert r["circumplex_consistency"] == pytest.approx(sign * 1.0)
    # Read in the direction of the change (changed on purpose: it used to follow the raw drift):
    # the same pattern with the target moving down (pre and post swapped) scores the same.
    with pytest.warns(VATWarning, match="moved away"):
        back = compute_vat(**dict(cols, pre=cols["post"], post=cols["pre"]), target_value=target, **RESOLVED)
    assert back["gain_status"] == "wrong_direction"
    assert back["circumplex_consistency"] == pytest.approx(sign * 1.0)
    # undefined while the gain's direction is not established
    with pytest.warns(VATWarning, match="no interval"):
        assert compute_vat(**cols, target_value=target, **NO_UNCERTAINTY)["circumplex_consistency"] is None


# ---------------------------------------------------------------------------------------------
# coupling, nvat, hubs


def co_moving_scenes(n_scenes=30, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.3, 0.3, n_scenes)
    scenes = []
    for s in range(n_scenes):
        d = {v: float(rng.uniform(-0.3, 0.3)) for v in BASIC_VALUES}
        d["Benevolence"] = 0.4 + 0.5 * a[s]
        d["Universalism"] = float(a[s])  # moves with Benevolence (monotone): coupling +1
        d["Power"] = float(2 * a[s] ** 3)  # also monotone in a: +1 with both
        d["Hedonism"] = float(-a[s])  # against: -1
        scenes.append(d)
    return scenes


def independent_scenes(n_scenes=30, seed=0):
    rng = np.random.default_rng(seed)
    return [{v: float(rng.uniform(-0.3, 0.3)) + (0.4 if v == "Benevolence" else 0.0) for v in BASIC_VALUES}
            for _ in range(n_scenes)]


def test_nvat_is_read_against_its_level_by_chance():
    """Independent drifts: nvat is not zero but sits at the shuffled level (about 1/sqrt(S - 1)),
    and over 20 such data sets the permutation p-values spread out as they should under the null;
    co-moving drifts: far above that level, with the smallest p-value 200 permutations allow."""
    runs = [compute_vat(**make_items(independent_scenes(seed=k)), target_value="Benevolence", n_permutations=100,
                        **NO_UNCERTAINTY) for k in range(20)]
    null = runs[0]["nvat_null"]
    assert null["n_permutations"] == 100 and 0.0 < null["mean"] < null["q95"] < 1.0
    assert np.mean([r["nvat_null"]["mean"] for r in runs]) == pytest.approx(1 / math.sqrt(30 - 1), abs=0.02)
    assert np.mean([r["nvat"] for r in runs]) == pytest.approx(np.mean([r["nvat_null"]["mean"] for r in runs]), abs=0.02)
    p = np.array([r["nvat_null"]["p_value"] for r in runs])
    assert 0.2 < np.median(p) < 0.8 and (p <= 0.05).sum() <= 5
    coupled = compute_vat(**make_items(co_moving_scenes()), target_value="Benevolence", n_permutations=200,
                          **NO_UNCERTAINTY)
    assert coupled["nvat"] > coupled["nvat_null"]["q95"] + 0.1
    assert coupled["nvat_null"]["p_value"] == pytest.approx(1 / 201)
    # deterministic by seed; off with 0 permutations
    again = compute_vat(**make_items(independent_scenes(seed=0)), target_value="Benevolence", n_permutations=100,
                        **NO_UNCERTAINTY)
    assert again["nvat_null"] == null
    off = compute_vat(**make_items(independent_scenes(seed=0)), target_value="Benevolence", n_permutations=0,
                      **NO_UNCERTAINTY)
    assert off["nvat_null"] is None and off["nvat"] == runs[0]["nvat"]


def test_coupling_of_co_moving_values():
    r = compute_vat(**make_items(co_moving_scenes()), target_value="Benevolence", **NO_UNCERTAINTY)
    c = np.array(r["coupling"], dtype=float)
    i = {v: k for k, v in enumerate(r["values_order"])}
    assert c[i["Benevolence"], i["Universalism"]] == pytest.approx(1.0)
    assert c[i["Universalism"], i["Power"]] == pytest.approx(1.0)
    assert c[i["Hedonism"], i["Universalism"]] == pytest.approx(-1.0)
    assert np.allclose(c, c.T) and np.allclose(np.diag(c), 1.0)
    # p-values beside it (Holm-corrected over the 45 pairs), n scenes per entry
    assert r["coupling_pvalues"][i["Benevolence"]][i["Universalism"]] == pytest.approx(0.0)
    iu = np.triu_indices(10, 1)
    raw = np.array(r["coupling_pvalues_raw"], dtype=float)
    adj = np.array(r["coupling_pvalues"], dtype=float)
    assert adj[iu] == pytest.approx(holm(raw[iu])) and np.allclose(adj, adj.T, equal_nan=True)
    assert r["coupling_pvalues"][0][0] is None
    assert r["coupling_n_scenes"][0][1] == 30
    # nvat: RMS of the off-diagonal entries; hubs: row sums of |off-diagonal|
    off = c[~np.eye(10, dtype=bool)]
    assert r["nvat"] == pytest.approx(math.sqrt(np.mean(off ** 2)))
    strength = np.abs(c - np.eye(10)).sum(axis=1)
    assert [h["value"] for h in r["hubs"]] == [r["values_order"][k] for k in np.argsort(-strength, kind="stable")]
    assert r["hubs"][0]["strength"] == pytest.approx(strength.max())
    # coupling entries equal scipy's Spearman of the per-scene drifts
    scenes = co_moving_scenes()
    x = np.array([[s[v] for v in BASIC_VALUES] for s in scenes])
    assert np.allclose(c, stats.spearmanr(x).statistic)


def test_coupling_missing_cells_pairwise_complete_and_undefined():
    rng = np.random.default_rng(3)
    scenes = []
    for s in range(20):
        d = {v: float(rng.uniform(-0.2, 0.2)) for v in BASIC_VALUES if rng.random() < 0.7}
        d["Benevolence"] = 0.3 + float(rng.uniform(-0.1, 0.1))
        d.pop("Tradition", None)
        if s < 2:
            d["Tradition"] = 0.1  # Tradition: only 2 scenes
        d["Security"] = 0.05  # Security: constant per-scene drift
        scenes.append(d)
    r = compute_vat(**make_items(scenes), target_value="Benevolence", n_bootstrap=30, n_subsamples=5)
    i = {v: k for k, v in enumerate(r["values_order"])}
    assert all(x is None for x in r["coupling"][i["Tradition"]])
    assert all(x is None for x in r["coupling"][i["Security"]])
    assert r["drift"]["Tradition"] == pytest.approx(0.1)  # still has a drift
    # every defined entry is Spearman on the scenes where both values are present
    x = np.full((20, 10), np.nan)
    for s, d in enumerate(scenes):
        for v, val in d.items():
            x[s, i[v]] = val
    for a in range(10):
        for b in range(10):
            m = ~np.isnan(x[:, a]) & ~np.isnan(x[:, b])
            got = r["coupling"][a][b]
            if m.sum() < 3 or np.ptp(x[m, a]) == 0 or np.ptp(x[m, b]) == 0:
                assert got is None
            else:
                assert got == pytest.approx(stats.spearmanr(x[m, a], x[m, b]).statistic)
                if a != b:
                    assert r["coupling_pvalues_raw"][a][b] == pytest.approx(stats.spearmanr(x[m, a], x[m, b]).pvalue)
                    assert r["coupling_n_scenes"][a][b] == m.sum()
    assert_clean(r)


def test_batched_coupling_equals_scipy_on_materialised_resamples():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (25, 5)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.25] = np.nan
    idx = rng.integers(0, 25, (6, 25))
    counts = np.array([np.bincount(i, minlength=25) for i in idx], dtype=float)
    rho, _ = spearman_batch(x, counts)
    for b in range(6):
        ref, _, _ = spearman_pairwise(x[idx[b]])
        assert np.allclose(rho[b], ref, equal_nan=True)
        xb = x[idx[b]]
        m = ~np.isnan(xb[:, 0]) & ~np.isnan(xb[:, 1])
        assert rho[b, 0, 1] == pytest.approx(stats.spearmanr(xb[m, 0], xb[m, 1]).statistic)


# ---------------------------------------------------------------------------------------------
# gini, holm


def test_gini_even_and_one_hot():
    assert gini([0.3] * 9) == pytest.approx(0.0)
    assert gini([0, 0, 0, 0, 0, 0, 0, 0, 1.0]) == pytest.approx(8 / 9)
    assert gini([0.0, 0.0]) == 0.0 and gini([]) is None
    # through the metric: one non-target value pays all the tax
    drifts = {v: 0.0 for v in BASIC_VALUES}
    drifts.update(Power=0.5, Universalism=-0.2)
    r = compute_vat(**make_items([drifts] * 4), target_value="Power", **RESOLVED)
    assert r["gini"] == pytest.approx(8 / 9)
    assert r["vat"] == pytest.approx(0.4 / 9)
    even = {v: (0.1 if v != "Power" else 0.5) for v in BASIC_VALUES}
    assert compute_vat(**make_items([even] * 4), target_value="Power", **NO_UNCERTAINTY)["gini"] == pytest.approx(0.0)


def test_holm():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, 0.06 (monotone)
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([np.nan, 0.5])[0]) and holm([np.nan, 0.5])[1] == 0.5


# ---------------------------------------------------------------------------------------------
# uncertainty


def noisy_items(seed, n_scenes=40, gain=0.2, sd_scene=0.15, sd_item=0.1):
    """Target Benevolence with true drift ``gain``; Power with true drift -0.05."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("pre", "post", "value", "polarity", "scene")}
    for s in range(n_scenes):
        for v, mu in (("Benevolence", gain), ("Power", -0.05)):
            d_s = mu + rng.normal(0, sd_scene)
            for pol in (1, -1):
                e0 = rng.uniform(-0.3, 0.3)
                e1 = np.clip(e0 + d_s + rng.normal(0, sd_item), -1, 1)
                cols["pre"].append(float(rating(e0, pol)))
                cols["post"].append(float(rating(e1, pol)))
                cols["value"].append(v)
                cols["polarity"].append(pol)
                cols["scene"].append(s)
    return cols


def test_bootstrap_is_deterministic_by_seed():
    cols = make_items(co_moving_scenes(20))
    a = compute_vat(**cols, target_value="Benevolence", n_bootstrap=100, seed=7, n_subsamples=20)
    b = compute_vat(**cols, target_value="Benevolence", n_bootstrap=100, seed=7, n_subsamples=20)
    c = compute_vat(**cols, target_value="Benevolence", n_bootstrap=100, seed=8, n_subsamples=20)
    assert a["ci"] == b["ci"] and a["robustness"] == b["robustness"]
    assert a["ci"]["gain"] != c["ci"]["gain"]
    for key in ("gain", "vat", "nvat", "gini"):
        lo, hi = a["ci"][key]
        assert lo <= hi
    assert a["ci"]["gain"][0] <= a["gain"] <= a["ci"]["gain"][1]
    assert set(a["ci"]["drift"]) == set(BASIC_VALUES) and set(a["ci"]["gnd"]) == set(BASIC_VALUES) - {"Benevolence"}
    assert compute_vat(**cols, target_value="Benevolence", n_bootstrap=0, n_subsamples=0)["ci"] is None


def test_bootstrap_matches_a_naive_loop_over_resampled_scenes():
    """The vectorised bootstrap equals recomputing the metric on each resample of scenes."""
    cols = make_items(co_moving_scenes(15, seed=2))
    B, seed, conf = 40, 3, 0.9
    r = compute_vat(**cols, target_value="Benevolence", n_bootstrap=B, seed=seed, confidence=conf, n_subsamples=0)
    # the same draws as compute_vat: the first of two child seeds
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    scenes = np.unique(np.asarray(cols["scene"]))
    idx = rng.integers(0, len(scenes), size=(B, len(scenes)))
    by_scene = {s: [k for k, x in enumerate(cols["scene"]) if x == s] for s in scenes}
    stats_ = {"gain": [], "vat": [], "nvat": [], "gini": [], "Power": []}
    for b in range(B):
        rows = [(k, f"{j}-{scenes[i]}") for j, i in enumerate(idx[b]) for k in by_scene[scenes[i]]]
        sub = {key: [cols[key][k] for k, _ in rows] for key in cols}
        sub["scene"] = [name for _, name in rows]  # a scene drawn twice is two scenes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rb = compute_vat(**sub, target_value="Benevolence", **NO_UNCERTAINTY)
        rb["vat"] = rb["tax"] / rb["gain"]  # every resampled gain is positive here
        for key in ("gain", "vat", "nvat", "gini"):
            stats_[key].append(rb[key])
        stats_["Power"].append(rb["drift"]["Power"])
    q = [50 * (1 - conf), 50 * (1 + conf)]
    for key in ("gain", "vat", "nvat", "gini"):
        assert r["ci"][key] == pytest.approx(np.percentile(stats_[key], q).tolist())
    assert r["ci"]["drift"]["Power"] == pytest.approx(np.percentile(stats_["Power"], q).tolist())


def test_ci_coverage_on_simulated_data():
    """The 95% gain interval covers the true gain in about 95% of 200 simulations."""
    covered = 0
    for sim in range(200):
        r = compute_vat(**noisy_items(sim), target_value="Benevolence", n_bootstrap=200, seed=sim, n_subsamples=0)
        lo, hi = r["ci"]["gain"]
        covered += lo <= 0.2 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_robustness_subsamples():
    rng = np.random.default_rng(5)
    base = {v: 0.05 * k for k, v in enumerate(BASIC_VALUES)}
    scenes = [{v: b + float(rng.normal(0, 0.02)) for v, b in base.items()} for _ in range(30)]
    r = compute_vat(**make_items(scenes), target_value="Benevolence", n_bootstrap=0, n_subsamples=40)
    rob = r["robustness"]
    assert rob["n_subsamples"] == 40 and rob["n_scenes_per_subsample"] == 24 and rob["fraction"] == 0.8
    assert rob["min_tau"] <= rob["mean_tau"] <= 1.0 and rob["mean_tau"] > 0.8
    # pure noise drifts: ranks are unstable
    noise = [{v: float(rng.normal(0, 0.1)) for v in BASIC_VALUES} for _ in range(30)]
    for d in noise:
        d["Benevolence"] += 0.5
    r2 = compute_vat(**make_items(noise), target_value="Benevolence", n_bootstrap=0, n_subsamples=40)
    assert r2["robustness"]["mean_tau"] < rob["mean_tau"]


# ---------------------------------------------------------------------------------------------
# levels

GROUP_DRIFT = {"Openness to Change": -0.1, "Self-Enhancement": -0.2, "Conservation": 0.05, "Self-Transcendence": 0.3}


def test_higher_order_level_agrees_with_basic():
    drifts = {v: GROUP_DRIFT[higher_order_of(v)] for v in BASIC_VALUES}
    cols = make_items([drifts] * 6)
    basic = compute_vat(**cols, target_value="Benevolence", **RESOLVED)
    ho = compute_vat(**cols, target_value="Benevolence", level="higher_order", **RESOLVED)
    assert ho["target_value"] == "Self-Transcendence" and ho["values_order"] == list(HIGHER_ORDER_GROUPS)
    assert ho["gain"] == pytest.approx(basic["gain"])
    for v in BASIC_VALUES:
        g = higher_order_of(v)
        assert ho["drift"][g] == pytest.approx(basic["drift"][v])
        if g != "Self-Transcendence":
            assert ho["gnd"][g] == pytest.approx(basic["gnd"][v])
    assert ho["vat"] == pytest.approx((0.1 + 0.2 + 0.05) / 3 / 0.3)
    # the target may also be given as the group
    same = compute_vat(**cols, target_value="self transcendence", level="higher_order", **RESOLVED)
    assert same["gain"] == ho["gain"] and same["vat"] == ho["vat"]
    # group angles: circumplex consistency at the group level (Conservation is the farthest)
    assert len(ho["coupling"]) == 4


def test_micro_level_agrees_with_basic():
    drifts = {v: (0.3 if v == "Benevolence" else (0.1 if k % 2 else -0.1)) for k, v in enumerate(BASIC_VALUES)}
    scenes = [drifts] * 8
    cols = make_items(scenes, micro=True)
    basic = compute_vat(**cols, target_value="Benevolence", **RESOLVED)
    micro = compute_vat(**cols, target_value="Benevolence", level="micro", **RESOLVED)
    assert micro["values_order"] == sorted(MICRO_VALUES, key=lambda m: (BASIC_VALUES.index(MICRO_VALUES[m]),
                                                                       list(MICRO_VALUES).index(m)))
    assert micro["target_value"] == "Benevolence"
    assert set(micro["target_units"]) == {m for m, b in MICRO_VALUES.items() if b == "Benevolence"}
    assert micro["gain"] == pytest.approx(basic["gain"])
    for m, b in MICRO_VALUES.items():
        assert micro["drift"][m] == pytest.approx(basic["drift"][b])
        if b != "Benevolence":
            assert micro["gnd"][m] == pytest.approx(basic["gnd"][b])
        else:
            assert m not in micro["gnd"]
    assert micro["vat"] == pytest.approx(basic["vat"]) and basic["vat"] == pytest.approx(1 / 3)
    assert micro["gini"] == pytest.approx(basic["gini"]) == 0.0
    # a survey item as the target: that item alone; its siblings are off-target
    item = compute_vat(**cols, target_value="Honest", level="micro", **RESOLVED)
    assert item["target_units"] == ["Honest"] and item["gain"] == pytest.approx(0.3)
    assert item["gnd"]["Loyal"] == pytest.approx(1.0)
    # at the basic level a survey item reads as its basic value
    assert compute_vat(**cols, target_value="Honest", **NO_UNCERTAINTY)["target_value"] == "Benevolence"


def test_micro_level_with_coupling_and_bootstrap():
    rng = np.random.default_rng(4)
    scenes = [{v: float(rng.normal(0.3 if v == "Power" else 0.0, 0.1)) for v in BASIC_VALUES} for _ in range(10)]
    cols = make_items(scenes, micro=True)
    r = compute_vat(**cols, target_value="Wealth", level="micro", n_bootstrap=30, n_subsamples=5)
    i = {m: k for k, m in enumerate(r["values_order"])}
    # sibling survey items share their value's per-scene drift: coupling 1
    assert r["coupling"][i["Wealth"]][i["Authority"]] == pytest.approx(1.0)
    assert r["ci"]["nvat"] is not None
    assert_clean(r)


def test_micro_level_needs_the_column_and_drops_rows_without_it():
    cols = make_items([{v: 0.1 for v in BASIC_VALUES}] * 3, micro=True)
    no_micro = {k: v for k, v in cols.items() if k != "micro_value"}
    with pytest.raises(ValueError, match="micro_value"):
        compute_vat(**no_micro, target_value="Power", level="micro")
    cols["micro_value"][0] = None
    with pytest.warns(VATWarning, match="micro_value"):
        r = compute_vat(**cols, target_value="Power", level="micro", **NO_UNCERTAINTY)
    assert r["dropped"]["missing_micro_value"] == 1 and r["n_dropped"] == 1


# ---------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize("change, match", [
    (dict(polarity=[1, -1, 1, 0, -1, 1, -1]), "polarity"),
    (dict(pre=[3, 4, 2, 6, 1, 3, 3]), "outside the scale"),
    (dict(value=["Benevolence"] * 6 + ["Kindness"]), "unknown basic value"),
    (dict(scene=["s1"]), "differ in length"),
])
def test_bad_inputs_raise(change, match):
    with pytest.raises(ValueError, match=match):
        compute_vat(**dict(HAND, **change), target_value="Benevolence", **NO_UNCERTAINTY)


def test_bad_target_and_level():
    with pytest.raises(ValueError, match="no items for the target"):
        compute_vat(**HAND, target_value="Tradition", **NO_UNCERTAINTY)
    with pytest.raises(ValueError, match="level"):
        compute_vat(**HAND, target_value="Power", level="meso")

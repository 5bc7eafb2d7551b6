"""Calibration of the VAT metric on synthetic data with planted effects (issue 12's evidence).

    .venv/bin/python bench/bench_calibration.py [--seeds 400] [--scenes 60] [--only abcde] [--json out.json] [--quick]

Each check simulates many data sets (one per seed) whose true effects are known and counts how
often the metric's rule holds, printed with a 95% Wilson interval for the rate (scipy's binomtest):

(a) no-op intervention (before and after exchangeable): false-positive rate at 0.05 of the tax
    test (tax_null) and of the per-value sign-flip tests (raw, pooled over the 10 values; and the
    Holm family-wise rate). Goal: 0.03-0.07.
(b) planted gain and drifts: coverage of the 95% intervals of the gain, every drift and the tax.
    Goal: 0.92-0.98.
(c) a planted gain of 0: whenever the gain's interval spans 0, vat is None (goal: every time);
    beside it, how often the metric before issue 12 (commit c330bd4, read from git) printed a
    number for vat on the same data.
(d) two interventions on one baseline with equal gains: "same gain, different tax" flagged at
    the planted tax difference (goal >= 0.80) and for equal taxes (goal <= 0.05); and for two
    arms with no tax at all, one twice as noisy (a mean of |drift| grows with noise), with and
    without the rule's last condition (the larger tax above its chance level).
(e) crossed design (countries x topics with country effects): coverage of the drift intervals
    resampling scenes, countries, or both (shows when each unit is right; no goal).

The simulation: S scenes x 10 values, 2 items of each polarity per cell. A value's drift in a
scene is its planted drift + a scene effect shared by both interventions (sd 0.10) + an
intervention's own scene effect (sd 0.05); each item adds N(0, 0.15) to its change in expression.
Ratings are continuous on 1-5 (changes clipped to +-0.95, symmetric, about 1 item in 10^4).
Prints the machine, the load average and the wall time; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
from scipy import stats

from old_metric import load_old_compute_vat  # bench/old_metric.py: the metric before issue 12, from git

TARGET = "Benevolence"
SHARED_SD, OWN_SD, ITEM_SD = 0.10, 0.05, 0.15


def values():
    from vat_hf.values import BASIC_VALUES

    return list(BASIC_VALUES)


def simulate(rng, n_scenes, arms, countries=None, domains=None, country_sd=0.0, domain_sd=0.0, noise=None):
    """Item columns and, per arm, (pre, post) ratings. ``arms`` maps a name to its planted drift
    per value (missing values: 0). Every arm shares the baseline (pre) and the shared scene effect;
    ``noise`` scales an arm's own scene effect and item noise (default 1)."""
    vals = values()
    V = len(vals)
    cell = 4  # 2 items of each polarity
    S = n_scenes
    shared = rng.normal(0, SHARED_SD, (S, V))
    if countries:
        country_of = np.arange(S) % countries
        domain_of = (np.arange(S) // countries) % domains
        shared = shared + rng.normal(0, country_sd, (countries, V))[country_of] + rng.normal(0, domain_sd, (domains, V))[domain_of]
    value_idx = np.repeat(np.tile(np.arange(V), S), cell)
    scene_idx = np.repeat(np.arange(S), V * cell)
    polarity = np.tile(np.array([1, 1, -1, -1]), S * V)
    n = len(value_idx)
    e0 = rng.uniform(-0.05, 0.05, n)
    pre = 3 + 2 * polarity * e0
    out = {"value": np.array(vals)[value_idx].tolist(), "polarity": polarity, "scene": scene_idx}
    if countries:
        out["country"] = [f"c{c}" for c in country_of[scene_idx]]
        out["domain"] = [f"d{d}" for d in domain_of[scene_idx]]
    ratings = {}
    for name, planted in arms.items():
        mu = np.array([planted.get(v, 0.0) for v in vals])
        k = (noise or {}).get(name, 1.0)
        scene_drift = mu[None, :] + shared + rng.normal(0, k * OWN_SD, (S, V))
        # clipped symmetrically so every rating stays on the scale (about 1 item in 10^4 is clipped)
        change = np.clip(scene_drift[scene_idx, value_idx] + rng.normal(0, k * ITEM_SD, n), -0.95, 0.95)
        ratings[name] = (pre, 3 + 2 * polarity * (e0 + change))
    return out, ratings


def rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a (0 cases)"
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}] ({k}/{n})"


def planted_drifts(scale=1.0):
    """Non-target drifts of alternating sign, |drift| 0.03-0.11 (all clearly away from 0)."""
    vals = [v for v in values() if v != TARGET]
    return {v: scale * (0.03 + 0.01 * k) * (1 if k % 2 else -1) for k, v in enumerate(vals)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=400, help="data sets per check (a: 2.5x this)")
    ap.add_argument("--scenes", type=int, default=60)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="100 seeds, 300 resamples: a smoke run")
    ap.add_argument("--only", default="abcde", help="the checks to run, e.g. 'd' (default: all)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.n_bootstrap = 100, 300
    warnings.simplefilter("ignore")
    from vat_hf.metrics import compare_paired, compute_vat

    quiet = dict(n_subsamples=0, n_permutations=0, n_splits=0)
    S, B, N = args.scenes, args.n_bootstrap, args.seeds
    numbers = {"seeds": N, "scenes": S, "n_bootstrap": B}
    t_start = time.perf_counter()
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} / {os.getloadavg()[2]:.2f}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"simulation: {S} scenes x 10 values x 4 items; scene effect sd {SHARED_SD} (+{OWN_SD} per intervention), "
          f"item sd {ITEM_SD}; {B} bootstrap resamples; 95% intervals, tests at 0.05\n")

    base = {TARGET: 0.25, **planted_drifts()}  # the planted gain and drifts of (b), (d) and (e)

    # (a) no-op
    if "a" in args.only:
        n_a = int(2.5 * N)
        tax_rej = val_rej = fwer = 0
        for seed in range(n_a):
            cols, ratings = simulate(np.random.default_rng(seed), S, {"noop": {}})
            r = compute_vat(*ratings["noop"], **cols, target_value=TARGET, n_bootstrap=0, n_sign_flips=2000, seed=seed,
                            **quiet)
            tax_rej += r["tax_null"]["p_value"] <= 0.05
            raw = np.array(list(r["p_values_raw"].values()))
            val_rej += int((raw <= 0.05).sum())
            fwer += min(r["p_values"].values()) <= 0.05
        numbers["a"] = {"tax": tax_rej / n_a, "per_value": val_rej / (10 * n_a), "holm_fwer": fwer / n_a}
        print("(a) no-op intervention, rejection rate at 0.05 (goal 0.03-0.07):")
        print(f"    tax test (sign flips of whole scenes):     {rate(tax_rej, n_a)}")
        print(f"    per-value tests, raw (10 values pooled):   {rate(val_rej, 10 * n_a)}")
        print(f"    Holm family-wise (any non-target value):   {rate(fwer, n_a)}  (goal <= 0.05)")

    # (b) coverage
    if "b" in args.only:
        truth = base
        true_tax = float(np.mean([abs(d) for v, d in truth.items() if v != TARGET]))
        cov = {"gain": 0, "drift": 0, "tax": 0}
        for seed in range(N):
            cols, ratings = simulate(np.random.default_rng(10_000 + seed), S, {"arm": truth})
            r = compute_vat(*ratings["arm"], **cols, target_value=TARGET, n_bootstrap=B, seed=seed, n_sign_flips=0, **quiet)
            lo, hi = r["ci"]["gain"]
            cov["gain"] += lo <= truth[TARGET] <= hi
            cov["drift"] += sum(r["ci"]["drift"][v][0] <= truth.get(v, 0.0) <= r["ci"]["drift"][v][1] for v in values())
            lo, hi = r["ci"]["tax"]
            cov["tax"] += lo <= true_tax <= hi
        numbers["b"] = {"gain": cov["gain"] / N, "drift": cov["drift"] / (10 * N), "tax": cov["tax"] / N}
        print(f"\n(b) planted gain {truth[TARGET]} and drifts (|drift| 0.03-0.11, tax {true_tax:.3f}): coverage of 95% "
              "intervals (goal 0.92-0.98):")
        print(f"    gain:                 {rate(cov['gain'], N)}")
        print(f"    drift (10 values):    {rate(cov['drift'], 10 * N)}")
        print(f"    tax:                  {rate(cov['tax'], N)}")

    # (c) gain interval spanning 0
    if "c" in args.only:
        old = load_old_compute_vat()
        spans = vat_none = old_numeric = 0
        for seed in range(N):
            cols, ratings = simulate(np.random.default_rng(20_000 + seed), S, {"arm": {TARGET: 0.0, **planted_drifts()}})
            r = compute_vat(*ratings["arm"], **cols, target_value=TARGET, n_bootstrap=B, seed=seed, n_sign_flips=0, **quiet)
            lo, hi = r["ci"]["gain"]
            if lo <= 0 <= hi:
                spans += 1
                vat_none += r["vat"] is None and r["gnd"] is None and r["gain_status"] == "not_resolved"
                if old is not None:
                    o = old(*ratings["arm"], **cols, target_value=TARGET, n_bootstrap=B, seed=seed, n_subsamples=0,
                            n_permutations=0)
                    old_numeric += o["vat"] is not None
        numbers["c"] = {"spans": spans, "vat_none": vat_none, "old_numeric": old_numeric if old else None}
        print(f"\n(c) planted gain 0: the gain's interval spans 0 in {spans} of {N} data sets; among them")
        print(f"    vat and gnd None (status not_resolved):    {rate(vat_none, spans)}  (goal: every time)")
        if old is not None:
            print(f"    the metric before issue 12 printed a vat:  {rate(old_numeric, spans)}")

    # (d) paired comparison
    if "d" in args.only:
        more_tax = {TARGET: 0.25, **planted_drifts(scale=1.5)}
        tax_diff = float(np.mean([abs(more_tax[v]) - abs(base[v]) for v in base if v != TARGET]))
        flagged_diff = flagged_equal = flagged_noise = differs_noise = 0
        n_d = N
        for seed in range(n_d):
            cols, ratings = simulate(np.random.default_rng(30_000 + seed), S, {"a": base, "b": more_tax})
            out = compare_paired(ratings, **cols, target_value=TARGET, n_bootstrap=B, seed=seed)
            flagged_diff += bool(out["pairs"][0]["same_gain_different_tax"])
            cols, ratings = simulate(np.random.default_rng(40_000 + seed), S, {"a": base, "b": base})
            out = compare_paired(ratings, **cols, target_value=TARGET, n_bootstrap=B, seed=seed)
            flagged_equal += bool(out["pairs"][0]["same_gain_different_tax"])
            cols, ratings = simulate(np.random.default_rng(45_000 + seed), S, {"a": {TARGET: 0.25}, "b": {TARGET: 0.25}},
                                     noise={"b": 2.0})
            out = compare_paired(ratings, **cols, target_value=TARGET, n_bootstrap=B, seed=seed)
            pair = out["pairs"][0]
            flagged_noise += bool(pair["same_gain_different_tax"])
            differs_noise += bool(pair["tax_differs"] and not pair["gain_differs"])
        numbers["d"] = {"tax_difference": tax_diff, "flagged_different": flagged_diff / n_d, "flagged_equal": flagged_equal / n_d,
                        "flagged_no_tax_noisier": flagged_noise / n_d, "without_chance_guard": differs_noise / n_d}
        print("\n(d) two interventions, one baseline, equal gains (0.25): 'same gain, different tax' flagged")
        print(f"    tax difference {tax_diff:.3f} (drifts x1.5): {rate(flagged_diff, n_d)}  (goal >= 0.80)")
        print(f"    equal taxes:                      {rate(flagged_equal, n_d)}  (goal <= 0.05)")
        print(f"    no tax in either, b twice as noisy: {rate(flagged_noise, n_d)}; without the rule that the larger "
              f"tax be above its chance level: {rate(differs_noise, n_d)}")

    # (e) crossed design
    if "e" in args.only:
        n_e = max(100, N // 2)
        cov_e = {"scene": 0, "country": 0, "two_way": 0}
        for seed in range(n_e):
            cols, ratings = simulate(np.random.default_rng(50_000 + seed), 132, {"arm": base}, countries=12, domains=11,
                                     country_sd=0.04, domain_sd=0.04)
            for unit in cov_e:
                r = compute_vat(*ratings["arm"], **cols, target_value=TARGET, n_bootstrap=min(B, 500), seed=seed,
                                resample=unit, n_sign_flips=0, **quiet)
                cov_e[unit] += sum(r["ci"]["drift"][v][0] <= base.get(v, 0.0) <= r["ci"]["drift"][v][1] for v in values())
        numbers["e"] = {u: k / (10 * n_e) for u, k in cov_e.items()}
        print("\n(e) 12 countries x 11 topics (132 scenes), country and topic effects sd 0.04: drift coverage (10 values)")
        for unit, k in cov_e.items():
            print(f"    resampling {unit:<8} {rate(k, 10 * n_e)}")

    wall = time.perf_counter() - t_start
    numbers["wall_s"] = wall
    print(f"\nwall time {wall:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        from vat_hf.io import write_json

        write_json(args.json, numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the full VAT metric, side by side with the metric before issue 12, in one run.

    python bench/bench_metric.py [--repeats 5] [--n-bootstrap 1000] [--n-permutations 200] [--level basic]

Synthetic items: 30,000 items, each with a random scene (264), one of the 10 basic values and a
polarity (so not every scene has every value x polarity cell), ratings 1-5 with a shift toward
the target (Benevolence), a circumplex-shaped side effect and noise. Times, median of
``--repeats`` runs interleaved (old, new, old, new, ...):

* ``compute_vat`` now (bootstrap, nvat null, 5,000 sign flips, split halves, subsamples) and at
  commit c330bd4 (read from git; bootstrap, nvat null, subsamples, Wilcoxon tests);
* a paired comparison of 3 interventions on the same items (``compare_paired``; the old code had
  no paired comparison, so beside it: the old ``compute_vat`` of the 3 interventions).

Goals (issue 12): the metric under 2 s, the paired comparison under 3 s on a 2-core machine.
Prints the machine and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

from old_metric import OLD_COMMIT, load_old_compute_vat


def synthetic_items(n_items: int = 30_000, n_scenes: int = 264, seed: int = 0, target: str = "Benevolence",
                    strength: float = 1.0):
    from vat_hf.values import BASIC_VALUES, MICRO_VALUES, circumplex_cosine

    rng = np.random.default_rng(seed)
    scene = rng.integers(0, n_scenes, n_items)
    v = rng.integers(0, len(BASIC_VALUES), n_items)
    values = np.array(BASIC_VALUES)[v]
    polarity = rng.choice([1, -1], n_items)
    micros = {b: [m for m, bb in MICRO_VALUES.items() if bb == b] for b in BASIC_VALUES}
    micro = np.array([micros[b][rng.integers(len(micros[b]))] for b in values])
    cos = np.array([circumplex_cosine(b, target) for b in BASIC_VALUES])[v]
    scene_effect = rng.normal(0, 0.3, n_scenes)[scene]
    shift = strength * np.where(values == target, 0.8, 0.2 * cos) * (1 + scene_effect)
    pre = rng.integers(1, 6, n_items).astype(float)
    post = np.clip(np.round(pre + polarity * shift + rng.normal(0, 0.6, n_items)), 1, 5)
    return {"pre": pre, "post": post, "value": values.tolist(), "polarity": polarity,
            "scene": [f"scene-{s:03d}" for s in scene], "micro_value": micro.tolist()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=30_000)
    ap.add_argument("--scenes", type=int, default=264)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--n-permutations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--level", default="basic", choices=["basic", "higher_order", "micro"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from vat_hf.metrics import compare_paired, compute_vat

    old = load_old_compute_vat()
    cols = synthetic_items(args.items, args.scenes)
    if args.level != "micro":
        cols.pop("micro_value")
    kw = dict(target_value="Benevolence", n_bootstrap=args.n_bootstrap, level=args.level,
              n_permutations=args.n_permutations)
    # three interventions on the same items and baseline, of different strengths
    posts = {f"arm-{k}": synthetic_items(args.items, args.scenes, strength=s)["post"] for k, s in enumerate((1.0, 0.6, 1.4))}
    arms = {name: (cols["pre"], post) for name, post in posts.items()}
    item_cols = {k: cols[k] for k in ("value", "polarity", "scene")}

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"machine: {cpu_name()}, {cores} cores available, {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"load average before: {load()}")
    compute_vat(**cols, **dict(kw, n_bootstrap=10))  # warm-up (imports, caches)
    if old:
        old(**cols, **dict(kw, n_bootstrap=10))
    compare_paired(arms, **item_cols, target_value="Benevolence", n_bootstrap=10)

    times = {"new": [], "old": [], "paired": [], "old_3x": []}
    result = None
    for _ in range(args.repeats):
        if old:
            times["old"].append(timed(lambda: old(**cols, **kw))[0])
        t, result = timed(lambda: compute_vat(**cols, **kw))
        times["new"].append(t)
        if old:
            times["old_3x"].append(timed(lambda: [old(**{**cols, "post": p}, **kw) for p in posts.values()])[0])
        t, paired = timed(lambda: compare_paired(arms, **item_cols, target_value="Benevolence",
                                                 n_bootstrap=args.n_bootstrap))
        times["paired"].append(t)
    med = {k: statistics.median(v) for k, v in times.items() if v}

    print(f"data: {result['n_items']} items, {result['n_scenes']} scenes, level {args.level}; n_bootstrap={args.n_bootstrap}, "
          f"nvat shuffles {args.n_permutations}, sign flips {result['permutation_test']['n_permutations']}, "
          f"split halves {result['split_half']['n_splits']}, subsamples {result['robustness']['n_subsamples']}")
    fmt_runs = lambda xs: ", ".join(f"{t:.2f}" for t in xs)  # noqa: E731
    print(f"compute_vat now:            median of {args.repeats} {med['new']:.2f} s  (runs {fmt_runs(times['new'])}; goal < 2 s)")
    if old:
        print(f"compute_vat at {OLD_COMMIT}:     median of {args.repeats} {med['old']:.2f} s  (runs {fmt_runs(times['old'])}); "
              f"now / then = {med['new'] / med['old']:.2f}")
    print(f"compare_paired, 3 arms:     median of {args.repeats} {med['paired']:.2f} s  (runs {fmt_runs(times['paired'])}; goal < 3 s)")
    if old:
        print(f"3 x compute_vat at {OLD_COMMIT}: median of {args.repeats} {med['old_3x']:.2f} s (no paired comparison then)")
    print(f"result: gain {result['gain']:+.3f} ({result['gain_status']}), tax {result['tax']:.3f} "
          f"(chance {result['tax_null']['mean']:.3f}), vat {result['vat']:.3f}, nvat {result['nvat']:.3f} "
          f"(chance {result['nvat_null']['mean']:.3f}); paired: "
          + ", ".join(f"{p['a']}-{p['b']} {p['verdict']}" for p in paired["pairs"]))
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()

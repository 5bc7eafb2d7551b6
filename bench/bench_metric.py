"""Benchmark the full VAT metric: 30,000 items over 264 scenes, 1,000 bootstrap resamples.

    python bench/bench_metric.py [--repeats 5] [--n-bootstrap 1000] [--level basic]

Synthetic items: each item gets a random scene, one of the 10 basic values and a polarity
(so not every scene has every value x polarity cell), ratings 1-5 with a shift toward the
target (Benevolence), a circumplex-shaped side effect and noise. Prints the median wall time of
``compute_vat`` (bootstrap, coupling, robustness and p-values included) and the machine.
Goal: under 5 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def synthetic_items(n_items: int = 30_000, n_scenes: int = 264, seed: int = 0, target: str = "Benevolence"):
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
    shift = np.where(values == target, 0.8, 0.2 * cos) * (1 + scene_effect)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=30_000)
    ap.add_argument("--scenes", type=int, default=264)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--level", default="basic", choices=["basic", "higher_order", "micro"])
    args = ap.parse_args()

    from vat_hf.metrics import compute_vat

    cols = synthetic_items(args.items, args.scenes)
    if args.level != "micro":
        cols.pop("micro_value")
    compute_vat(**cols, target_value="Benevolence", n_bootstrap=10, level=args.level)  # warm-up (imports, caches)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = compute_vat(**cols, target_value="Benevolence", n_bootstrap=args.n_bootstrap, level=args.level)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"machine: {cpu_name()}, {cores} cores available, {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"data: {result['n_items']} items, {result['n_scenes']} scenes, level {args.level}; "
          f"n_bootstrap={args.n_bootstrap}, robustness {result['robustness']['n_subsamples']} subsamples")
    print(f"runs (s): {', '.join(f'{t:.2f}' for t in times)}")
    print(f"median of {args.repeats}: {med:.2f} s  (goal < 5 s)  gain {result['gain']:.3f}, vat {result['vat']:.3f}, "
          f"nvat {result['nvat']:.3f} [{result['ci']['nvat'][0]:.3f}, {result['ci']['nvat'][1]:.3f}]")


if __name__ == "__main__":
    main()

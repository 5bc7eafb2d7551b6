"""Benchmark: import the full ValueActionLens corpus and validate it (target: under 20 s).

    .venv/bin/python bench/bench_data.py [--corpus PATH] [--repeats 3] [--check]

Each repetition imports the corpus into a fresh, empty datasets cache (the CSV is parsed from
scratch; nothing is reused between runs), which includes parsing every ``generation_prompt`` and
validating every item (``vat_hf.data.schema.validate_items``, via ``to_dataset``). ``--check`` also
times ``vat_hf.data.quality.check_items`` on the result. Prints one line per run and the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "value-action-lens" / "value_action_gap_full_data_generation.csv"
TARGET_S = 20.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="also time the quality checks")
    args = parser.parse_args(argv)
    if not Path(args.corpus).exists() and "://" not in args.corpus:
        print(f"corpus not found at {args.corpus} (it lives in ../shared beside the repo)", file=sys.stderr)
        return 2

    import datasets

    from vat_hf.data.lens import import_value_action_lens
    from vat_hf.data.quality import check_items
    from vat_hf.data.schema import validate_items

    datasets.disable_progress_bars()
    times, check_times = [], []
    for run in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            result = import_value_action_lens(args.corpus, cache_dir=cache)
            elapsed = time.perf_counter() - start
        times.append(elapsed)
        line = f"run {run + 1}: import + validate {elapsed:.2f} s ({result.n_recovered} of {result.n_rows} rows recovered)"
        if args.check:
            start = time.perf_counter()
            report = check_items(result.dataset)
            check_times.append(time.perf_counter() - start)
            line += f"; check_items {check_times[-1]:.2f} s (ok={report['ok']})"
        print(line, flush=True)
    start = time.perf_counter()
    validate_items(result.dataset)
    revalidate = time.perf_counter() - start
    median = statistics.median(times)
    print(f"median import + validate: {median:.2f} s over {len(times)} runs (target < {TARGET_S:.0f} s); "
          f"re-validating the imported set alone: {revalidate:.2f} s"
          + (f"; median check_items: {statistics.median(check_times):.2f} s" if check_times else ""))
    return 0 if median < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())

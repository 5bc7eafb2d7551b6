"""What a sweep costs, and what sharing the baseline saves.

    python bench/bench_sweep.py                                   # the grid recipe, as it is
    python bench/bench_sweep.py --max-scenes 2 --separate 3       # quicker
    python bench/bench_sweep.py --sweep-dir outputs/grid-smollm2  # time the separate runs only

1. Runs the sweep recipe (default ``recipes/grid/smollm2_prompt_steering.yaml``) into a fresh
   folder: its wall time, each cell's time, and how long the shared baseline took to judge (the
   first cell of the model judges it; every other cell reads it back from the judgment cache).
   Without the sharing every cell would judge it again: ``wall + (cells - 1) x baseline``.
2. Measures that directly for the first ``--separate`` cells: each is run again as its own
   single-experiment recipe with its own output folder and judgment cache (what reproducing the
   grid meant before sweeps), side by side with the same cells' times in the sweep.

Prints a table and writes ``--out`` (default ``outputs/bench/sweep.json``) with ``uptime`` before
and after each phase (the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average: {os.getloadavg()}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(REPO / "recipes/grid/smollm2_prompt_steering.yaml"))
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--separate", type=int, default=2, help="cells rerun as separate experiments (0: none)")
    parser.add_argument("--sweep-dir", default=None, help="a finished sweep of this recipe: skip phase 1")
    parser.add_argument("--out", default=str(REPO / "outputs/bench/sweep.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vat_hf.io import read_json, write_json
    from vat_hf.pipeline import ExperimentRunner
    from vat_hf.sweep import SweepRunner, load_recipe, parse_only

    config = load_recipe(args.recipe)
    if args.max_scenes:
        config.data.max_scenes = args.max_scenes
    report = {"recipe": args.recipe, "max_scenes": config.data.max_scenes}
    scratch = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    if args.sweep_dir:
        config.output_dir = args.sweep_dir
        summary = read_json(Path(args.sweep_dir) / "grid" / "summary.json")
        wall = summary["run"]["wall_seconds"]
    else:
        config.output_dir = str(scratch / "sweep")
        report["uptime_before_sweep"] = uptime()
        started = time.perf_counter()
        summary = SweepRunner(config, only=parse_only(args.only), progress=False).run()
        wall = time.perf_counter() - started
        report["uptime_after_sweep"] = uptime()
    cells = [r for r in summary["cells"] if r.get("seconds")]
    baseline = sum(b["judged_seconds"] for b in summary["baselines"].values())
    report.update(n_cells=len(cells), sweep_wall_s=wall, baseline_judged_s=baseline,
                  cell_s_median=statistics.median(r["seconds"] for r in cells) if cells else None,
                  without_shared_baseline_s=wall + (len(cells) - len(summary["baselines"])) * baseline / max(1, len(summary["baselines"])))

    separate = []
    by_id = {c.id: c for c in config.cells()}
    if args.separate:
        report["uptime_before_separate"] = uptime()
        for row in cells[: args.separate]:
            cfg = config.cell_config(by_id[row["cell"]])
            cfg.output_dir = str(scratch / "separate" / row["cell"])
            cfg.eval.cache_dir = str(scratch / "separate" / row["cell"] / "cache")  # its own cache, as a lone recipe
            started = time.perf_counter()
            ExperimentRunner(cfg, progress=False).run()
            separate.append({"cell": row["cell"], "separate_s": time.perf_counter() - started, "in_sweep_s": row["seconds"]})
        report["uptime_after_separate"] = uptime()
    report["separate"] = separate
    shutil.rmtree(scratch, ignore_errors=True)
    write_json(args.out, report)

    print(f"sweep: {len(cells)} cells in {wall / 60:.1f} min (median cell {report['cell_s_median'] or 0:.0f} s); "
          f"the baseline judged once in {baseline:.0f} s")
    print(f"without the shared baseline (every cell judges it): about {report['without_shared_baseline_s'] / 60:.1f} min "
          f"({report['without_shared_baseline_s'] / wall:.2f}x)")
    for s in separate:
        print(f"  {s['cell']}: alone {s['separate_s']:.0f} s, in the sweep {s['in_sweep_s']:.0f} s "
              f"({s['separate_s'] / s['in_sweep_s']:.2f}x)")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("uptime")}, indent=1))
    return report


if __name__ == "__main__":
    main()

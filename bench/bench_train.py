"""Overhead of vat-hf's training entry points against TRL's own scripts, step for step.

For SFT and DPO with LoRA, the same steps on the same model and the same examples run through

* ours: ``python -m vat_hf.train.{sft,dpo} --config RECIPE`` (what ``accelerate launch -m ...`` runs), and
* TRL's: ``python -m trl.scripts.{sft,dpo}`` (the script ``trl sft`` / ``trl dpo`` launch), reading
  the same examples from a JSONL folder written by :mod:`vat_hf.train.data`,

side by side (each run a pair, alternating which goes first), ``--runs`` times, every run a fresh
process. Reported: median (and minimum) seconds per optimizer step (the Trainer's
``train_runtime / max_steps``), our overhead in per cent of TRL's (from the medians, from the
minima, and the median of the paired ratios: on a machine shared with other jobs the latter two
are the meaningful ones), and the peak resident memory of each process (``wait4`` rusage). The target is
an overhead within 5%: both run the same TRL trainer, ours only adds the checks and the model card
before and after training.

The model is a random-initialised small Llama with SmolLM2's tokenizer (``--hidden-size``,
``--layers``; nothing is downloaded), or any local folder given with ``--model`` (TRL's script
must be able to load it as it is).

    python bench/bench_train.py                         # 5 runs x 2 entry points x SFT and DPO
    python bench/bench_train.py --runs 3 --steps 10 --methods dpo
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)")

# The training keys both entry points get, as TRL flags.
COMMON = {
    "use_cpu": "true", "bf16": "false", "activation_checkpointing": "false", "dtype": "float32",
    "use_peft": "true", "lora_r": "16", "lora_alpha": "32", "lora_dropout": "0.0", "lora_target_modules": "all-linear",
    "per_device_train_batch_size": "4", "gradient_accumulation_steps": "1", "learning_rate": "1e-4",
    "lr_scheduler_type": "constant", "max_length": "256", "logging_steps": "1", "save_strategy": "no",
    "report_to": "none", "seed": "0", "dataloader_num_workers": "0",
}


def flags(mapping):
    return [x for key, value in mapping.items() for x in (f"--{key}", str(value))]


def run(cmd, env) -> dict:
    """Run one training process; its per-step time and peak RSS."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode(errors="replace")
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    found = RUNTIME.findall(text)
    if not found:
        raise RuntimeError(f"no train_runtime in the output of {' '.join(cmd)}:\n{text[-2000:]}")
    return {"train_runtime_s": float(found[-1]), "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local model folder (default: a random small Llama built here)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    parser.add_argument("--target-value", default="Benevolence")
    parser.add_argument("--output", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    from vat_hf.train.data import dpo_dataset, load_training_items, sft_dataset
    from vat_hf.io import write_json

    work = Path(tempfile.mkdtemp(prefix="vat-bench-train-"))
    if args.model:
        model = str(Path(args.model).resolve())
    else:
        from vat_hf.testing import make_tiny_model_dir

        model = str(make_tiny_model_dir(work / "model", hidden_size=args.hidden_size, num_layers=args.layers))
    items = load_training_items("builtin")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    table = {}
    for method in args.methods:
        data_dir = work / f"{method}-data"
        data_dir.mkdir()
        rows = (sft_dataset if method == "sft" else dpo_dataset)(items, args.target_value)
        rows.to_json(str(data_dir / "train.jsonl"))
        common = {**COMMON, "model_name_or_path": model, "max_steps": args.steps}
        if method == "dpo":
            common["beta"] = "0.1"
        recipe = work / f"{method}.yaml"
        recipe.write_text(yaml.safe_dump({"target_value": args.target_value, "data_source": "builtin"}))
        commands = {
            "vat_hf": [sys.executable, "-m", f"vat_hf.train.{method}", "--config", str(recipe),
                       *flags({**common, "output_dir": str(work / f"out-{method}-vat")})],
            "trl": [sys.executable, "-m", f"trl.scripts.{method}", "--dataset_name", str(data_dir),
                    *flags({**common, "output_dir": str(work / f"out-{method}-trl")})],
        }
        runs = {name: [] for name in commands}
        for i in range(args.runs):
            # Side by side, alternating which goes first, so a drifting machine load biases neither.
            for name, cmd in (list(commands.items()) if i % 2 == 0 else list(commands.items())[::-1]):
                result = run(cmd, env)
                runs[name].append(result)
                print(f"{method} run {i + 1}/{args.runs} {name:7s} {result['train_runtime_s'] / args.steps:.4f} s/step "
                      f"peak {result['peak_rss_mb']:.0f} MB", flush=True)
        summary = {}
        for name, results in runs.items():
            per_step = [r["train_runtime_s"] / args.steps for r in results]
            summary[name] = {"median_s_per_step": statistics.median(per_step), "s_per_step": per_step,
                             "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results),
                             "median_wall_s": statistics.median(r["wall_s"] for r in results)}
        for name, results in runs.items():
            summary[name]["min_s_per_step"] = min(summary[name]["s_per_step"])
        summary["overhead_pct"] = 100 * (summary["vat_hf"]["median_s_per_step"] / summary["trl"]["median_s_per_step"] - 1)
        # Less sensitive to a machine shared with other jobs: the best run of each, and the
        # median of the per-run ratios (each pair ran back to back).
        summary["overhead_pct_min"] = 100 * (summary["vat_hf"]["min_s_per_step"] / summary["trl"]["min_s_per_step"] - 1)
        ratios = [a / b for a, b in zip(summary["vat_hf"]["s_per_step"], summary["trl"]["s_per_step"])]
        summary["overhead_pct_paired_median"] = 100 * (statistics.median(ratios) - 1)
        table[method] = summary
    report = {"model": model if args.model else f"random Llama h={args.hidden_size} L={args.layers}, SmolLM2 tokenizer",
              "steps": args.steps, "runs": args.runs, "cpu_count": os.cpu_count(),
              "load_avg_at_end": os.getloadavg(), "results": table}
    print("\n| method | entry point | median s/step | min s/step | overhead: median / min / paired | peak RSS (MB) |"
          "\n|---|---|---|---|---|---|")
    for method, summary in table.items():
        for name in ("trl", "vat_hf"):
            s = summary[name]
            over = (f"{summary['overhead_pct']:+.1f}% / {summary['overhead_pct_min']:+.1f}% / "
                    f"{summary['overhead_pct_paired_median']:+.1f}%") if name == "vat_hf" else ""
            print(f"| {method} | {name} | {s['median_s_per_step']:.4f} | {s['min_s_per_step']:.4f} | {over} | "
                  f"{s['peak_rss_mb_max']:.0f} |")
    if args.output:
        write_json(args.output, report)
        print(f"-> {args.output}")
    return report


if __name__ == "__main__":
    main()

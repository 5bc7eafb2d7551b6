"""float32 against bfloat16 on this CPU: the evidence for the CPU default dtype (issue 16, part 7).

The embedded SmolLM2-135M-Instruct judges the built-in test items in float32 and in bfloat16,
side by side in one process (rounds alternate; medians of ``--repeats`` are reported, wall clock
and CPU time). Reported: items/s of each and the ratio, argmax agreement, the largest and mean
absolute difference of the expected rating, the largest difference of an option probability.
With ``--vat`` the demo's baseline and its prompt intervention (value system prompt + 4
demonstrations toward Benevolence) are judged both ways and the VAT result of each dtype is
shown side by side (gain, tax, the largest drift difference); the paired test of the two runs
belongs to the statistics layer.

    .venv/bin/python bench/bench_dtype.py              # --n-items 0 (all 440) --repeats 3 --threads 1 --vat

The CPU's native bf16 support (``vat_hf.models.loading.cpu_bf16_capability``) is recorded: on a
CPU without AMX-BF16 or AVX512-BF16, bf16 matrix products are emulated and slower than fp32.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def judge(loaded, prompt, items):
    from vat_hf.evaluation import Evaluator

    evaluator = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, progress=False)
    start, cpu = time.perf_counter(), time.process_time()
    records = evaluator.judge(items)
    return records, {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def agreement(a, b):
    pairs = [(x, y) for x, y in zip(a, b) if x["rating"] is not None and y["rating"] is not None]
    rating = [abs(x["rating"] - y["rating"]) for x, y in pairs]
    return {"n": len(pairs), "argmax_agreement": sum(x["argmax"] == y["argmax"] for x, y in pairs) / len(pairs),
            "argmax_disagreements": sum(x["argmax"] != y["argmax"] for x, y in pairs),
            "max_abs_rating_diff": max(rating), "mean_abs_rating_diff": statistics.fmean(rating),
            "max_prob_diff": max(abs(p - q) for x, y in pairs for p, q in zip(x["probs"], y["probs"]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, default=0, help="first N built-in test items (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vat", action="store_true", help="also the demo's prompt intervention and its VAT both ways")
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "bench" / "dtype.json")
    args = parser.parse_args(argv)

    import torch

    from vat_hf.data import load_items
    from vat_hf.interventions import value_prompt
    from vat_hf.io import write_json
    from vat_hf.models import load_model
    from vat_hf.models.loading import cpu_bf16_capability
    from vat_hf.prompts import JudgePrompt

    torch.set_num_threads(args.threads)
    items = load_items("builtin")
    test = [i for i in items if i["split"] == "test"]
    test = test[:args.n_items] if args.n_items else test
    train = [i for i in items if i["split"] == "train"]
    models = {name: load_model(None, device="cpu", dtype=name) for name in ("float32", "bfloat16")}
    baseline = JudgePrompt()
    for loaded in models.values():  # warm-up
        judge(loaded, baseline, test[:8])
    runs = {name: [] for name in models}
    records = {}
    for _ in range(args.repeats):
        for name, loaded in models.items():
            records[name], timing = judge(loaded, baseline, test)
            runs[name].append(timing)
    median = {name: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_seconds")} for name, rs in runs.items()}
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "cpu_bf16": cpu_bf16_capability(),
                    "load_average_at_end": os.getloadavg()},
        "model": "SmolLM2-135M-Instruct (embedded default), CPU", "n_items": len(test), "rounds": args.repeats,
        "runs": runs,
        "items_per_s": {k: len(test) / v["seconds"] for k, v in median.items()},
        "items_per_cpu_s": {k: len(test) / v["cpu_seconds"] for k, v in median.items()},
        "bf16_speedup": median["float32"]["seconds"] / median["bfloat16"]["seconds"],
        "bf16_speedup_cpu_time": median["float32"]["cpu_seconds"] / median["bfloat16"]["cpu_seconds"],
        "baseline": agreement(records["float32"], records["bfloat16"]),
    }
    if args.vat:
        from vat_hf.metrics.paired import score_judgments

        prompt = value_prompt("Benevolence", train, k_shots=4, seed=0, name="prompt-k4")
        post = {name: judge(loaded, prompt, test)[0] for name, loaded in models.items()}
        report["prompt_k4"] = agreement(post["float32"], post["bfloat16"])
        vat = {name: score_judgments(records[name], post[name], "Benevolence", n_bootstrap=args.n_bootstrap,
                                     n_subsamples=0, n_permutations=0) for name in models}
        drifts = [abs(vat["float32"]["drift"][v] - vat["bfloat16"]["drift"][v]) for v in vat["float32"]["drift"]
                  if vat["float32"]["drift"][v] is not None and vat["bfloat16"]["drift"][v] is not None]
        report["vat"] = {name: {k: v.get(k) for k in ("gain", "vat", "tax", "gain_status", "n_items")}
                         for name, v in vat.items()}
        report["vat"]["max_abs_drift_diff"] = max(drifts)
        report["vat"]["drift"] = {name: v["drift"] for name, v in vat.items()}
    write_json(args.output, report)
    for key in ("items_per_s", "items_per_cpu_s", "bf16_speedup", "bf16_speedup_cpu_time", "baseline", "prompt_k4", "vat"):
        if key in report:
            print(key, report[key] if key != "vat" else {k: v for k, v in report["vat"].items() if k != "drift"})
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()

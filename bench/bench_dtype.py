"""float32 against bfloat16 on this CPU: the evidence for the CPU default dtype (issue 16, part 7).

The embedded SmolLM2-135M-Instruct judges the built-in test items in float32 and in bfloat16,
side by side in one process (rounds alternate; medians of ``--repeats`` are reported, wall clock
and CPU time). Reported: items/s of each and the ratio, argmax agreement, the largest and mean
absolute difference of the expected rating, the largest difference of an option probability.
With ``--vat`` the demo's baseline and its interventions are judged both ways: the prompt
intervention (value system prompt + 4 demonstrations toward Benevolence) and, with
``--demo-dir`` (the output folder of ``make demo``), its trained SFT and DPO adapters
(``<demo-dir>/adapters/<name>``). Each intervention's VAT result in each dtype is shown side
by side, and the two are compared with the paired comparison
(:func:`vat_hf.metrics.paired.compare_judgments`, arms ``(pre_fp32, post_fp32)`` and
``(pre_bf16, post_bf16)`` on the same items, whole scenes resampled): the gain, tax and VAT
differences with their intervals and the verdict.

    .venv/bin/python bench/bench_dtype.py --vat --demo-dir outputs/demo   # all 440 items, 3 repeats, 1 thread

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


def judge(loaded, prompt, items, model=None):
    from vat_hf.evaluation import Evaluator

    evaluator = Evaluator(model if model is not None else loaded.model, loaded.tokenizer, prompt=prompt, progress=False)
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
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--demo-dir", type=Path, default=None,
                        help="make demo's output folder: also its trained adapters (adapters/sft-lora, adapters/dpo-lora)")
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
        from vat_hf.metrics.paired import compare_judgments, score_judgments

        posts = {"prompt-k4": {name: judge(loaded, value_prompt("Benevolence", train, k_shots=4, seed=0, name="prompt-k4"),
                                           test)[0] for name, loaded in models.items()}}
        report["prompt_k4"] = agreement(posts["prompt-k4"]["float32"], posts["prompt-k4"]["bfloat16"])
        for adapter in sorted((args.demo_dir / "adapters").iterdir()) if args.demo_dir else []:
            if not (adapter / "adapter_config.json").exists():
                continue
            from peft import PeftModel

            posts[adapter.name] = {}
            for name, loaded in models.items():
                peft = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
                posts[adapter.name][name] = judge(loaded, baseline, test, model=peft)[0]
                loaded.model = peft.unload()  # the bare base model again, for the next adapter
        kwargs = dict(n_bootstrap=args.n_bootstrap, seed=0)
        report["vat"], report["paired"] = {}, {}
        for intervention, post in posts.items():
            vat = {name: score_judgments(records[name], post[name], "Benevolence", n_subsamples=0, n_permutations=0,
                                     **kwargs)
                   for name in models}
            report["vat"][intervention] = {name: {k: v.get(k) for k in ("gain", "gain_ci", "tax", "tax_ci", "vat",
                                                                         "vat_ci", "gain_status", "n_items")}
                                           for name, v in vat.items()}
            report["vat"][intervention]["argmax_agreement_post"] = agreement(post["float32"], post["bfloat16"])
            paired = compare_judgments({"fp32": (records["float32"], post["float32"]),
                                        "bf16": (records["bfloat16"], post["bfloat16"])}, "Benevolence", **kwargs)
            pair = paired["pairs"][0]
            report["paired"][intervention] = {k: pair.get(k) for k in (
                "a", "b", "gain_diff", "gain_diff_ci", "tax_diff", "tax_diff_ci", "tax_diff_test", "vat_diff",
                "vat_diff_ci", "gain_differs", "tax_differs", "verdict")}
            report["paired"][intervention]["method"] = paired.get("method")
    write_json(args.output, report)
    for key in ("items_per_s", "items_per_cpu_s", "bf16_speedup", "bf16_speedup_cpu_time", "baseline", "prompt_k4"):
        if key in report:
            print(key, report[key])
    for intervention, pair in report.get("paired", {}).items():
        vat = report["vat"][intervention]
        print(f"{intervention}: fp32 gain {vat['float32']['gain']} tax {vat['float32']['tax']} vat {vat['float32']['vat']} | "
              f"bf16 gain {vat['bfloat16']['gain']} tax {vat['bfloat16']['tax']} vat {vat['bfloat16']['vat']}")
        print(f"  paired fp32 - bf16: gain {pair['gain_diff']} {pair['gain_diff_ci']}, tax {pair['tax_diff']} "
              f"{pair['tax_diff_ci']}, vat {pair['vat_diff']} {pair['vat_diff_ci']}: {pair['verdict']}")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()

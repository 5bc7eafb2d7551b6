"""Side by side on the same items: the transformers evaluator, vLLM offline and vLLM served
(issue 16, part 5). Items/s (median of ``--repeats`` passes, all in one run) and the agreement
of each backend's judgments with the transformers evaluator's.

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python bench/bench_vllm.py          # 160 built-in items, 3 repeats
    HF_HUB_OFFLINE=1 .venv-vllm/bin/python bench/bench_vllm.py --n-items 32 --repeats 1   # a quick check

It runs in the real-vLLM environment (``make setup-vllm``). Each pass judges every item anew
(no judgment cache) and starts from an empty vLLM prefix cache (``reset_prefix_cache``: the
engine's, and the server's ``/reset_prefix_cache``, which vLLM opens with
``VLLM_SERVER_DEV_MODE=1``), so repeats measure the same work; the shared prompt prefix is still
reused within a pass, as in a real evaluation. The served backend sends ``--concurrency``
requests at a time to vLLM's OpenAI server on 127.0.0.1 (started here and stopped at the end).

On this 2-core CPU vLLM's engine computes on one core (it keeps the other for its front end,
docs/vllm.md), so the transformers evaluator gets ``--threads 1`` by default too. On a GPU
machine (bench/gpu_checks.sh) pass ``--device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def agreement(reference, records):
    pairs = [(a, b) for a, b in zip(reference, records) if a["rating"] is not None and b["rating"] is not None]
    return {"n": len(pairs), "argmax_agreement": sum(a["argmax"] == b["argmax"] for a, b in pairs) / len(pairs),
            "max_abs_prob_diff": max(abs(p - q) for a, b in pairs for p, q in zip(a["probs"], b["probs"])),
            "max_abs_rating_diff": max(abs(a["rating"] - b["rating"]) for a, b in pairs),
            "score_paths": sorted({str(b.get("score_path")) for _, b in pairs})}


def random_smollm2(tokenizer_dir: Path, folder: Path) -> Path:
    """SmolLM2-135M-Instruct's architecture with random weights (seed 0) and its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def timed(judge, items, repeats, before=None):
    runs, records = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        records = judge(items)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return records, {"seconds": runs, "median_s": median, "items_per_s": len(items) / median}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--random-model", action="store_true",
                        help="a random-weight model of SmolLM2-135M's shape, built here with --tokenizer's vocabulary "
                             "(for a machine without the embedded model: bench/gpu_checks.sh); speed and the "
                             "backends' agreement do not depend on the weights")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for --random-model")
    parser.add_argument("--n-items", type=int, default=160, help="first N built-in test items (0: all 440)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the transformers evaluator")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to the server")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("OUT", REPO / "outputs" / "bench")) /
                        "vllm_side_by_side.json")
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(REPO / "tests_vllm"))
    from helpers import vllm_server

    from vat_hf.data import load_items
    from vat_hf.evaluation import Evaluator
    from vat_hf.evaluation.served import ServedEvaluator
    from vat_hf.evaluation.vllm_backend import VLLMEvaluator, shutdown_engine
    from vat_hf.io import write_json
    from vat_hf.models import embedded_model_dir, load_model

    torch.set_num_threads(args.threads)
    if args.random_model:
        model_dir = random_smollm2(Path(args.tokenizer or embedded_model_dir()), args.output.parent / "random-smollm2")
    else:
        model_dir = Path(args.model) if args.model else embedded_model_dir()
    items = [i for i in load_items("builtin") if i["split"] == "test"]
    items = items[:args.n_items] if args.n_items else items
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                          "device": args.device, "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                          "load_average_at_start": os.getloadavg()},
              "model": str(model_dir), "dtype": args.dtype, "n_items": len(items), "repeats": args.repeats,
              "concurrency": args.concurrency, "speed": {}, "agreement_with_transformers": {}}

    loaded = load_model(str(model_dir), device=args.device, dtype=args.dtype)
    hf = Evaluator(loaded.model, loaded.tokenizer, progress=False)
    hf.judge(items[:8])  # warm-up
    reference, report["speed"]["transformers"] = timed(hf.judge, items, args.repeats)
    tokenizer = loaded.tokenizer
    del loaded, hf

    started = time.perf_counter()
    offline = VLLMEvaluator(str(model_dir), dtype=args.dtype, tokenizer=tokenizer, progress=False)
    offline.llm  # noqa: B018 - start the engine outside the timing
    report["vllm_engine_start_s"] = time.perf_counter() - started
    offline.judge(items[:8])
    records, report["speed"]["vllm_offline"] = timed(offline.judge, items, args.repeats,
                                                     before=offline.llm.reset_prefix_cache)
    report["agreement_with_transformers"]["vllm_offline"] = agreement(reference, records)
    shutdown_engine()

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # opens POST /reset_prefix_cache
    log = args.output.parent / "vllm_bench_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with vllm_server(model_dir, log, api_key="bench", served_name="bench",
                     extra_args=["--dtype", args.dtype]) as (base, seconds):
        import urllib.request

        def reset():
            request = urllib.request.Request(base + "/reset_prefix_cache", data=b"", method="POST",
                                             headers={"Authorization": "Bearer bench"})
            urllib.request.urlopen(request, timeout=60).read()

        report["vllm_server_start_s"] = seconds
        served = ServedEvaluator(base + "/v1", model_name="bench", tokenizer=tokenizer, api_key="bench",
                                 max_concurrency=args.concurrency, progress=False)
        served.judge(items[:8])
        records, report["speed"]["vllm_served"] = timed(served.judge, items, args.repeats, before=reset)
        report["agreement_with_transformers"]["vllm_served"] = agreement(reference, records)
    base_speed = report["speed"]["transformers"]["items_per_s"]
    report["speedup_over_transformers"] = {k: v["items_per_s"] / base_speed for k, v in report["speed"].items()}
    report["machine"]["load_average_at_end"] = os.getloadavg()
    write_json(args.output, report)
    print(f"{len(items)} items, median of {args.repeats}, load average {report['machine']['load_average_at_start']} "
          f"-> {report['machine']['load_average_at_end']}")
    print(f"{'backend':<14}{'items/s':>10}{'x transformers':>16}{'argmax agree':>14}{'max |dp|':>11}")
    for name, speed in report["speed"].items():
        agree = report["agreement_with_transformers"].get(name)
        share = "-" if agree is None else "%.3f" % agree["argmax_agreement"]
        diff = "-" if agree is None else "%.1e" % agree["max_abs_prob_diff"]
        print(f"{name:<14}{speed['items_per_s']:>10.2f}{report['speedup_over_transformers'][name]:>16.2f}"
              f"{share:>14}{diff:>11}")
    print(f"-> {args.output}")


if __name__ == "__main__":  # vLLM's engine spawns its workers: the guard is required
    main()

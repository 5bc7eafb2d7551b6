"""A real out-of-memory error: the evaluator splits the batch that did not fit, lowers its batch
limits and judges on, with the same judgments (``tests/test_evaluator_memory.py`` proves the
logic with a simulated error; this runs it against a real allocator).

A random model judges synthetic ~160-token items twice with large batch limits
(``--max-batch-tokens`` 65,536, 512 rows): once as it is, and once with memory held short:

- on a GPU (``--device cuda``, the default): a Qwen2.5-0.5B shape in bfloat16, this process held
  (``torch.cuda.set_per_process_memory_fraction``) to its weights plus ``--share`` (a quarter) of
  the memory the first run's batches took above them; CUDA's allocator raises
  ``torch.OutOfMemoryError``;
- on a CPU (``--device cpu``): a 2-layer shape with a wide MLP (hidden 128, intermediate 16,384:
  the batch's activations, not the weights, take the memory) in float32, the process's address
  space held (``RLIMIT_AS``, Linux) to what it uses plus ``--cpu-headroom-mib`` (600); the CPU
  allocator raises "DefaultCPUAllocator: can't allocate memory".

Reported: the out-of-memory splits and the batch limits they ended at, items/s of each run,
argmax agreement and the largest probability difference between the two (batch shapes change the
rounding), printed as JSON (and written to ``--output`` when given); exit status 1 unless every
item agrees and the held run split at least once.

    python bench/memory_check.py --tokenizer .whl/smollm2-tokenizer    # a GPU (bench/gpu_checks.sh)
    python bench/memory_check.py --device cpu --n-items 256             # a CPU, about a minute

On a GPU: not yet run (written 2026-12-06 without one). On this project's 2-core AMD EPYC, see
``docs/evaluator.md``, "Out of accelerator memory".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from bench_gpu_eval import QWEN25_05B, bench_tokenizer, random_model, synthetic_items

# The CPU check's shape: the MLP is wide so that a batch's activations dominate its memory.
WIDE_MLP = dict(hidden_size=128, intermediate_size=16384, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, default=2048)
    parser.add_argument("--prompt-tokens", type=int, default=160)
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    parser.add_argument("--max-batch-size", type=int, default=512)
    parser.add_argument("--share", type=float, default=0.25,
                        help="of the first run's memory above the weights, what the capped run may use")
    parser.add_argument("--cpu-headroom-mib", type=int, default=600,
                        help="on a CPU: the address space the held run may add to what the process uses")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2's)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--output", default=None, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from vat_hf.evaluation import Evaluator
    from vat_hf.evaluation.judge import DeviceMemoryError
    from vat_hf.io import write_json

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("memory_check.py: no CUDA GPU here (--device cpu holds the CPU's memory instead)")
    tokenizer = bench_tokenizer(args.tokenizer)
    if not cuda:
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = random_model(QWEN25_05B if cuda else WIDE_MLP, device, dtype)
    items = synthetic_items(args.n_items, tokenizer, args.prompt_tokens)

    def judge():
        ev = Evaluator(model, tokenizer, max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                       progress=False, linear_kernel="torch")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        records = ev.judge(items)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() if cuda else None
        return records, ev.stats.to_dict(), seconds, peak

    if cuda:
        judge()  # warm-up: kernels, cuBLAS handles
    weights = torch.cuda.memory_allocated() if cuda else None
    whole, whole_stats, whole_s, whole_peak = judge()
    cap = None
    if cuda:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        cap = weights + args.share * (whole_peak - weights)
        torch.cuda.set_per_process_memory_fraction(cap / total)
    else:
        import resource

        used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = used + args.cpu_headroom_mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    failure = None
    try:
        capped, capped_stats, capped_s, capped_peak = judge()
    except DeviceMemoryError as err:  # held too short for even one item: a result, not a crash
        failure = str(err)
    finally:
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
        else:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    n = len(items)
    gib = (lambda b: None if b is None else b / 2**30)
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu, 1 torch thread",
        "model": ("Qwen2.5-0.5B shape" if cuda else "2-layer wide-MLP shape")
                 + f", random init, {str(dtype).replace('torch.', '')}",
        "memory_held_by": "torch.cuda.set_per_process_memory_fraction" if cuda else "RLIMIT_AS (address space)",
        "n_items": n,
        "configured_limits": {"max_batch_tokens": args.max_batch_tokens, "max_batch_size": args.max_batch_size},
        "weights_gib": gib(weights), "cap_gib": gib(cap),
        "whole": {"items_per_s": n / whole_s, "peak_gib": gib(whole_peak),
                  "out_of_memory_splits": whole_stats["out_of_memory_splits"]},
        "torch": torch.__version__,
    }
    if failure is not None:
        report.update(capped={"error": failure}, passed=False)
    else:
        agree = sum(a["argmax"] == b["argmax"] for a, b in zip(whole, capped))
        diff = max(abs(x - y) for a, b in zip(whole, capped) for x, y in zip(a["probs"], b["probs"]))
        report.update(
            capped={"items_per_s": n / capped_s, "peak_gib": gib(capped_peak),
                    "out_of_memory_splits": capped_stats["out_of_memory_splits"],
                    "final_limits": {"max_batch_tokens": capped_stats["max_batch_tokens"],
                                     "max_batch_size": capped_stats["max_batch_size"]}},
            argmax_agreement=f"{agree}/{n}", max_prob_diff=diff,
            passed=agree == n and diff < 0.05 and capped_stats["out_of_memory_splits"] > 0)
    print(json.dumps(report, indent=1))
    if args.output:
        write_json(Path(args.output), report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

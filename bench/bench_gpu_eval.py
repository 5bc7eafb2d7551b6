"""GPU throughput: vat-hf's evaluator against a bare forward loop over the same batches.

Run on a lent H200 on 2026-12-04 (through bench/gpu_checks.sh; figures in docs/evaluator.md, "On a
GPU"). On a CUDA machine:

    .venv/bin/python bench/bench_gpu_eval.py                 # Qwen2.5-7B shape, bf16, ~160-token items
    .venv/bin/python bench/bench_gpu_eval.py --per-scene 10  # 10 items to a scenario (scene prefixes)
    .venv/bin/python bench/bench_gpu_eval.py --small         # a quick check with a 0.5B shape
    .venv/bin/python bench/bench_gpu_eval.py --tiny --device cpu --n-items 64 --repeats 1   # the script, on a CPU

The model is a *random-initialised* model of Qwen2.5-7B's shape (28 layers, hidden 3584,
intermediate 18944, 28 query / 4 key-value heads, vocabulary 152,064) in bfloat16, so nothing is
downloaded; speed does not depend on the weights. Prompts are vat-hf's judging prompts rendered
with SmolLM2's tokenizer (the embedded default's; its ids are all inside Qwen's vocabulary), for
synthetic items sized so that prompts are about 160 tokens.

Measured in the same process, alternating, after a warm-up:

- ``bare``: ``model(input_ids=batch, logits_to_keep=1)`` over pre-padded batches already on the
  GPU (the batches our evaluator builds: sorted by length, token budget); no attention mask, no
  softmax, no records. This is the forward-pass limit the evaluator is compared with.
- ``ours``: ``Evaluator.judge(items)`` end to end: prompt rendering, tokenisation, batching,
  host-to-device copies, forward passes (with attention mask and position ids), option
  log-probabilities and records; with prefix reuse ``auto`` (the default) and ``off``, and with
  ``auto`` once more with every item prepared before the first batch (``one_wave``: no preparing
  of the next wave while the model runs the current one).

Goal: ours >= 85% of bare items/s. Results go to ``$OUT/gpu_eval.json`` when ``$OUT`` is set,
else ``outputs/bench/gpu_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1_000_000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=False)
# Only to check the script end to end on a CPU (--tiny): numbers from it mean nothing.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=49152, max_position_embeddings=2048, rope_theta=10_000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True)
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1_000_000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)


def bench_tokenizer(path=None):
    """The tokenizer at ``path``, else the embedded SmolLM2's."""
    from transformers import AutoTokenizer

    if path is None:
        from vat_hf.models import embedded_model_dir

        path = embedded_model_dir()
    return AutoTokenizer.from_pretrained(path)


def random_model(shape, device, dtype, attn_implementation="sdpa"):
    """A random-initialised Qwen2 model of ``shape`` (a config dict above), built on ``device``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", **shape)
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.eval()


def synthetic_items(n: int, tokenizer, target_tokens: int, seed: int = 0, per_scene: int = 1):
    """Items whose judging prompts are about ``target_tokens`` long (spread +-15%); each run of
    ``per_scene`` items shares one scenario (a scene), as the corpus's items do."""
    import random

    from vat_hf.prompts import JudgePrompt, judge_text

    rng = random.Random(seed)
    words = ("family", "neighbour", "council", "market", "festival", "election", "colleague", "river", "school",
             "hospital", "tradition", "budget", "friend", "village", "promise", "border", "harvest", "debate")
    base = len(tokenizer(judge_text(tokenizer, JudgePrompt(), {"scenario": "", "action": ""}),
                         add_special_tokens=False)["input_ids"])
    items = []
    for k in range(n):
        budget = max(8, int((target_tokens - base) * rng.uniform(0.85, 1.15)))
        if k % per_scene == 0:
            scenario = " ".join(rng.choice(words) for _ in range(budget * 2 // 3))
        action = "I " + " ".join(rng.choice(words) for _ in range(budget // 3)) + "."
        items.append({"id": f"g{k}", "scenario": scenario.capitalize() + ".", "action": action})
    return items


def count_syncs(run, torch):
    """Run ``run()`` under ``torch.cuda.set_sync_debug_mode("warn")``: the number of synchronizing
    CUDA calls, the evaluator's batches, and the calls by the source line that made them (the
    ten commonest)."""
    import collections
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _, _, stats = run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lines = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    return {"calls": sum(lines.values()), "batches": stats["batches"], "by_line": dict(lines.most_common(10))}


def gpu_busy(run, torch):
    """``run()`` (which returns its wall seconds) under torch's profiler: its wall time, the GPU's
    busy time (the device time of every kernel and copy; one stream) and their ratio."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = run()
    # The device's own events (kernels, copies, memsets), each counted once by its duration.
    busy_us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return {"wall_s": wall, "gpu_busy_s": busy_us / 1e6, "busy_fraction": busy_us / 1e6 / wall}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, default=4096)
    parser.add_argument("--prompt-tokens", type=int, default=160)
    parser.add_argument("--per-scene", type=int, default=1,
                        help="items per scenario (1: every item its own scene; the corpus's 132 scenes hold 112 each)")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument("--attn-implementation", default="sdpa")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="Qwen2.5-0.5B's shape instead of 7B (a quick check)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer shape, to check the script on a CPU")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2's)")
    parser.add_argument("--output-name", default="gpu_eval.json", help="file name under $OUT (or outputs/bench)")
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark); cpu only to check the script runs")
    args = parser.parse_args(argv)

    import torch

    from vat_hf.evaluation import Evaluator
    from vat_hf.evaluation.judge import left_pad, token_budget_batches
    from vat_hf.io import write_json

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_eval.py needs a CUDA GPU")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    tokenizer = bench_tokenizer(args.tokenizer)
    tokenizer.padding_side = "left"
    shape = TINY if args.tiny else QWEN25_05B if args.small else QWEN25_7B
    shape_name = "tiny (script check)" if args.tiny else "Qwen2.5-0.5B" if args.small else "Qwen2.5-7B"
    started = time.perf_counter()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(shape, device, dtype, args.attn_implementation)
    build_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())

    items = synthetic_items(args.n_items, tokenizer, args.prompt_tokens, per_scene=args.per_scene)
    evaluator = Evaluator(model, tokenizer, max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                          progress=False, prefix_reuse=False)
    encoded = evaluator.encode(items)
    lengths = [len(e) for e in encoded]
    batches = token_budget_batches(lengths, args.max_batch_tokens, args.max_batch_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    gpu_batches = [left_pad([encoded[i] for i in b], pad, device)["input_ids"] for b in batches]

    def bare():
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            for input_ids in gpu_batches:
                model(input_ids=input_ids, logits_to_keep=1)
        sync()
        return time.perf_counter() - t

    def ours(prefix_reuse, waves=True):
        ev = Evaluator(model, tokenizer, max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                       progress=False, prefix_reuse=prefix_reuse)
        if not waves:  # every item prepared before the first batch, as before waves
            ev.first_wave_items = ev.wave_items = len(items)
        sync()
        t = time.perf_counter()
        records = ev.judge(items)
        sync()
        return time.perf_counter() - t, records, ev.stats.to_dict()

    # Warm-up: kernels, allocator, cuBLAS handles.
    with torch.inference_mode():
        model(input_ids=gpu_batches[0], logits_to_keep=1)
    ours("auto")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timings = {"bare": [], "ours_prefix_auto": [], "ours_prefix_off": [], "ours_prefix_auto_one_wave": []}
    stats = {}
    for _ in range(args.repeats):
        timings["bare"].append(bare())
        seconds, records, stats["auto"] = ours("auto")
        timings["ours_prefix_auto"].append(seconds)
        seconds, _, stats["off"] = ours(False)
        timings["ours_prefix_off"].append(seconds)
        seconds, _, stats["auto_one_wave"] = ours("auto", waves=False)
        timings["ours_prefix_auto_one_wave"].append(seconds)
    # Where the host waits for the GPU: one untimed run of each setting with CUDA's sync debug
    # mode, counting the synchronizing calls by the line that made them. The evaluator means to
    # wait once a batch, for its results, after launching the next batch; a line that syncs once
    # a batch besides stalls that pipeline (the host cannot prepare a batch while the GPU runs one).
    # And how much of each run's wall time the GPU is busy (kernels and copies, under torch's
    # profiler, so a little slower than the timed runs): the rest is the GPU waiting on the host.
    def diagnosis(measure, run):
        try:
            return measure(run, torch)
        except Exception as err:  # a diagnosis must not cost the figures above
            return {"error": repr(err)}

    syncs, busy = {}, {}
    if device.type == "cuda":
        syncs = {name: diagnosis(count_syncs, lambda: ours(setting)) for name, setting in (("auto", "auto"), ("off", False))}
        busy = {name: diagnosis(gpu_busy, run) for name, run in (
            ("bare", bare), ("ours_prefix_auto", lambda: ours("auto")[0]), ("ours_prefix_off", lambda: ours(False)[0]))}
    n = len(items)
    # Medians over the repeats; each repeat runs the three side by side, so their ratio is
    # taken within one run.
    median = {k: statistics.median(v) for k, v in timings.items()}
    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (script check only)",
        "model": shape_name + f" shape, random init, {str(dtype).replace('torch.', '')}",
        "n_params": n_params, "attn_implementation": args.attn_implementation, "build_seconds": build_s,
        "n_items": n, "items_per_scene": args.per_scene, "mean_prompt_tokens": sum(lengths) / n, "n_batches": len(batches),
        "max_batch_tokens": args.max_batch_tokens, "max_batch_size": args.max_batch_size,
        "items_per_s_median": {k: n / v for k, v in median.items()},
        "ours_vs_bare_median": {"prefix_auto": median["bare"] / median["ours_prefix_auto"],
                                "prefix_off": median["bare"] / median["ours_prefix_off"]},
        # Preparing items in waves that overlap the model (Evaluator.first_wave_items) against
        # preparing every item before the first batch; above 1: the waves are faster.
        "waves_vs_one_wave_median": median["ours_prefix_auto_one_wave"] / median["ours_prefix_auto"],
        "goal": "ours >= 0.85 x bare",
        "timings_s": timings, "evaluator_stats": stats, "synchronizing_calls": syncs, "gpu_busy": busy,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "torch": torch.__version__, "mean_rating": sum(r["rating"] for r in records) / n,
    }
    print(json.dumps(report, indent=1))
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "outputs" / "bench"
    write_json(out_dir / args.output_name, report)


if __name__ == "__main__":
    main()

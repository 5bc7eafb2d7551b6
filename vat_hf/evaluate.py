"""Evaluation entry point for one or many processes.

    python -m vat_hf.evaluate --model M -o judgments.jsonl [--target-value V --k-shots K] [--log-samples]
    accelerate launch -m vat_hf.evaluate --model M -o judgments.jsonl ...      # data-parallel

Under ``accelerate launch`` every process judges its share of the items on its own device; the
records are gathered in the items' original order and the main process writes them, so the
files equal those of a single-process run. A killed run restarted with the same command reads
finished judgments from the cache (``--cache-dir``, default ``$VAT_HF_CACHE``) and judges only
the rest. See :mod:`vat_hf.evaluation.run` for the files written.

(This module is ``vat_hf.evaluate``; ``import evaluate`` elsewhere still finds the Hugging Face
``evaluate`` package, since vat-hf uses absolute imports only.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from vat_hf.evaluation.run import EvalRunConfig, run_evaluation


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() in ("", "none") else int(text)


def build_parser() -> argparse.ArgumentParser:
    d = EvalRunConfig(output="")
    p = argparse.ArgumentParser(prog="python -m vat_hf.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="JSONL file of per-item judgments (written by the main process).")
    p.add_argument("--model", default=None, help="Hub id or local folder; default: the embedded SmolLM2-135M-Instruct.")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder or Hub id, loaded without merging.")
    p.add_argument("--data", default=d.data, help="Item source: 'builtin', a file/folder in the item schema, or a Hub id.")
    p.add_argument("--split", default=d.split, help="Split to judge ('train', 'test'; '' for all).")
    p.add_argument("--max-scenes", type=_optional_int, default=None, help="Judge a reproducible sample of this many scenes.")
    p.add_argument("--limit", type=_optional_int, default=None, help="Judge only the first N items.")
    p.add_argument("--target-value", default=None, help="Apply a prompt intervention toward this value.")
    p.add_argument("--k-shots", type=int, default=d.k_shots, help="Few-shot demonstrations for the prompt intervention.")
    p.add_argument("--no-system-prompt", dest="system_prompt", action="store_false",
                   help="Leave out the value system prompt of --target-value.")
    p.add_argument("--dtype", default=d.dtype, help="auto (bf16 on GPUs that support it, else fp32), float32, bfloat16, float16.")
    p.add_argument("--device", default=None, help="Device (default: this process's accelerator device).")
    p.add_argument("--attn-implementation", default=None, help="Attention kernel (default sdpa; flash_attention_2 if installed).")
    p.add_argument("--backend", default=d.backend, choices=("hf", "vllm"), help="hf (transformers) or vllm (optional extra).")
    p.add_argument("--mode", default=d.mode, choices=("auto", "logprob", "logprob-multitoken", "generate"),
                   help="Scoring mode; auto: logprob when the options are single tokens, else logprob-multitoken.")
    p.add_argument("--prefix-reuse", default=d.prefix_reuse, choices=("auto", "true", "false"),
                   help="Reuse the shared prompt prefix's key/value cache.")
    p.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens, help="Token budget of one batch (padded length x rows).")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="Most rows in one batch.")
    p.add_argument("--max-length", type=_optional_int, default=None, help="Longest prompt judged (default: the model's context).")
    p.add_argument("--truncation", default=d.truncation, choices=("refuse", "left"),
                   help="Over-long prompts: refuse (recorded as missing) or keep their last max-length tokens.")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="Answer length in generate mode.")
    p.add_argument("--cache-dir", default=None, help="Judgment cache root (default $VAT_HF_CACHE or ~/.cache/vat-hf).")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", help="Judge everything; read and write no cache.")
    p.add_argument("--log-samples", action="store_true", help="Also write samples_<name>.jsonl (per-item log).")
    p.add_argument("--log-dir", default=None, help="Folder for results_<name>.json and samples (default: the output's folder).")
    p.add_argument("--name", default=None, help="Run name in the log file names (default: the output file's stem).")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = vars(build_parser().parse_args(argv))
    progress = args.pop("progress")
    verbose = args.pop("verbose")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = EvalRunConfig(**args)
    from vat_hf.evaluation.run import _distributed_state

    accelerator, _, _ = _distributed_state()
    try:
        results = run_evaluation(config, progress=progress, accelerator=accelerator)
        if results:
            s = results["summary"]
            print(json.dumps({"judgments": results["files"]["judgments"], "results": results["files"]["results"],
                              "n_items": s["n_items"], "n_missing": s["n_missing"], "mean_rating": s["mean_rating"],
                              "mode": results["mode"], "n_computed": results["stats"]["n_computed"],
                              "n_cached": results["stats"]["n_cached"], "seconds": results["timing"]["seconds"]}))
    finally:
        if accelerator is not None:
            from vat_hf.distributed import end_distributed

            end_distributed(accelerator)
    return 0


if __name__ == "__main__":
    sys.exit(main())

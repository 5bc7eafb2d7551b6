"""The full ValueActionLens corpus (14,784 rows) judged by SmolLM2-135M-Instruct: wall time and
peak memory.

    nohup .venv/bin/python bench/bench_full_corpus.py > outputs/bench/full_corpus.log 2>&1 &

Every corpus row becomes an item: the 14,723 rows whose action the importer recovers, and the 61
it cannot (model refusals in the source) with an empty action, which the evaluator records as
missing with the reason; so the run also exercises bad input at scale. The run uses the judgment
cache under ``outputs/bench/full-corpus-cache`` (``--cache-dir``): killed and restarted with the
same command it resumes, and the report says how many items came from the cache (the wall time
is only meaningful for a run that computed everything: use ``--fresh`` for that).

Reported (``outputs/bench/full_corpus.json``): items, items judged and missing, wall time of the
evaluation (and of the whole script), items/s, peak resident memory (``ru_maxrss``), and the
evaluator's statistics (tokens read, shared-prefix tokens, batches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k-shots", type=int, default=0, help="few-shot prompt intervention toward Benevolence")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=None, help="judge only the first N items (a quick check)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "outputs" / "bench" / "full-corpus-cache")
    parser.add_argument("--fresh", action="store_true", help="empty the cache first, so everything is computed")
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "bench" / "full_corpus.json")
    args = parser.parse_args(argv)
    script_start = time.perf_counter()

    import torch

    from bench_eval_vs_lmeval import corpus_items, prompt_for
    from vat_hf.evaluation import Evaluator, summarize
    from vat_hf.io import write_json, write_jsonl
    from vat_hf.models import load_model

    torch.set_num_threads(args.threads)
    if args.fresh and args.cache_dir.exists():
        shutil.rmtree(args.cache_dir)
    items = corpus_items(include_unrecovered=True)
    if args.limit:
        items = items[: args.limit]
    train = [i for i in items if i["split"] == "train" and i["action"]]
    prompt = prompt_for(args.k_shots, train)
    loaded = load_model(None, device="cpu", dtype="float32")
    evaluator = Evaluator(loaded.model, loaded.tokenizer, prompt=prompt, max_batch_tokens=args.max_batch_tokens,
                          max_batch_size=args.max_batch_size, cache_dir=args.cache_dir, progress=True)
    start = time.perf_counter()
    records = evaluator.judge(items)
    seconds = time.perf_counter() - start
    out_dir = args.output.parent
    write_jsonl(out_dir / f"full_corpus_k{args.k_shots}.jsonl", records)
    summary = summarize(records).to_dict()
    stats = evaluator.stats.to_dict()
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                    "load_average_at_end": os.getloadavg()},
        "model": "SmolLM2-135M-Instruct (embedded default), float32, CPU",
        "prompt": prompt.name, "n_items": len(items), "summary": summary,
        "n_missing_reasons": sorted({r["missing_reason"].split(": ", 1)[-1] for r in records if r.get("missing_reason")}),
        "evaluation_seconds": seconds, "items_per_s": stats["n_computed"] / seconds if seconds else None,
        "script_seconds": time.perf_counter() - script_start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "evaluator_stats": stats,
        "complete_run": stats["n_cached"] == 0,
    }
    write_json(args.output, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

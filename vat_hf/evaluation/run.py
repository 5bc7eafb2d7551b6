"""One evaluation run: load items, model and prompt, judge (on one or many processes), write the
judgments, per-sample logs and a results JSON. Used by ``vat-hf eval`` and by
``python -m vat_hf.evaluate`` / ``accelerate launch -m vat_hf.evaluate``.

Data parallelism: every process loads the model on its own device and judges every
``world_size``-th item of the items ordered by text length (so each gets a similar share of
long and short prompts); the records are gathered with ``accelerate.utils.gather_object`` and
put back in the items' original order; only the main process writes. With a judgment cache each
process appends to its own part file, so a killed multi-process run resumes like a single one.

Files written (``<name>`` defaults to the output file's stem)::

    <output>                        judgments, one record per item, in item order
    <log_dir>/results_<name>.json   config, model/adapter/prompt fingerprints, versions, seed,
                                    summary, missing items with reasons, timing
    <log_dir>/samples_<name>.jsonl  with log_samples: one line per item in the style of
                                    lm-evaluation-harness --log_samples (doc_id, the item, the
                                    hash of the exact prompt text, option log-probabilities and
                                    distribution, rating, mode)
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)


class AdapterNotFoundError(FileNotFoundError):
    """The adapter given is neither a local folder nor a Hub id."""


@dataclass
class EvalRunConfig:
    output: str
    model: Optional[str] = None
    adapter: Optional[str] = None
    data: str = "builtin"
    split: Optional[str] = "test"
    max_scenes: Optional[int] = None
    limit: Optional[int] = None
    target_value: Optional[str] = None
    k_shots: int = 0
    system_prompt: bool = True
    dtype: str = "auto"
    device: Optional[str] = None
    attn_implementation: Optional[str] = None
    backend: str = "hf"
    mode: str = "auto"
    prefix_reuse: str = "auto"
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    max_length: Optional[int] = None
    truncation: str = "refuse"
    max_new_tokens: int = 8
    cache_dir: Optional[str] = None
    use_cache: bool = True
    log_samples: bool = False
    log_dir: Optional[str] = None
    name: Optional[str] = None
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def check_adapter(adapter: Optional[str]) -> None:
    """Fail before anything is loaded when ``adapter`` names no folder and is no Hub id."""
    if adapter is None:
        return
    path = Path(os.path.expanduser(str(adapter)))
    if path.exists():
        if not (path / "adapter_config.json").exists():
            raise AdapterNotFoundError(f"adapter folder {path} has no adapter_config.json; is it a PEFT adapter?")
        return
    looks_hub = str(adapter).count("/") == 1 and not str(adapter).startswith((".", "/", "~"))
    if not looks_hub:
        raise AdapterNotFoundError(f"adapter path {path} does not exist (give a PEFT adapter folder or a Hub id 'org/name')")


def resolve_attn_implementation(requested: Optional[str], device) -> Optional[str]:
    """``sdpa`` unless asked otherwise: PyTorch's fused attention handles the padding and prefix
    masks on every device; ``flash_attention_2`` is used only when asked for and installed."""
    if requested and requested != "auto":
        if requested == "flash_attention_2":
            import importlib.util

            if importlib.util.find_spec("flash_attn") is None:
                logger.warning("flash_attention_2 asked for but flash_attn is not installed; using sdpa")
                return "sdpa"
        return requested
    return "sdpa"


def build_prompt(config: EvalRunConfig):
    from vat_hf.prompts import JudgePrompt

    if not config.target_value:
        return JudgePrompt()
    from vat_hf.data.sources import load_items
    from vat_hf.interventions import value_prompt

    train = load_items(config.data, split="train", seed=config.seed) if config.k_shots else []
    return value_prompt(config.target_value, train, k_shots=config.k_shots, system_prompt=config.system_prompt,
                        seed=config.seed)


def load_run_items(config: EvalRunConfig) -> List[Dict]:
    from vat_hf.data.sources import load_items

    items = load_items(config.data, split=config.split or None, max_scenes=config.max_scenes, seed=config.seed)
    return items[: config.limit] if config.limit else items


def shard_indices(items: Sequence[Mapping], rank: int, world_size: int) -> List[int]:
    """This process's share: every ``world_size``-th item in order of text length, so that each
    process gets a similar mix of long and short prompts.

    >>> items = [{"scenario": "s" * n, "action": "a"} for n in (5, 1, 4, 2, 3)]
    >>> shard_indices(items, 0, 2), shard_indices(items, 1, 2)
    ([1, 4, 0], [3, 2])
    """
    order = sorted(range(len(items)), key=lambda i: (len(str(items[i].get("scenario") or "")) +
                                                      len(str(items[i].get("action") or "")), i))
    return order[rank::world_size]


def prompt_text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_logs(items: Sequence[Mapping], records: Sequence[Mapping], tokenizer, prompt) -> List[Dict]:
    """Per-sample lines in the style of lm-evaluation-harness ``--log_samples``."""
    from vat_hf.prompts import judge_text

    lines = []
    fingerprint = prompt.fingerprint()
    for k, (item, record) in enumerate(zip(items, records)):
        try:
            text_hash = prompt_text_hash(judge_text(tokenizer, prompt, item))
        except Exception:  # an item that cannot even be rendered (its record says why)
            text_hash = None
        lines.append({
            "doc_id": k,
            "id": item.get("id"),
            "item": dict(item),
            "prompt_fingerprint": fingerprint,
            "prompt_hash": text_hash,
            "n_tokens": record.get("n_tokens"),
            "mode": record.get("mode"),
            "option_logprobs": record.get("option_logprobs"),
            "probs": record.get("probs"),
            "option_mass": record.get("option_mass"),
            "rating": record.get("rating"),
            "argmax": record.get("argmax"),
            "missing_reason": record.get("missing_reason"),
            "generated": record.get("generated"),
        })
    return lines


def _distributed_state():
    """(accelerator, rank, world size); no Accelerator when not launched as several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    from accelerate import Accelerator

    from vat_hf.models.loading import default_device

    # On a machine without an accelerator, processes launched by any accelerate config (even
    # MULTI_GPU) run on CPU and talk over gloo.
    accelerator = Accelerator(cpu=default_device().type == "cpu")
    return accelerator, accelerator.process_index, accelerator.num_processes


def run_evaluation(config: EvalRunConfig, progress: bool = True, accelerator=None) -> Dict[str, Any]:
    """Run one evaluation; returns the results dict (also written as ``results_<name>.json``)."""
    from vat_hf.evaluation.judge import Evaluator, summarize
    from vat_hf.io import write_json, write_jsonl
    from vat_hf.pipeline import package_versions

    started = time.perf_counter()
    if accelerator is None:
        accelerator, rank, world = _distributed_state()
    else:
        rank, world = accelerator.process_index, accelerator.num_processes
    check_adapter(config.adapter)
    items = load_run_items(config)
    prompt = build_prompt(config)
    output = Path(config.output)
    name = config.name or output.stem
    log_dir = Path(config.log_dir) if config.log_dir else output.parent
    cache_root = None
    if config.use_cache:
        from vat_hf.evaluation.cache import default_cache_root

        cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_root()

    device = config.device
    if device is None and accelerator is not None:
        device = str(accelerator.device)
    if config.backend == "vllm":
        from vat_hf.evaluation.vllm_backend import VLLMEvaluator

        evaluator = VLLMEvaluator(config.model, prompt=prompt, adapter=config.adapter, dtype=config.dtype,
                                  max_length=config.max_length, truncation=config.truncation, progress=progress)
        model_info = {"name_or_path": config.model, "backend": "vllm"}
        tokenizer = evaluator.tokenizer
    else:
        import torch

        from vat_hf.models import load_model
        from vat_hf.models.loading import default_device

        attn = resolve_attn_implementation(config.attn_implementation, torch.device(device) if device else default_device())
        loaded = load_model(config.model, adapter=config.adapter, dtype=config.dtype, device=device, attn_implementation=attn)
        tokenizer = loaded.tokenizer
        evaluator = Evaluator(
            loaded.model, loaded.tokenizer, prompt=prompt, max_batch_tokens=config.max_batch_tokens,
            max_batch_size=config.max_batch_size, progress=progress and rank == 0, mode=config.mode,
            prefix_reuse={"true": True, "false": False}.get(str(config.prefix_reuse).lower(), config.prefix_reuse),
            max_length=config.max_length, truncation=config.truncation, max_new_tokens=config.max_new_tokens,
            cache_dir=cache_root, cache_rank=rank,
        )
        param = next(loaded.model.parameters())
        model_info = {"name_or_path": loaded.name_or_path, "resolved_path": loaded.resolved_path,
                      "adapter": loaded.adapter, "dtype": str(param.dtype), "device": str(param.device),
                      "attn_implementation": getattr(getattr(loaded.model, "config", None), "_attn_implementation", attn)}
        if evaluator.cache is not None:
            model_info["fingerprints"] = evaluator.cache.fingerprints

    shard = shard_indices(items, rank, world) if world > 1 else list(range(len(items)))
    local = evaluator.judge([items[i] for i in shard])
    stats = {**evaluator.stats.to_dict(), "rank": rank}
    pairs = list(zip(shard, local))
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
        all_stats = gather_object([stats])
    else:
        all_stats = [stats]
    results: Dict[str, Any] = {}
    if rank == 0:
        records: List[Optional[Dict]] = [None] * len(items)
        for index, record in pairs:
            records[index] = record
        if any(r is None for r in records):
            raise RuntimeError("gathering the processes' judgments lost items; this is a bug")
        write_jsonl(output, records)
        seconds = time.perf_counter() - started
        summary = summarize(records).to_dict()
        results = {
            "name": name,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config.to_dict(),
            "model": model_info,
            "prompt": {**prompt.to_dict(), "fingerprint": prompt.fingerprint()},
            "mode": evaluator.mode,
            "template": getattr(evaluator, "template", None),
            "versions": package_versions(),
            "seed": config.seed,
            "world_size": world,
            "summary": summary,
            "missing": [{"id": r["id"], "reason": r.get("missing_reason")} for r in records if r["rating"] is None],
            "stats": {
                "n_items": len(items),
                "n_cached": sum(s["n_cached"] for s in all_stats),
                "n_computed": sum(s["n_computed"] for s in all_stats),
                "prefix_tokens": max(s["prefix_tokens"] for s in all_stats),
                "n_prefix_reuse": sum(s["n_prefix"] for s in all_stats),
                "per_process": all_stats,
            },
            "timing": {"seconds": seconds, "items_per_s": len(items) / seconds if seconds > 0 else None},
            "files": {"judgments": str(output)},
        }
        if config.log_samples:
            samples_path = log_dir / f"samples_{name}.jsonl"
            write_jsonl(samples_path, sample_logs(items, records, tokenizer, prompt))
            results["files"]["samples"] = str(samples_path)
        results_path = log_dir / f"results_{name}.json"
        results["files"]["results"] = str(results_path)
        write_json(results_path, results)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return results

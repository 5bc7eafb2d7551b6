"""One evaluation stage: judge the given items with a model under one prompt, on one or many
processes, and write the judgments, the per-sample records and the results file
(:mod:`vat_hf.evaluation.results`).

:func:`run_evaluation` is the one evaluation function: ``vat-hf eval`` and
``python -m vat_hf.evaluate`` call it once, ``vat-hf run`` once per stage (the baseline and
each intervention). The judgment cache is its one reuse layer, and a fully cached stage is
cheap: the cache's key is computed from the files the model would be loaded from
(:func:`~vat_hf.evaluation.cache.model_files_fingerprint`) and the tokenizer, so when every
item is in the cache no weights are loaded at all; the model is loaded only when something must
be judged.

Data parallelism: every process loads the model on its own device and judges every
``world_size``-th item of the items ordered by text length (so each gets a similar share of
long and short prompts); the records are gathered with ``accelerate.utils.gather_object`` and
put back in the items' original order; only the main process writes. With a judgment cache each
process appends to its own part file, so a killed multi-process run resumes like a single one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

from vat_hf.errors import VatHfError
from vat_hf.evaluation.config import EvalConfig, EvalConfigError
from vat_hf.evaluation.task import JudgeStats, check_item_ids, make_record

logger = logging.getLogger(__name__)

ModelLoader = Callable[["HFModelSource"], ContextManager[Any]]
"""Gives the model to judge with, ready (adapter active, eval mode), as a context manager, from
the stage's :class:`HFModelSource` (its path, dtype, device and attention): the default loads it;
``vat-hf run`` switches adapters on one loaded base model."""


class AdapterNotFoundError(VatHfError, FileNotFoundError):
    """The adapter given is neither a local folder nor a Hub id."""


def check_adapter(adapter: Optional[str]) -> None:
    """Fail before anything is loaded when ``adapter`` names no folder and is no Hub id."""
    if adapter is None:
        return
    path = Path(os.path.expanduser(str(adapter)))
    if path.exists():
        if not (path / "adapter_config.json").exists():
            raise AdapterNotFoundError(f"adapter folder {path} has no adapter_config.json", fix="is it a PEFT adapter?")
        return
    looks_hub = str(adapter).count("/") == 1 and not str(adapter).startswith((".", "/", "~"))
    if not looks_hub:
        raise AdapterNotFoundError(f"adapter path {path} does not exist",
                                   fix="give a PEFT adapter folder or a Hub id 'org/name'")


def resolve_attn_implementation(requested: Optional[str]) -> str:
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


def distributed_state():
    """(accelerator, rank, world size); no Accelerator when not launched as several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    from accelerate import Accelerator

    from vat_hf.models.loading import default_device

    # On a machine without an accelerator, processes launched by any accelerate config (even
    # MULTI_GPU) run on CPU and talk over gloo.
    accelerator = Accelerator(cpu=default_device().type == "cpu")
    from vat_hf.distributed import check_launch

    check_launch(accelerator.distributed_type.value, accelerator.num_processes, what="the evaluation", use_cpu=True)
    return accelerator, accelerator.process_index, accelerator.num_processes


class HFModelSource:
    """The transformers model of one evaluation: what its files and tokenizer say (cheap: no
    weights read), and the loaded model only when :meth:`load` is entered."""

    def __init__(self, model: Optional[str], adapter: Optional[str], config: EvalConfig, device: Optional[str],
                 loader: Optional[ModelLoader] = None):
        import torch

        from vat_hf.models.loading import DEFAULT_MODEL, default_device, default_dtype, parse_dtype, resolve_model_path

        self.name_or_path = str(model or DEFAULT_MODEL)
        self.resolved_path = resolve_model_path(model)
        self.adapter = str(adapter) if adapter else None
        self.device = torch.device(device) if device else default_device()
        self.dtype = parse_dtype(config.dtype) or default_dtype(self.device)
        self.attn_implementation = resolve_attn_implementation(config.attn_implementation)
        self._loader = loader
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from vat_hf.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.resolved_path)
        return self._tokenizer

    def model_config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.resolved_path)

    def file_fingerprints(self) -> Optional[Tuple[str, str]]:
        """(model, adapter) fingerprints from the files, or None when they are not on this machine."""
        from vat_hf.evaluation.cache import adapter_files_fingerprint, model_files_fingerprint

        model_fp = model_files_fingerprint(self.resolved_path, str(self.dtype))
        adapter_fp = adapter_files_fingerprint(self.adapter)
        return None if model_fp is None or adapter_fp is None else (model_fp, adapter_fp)

    def load(self) -> ContextManager[Any]:
        if self._loader is not None:
            return self._loader(self)
        from vat_hf.models import load_model

        loaded = load_model(self.resolved_path, adapter=self.adapter, dtype=self.dtype, device=str(self.device),
                            attn_implementation=self.attn_implementation)
        return contextlib.nullcontext(loaded.model)

    def info(self) -> Dict[str, Any]:
        from vat_hf.models.loading import dtype_record

        return {"name_or_path": self.name_or_path, "resolved_path": self.resolved_path, "adapter": self.adapter,
                "backend": "hf", **dtype_record(self.device, self.dtype), "device": str(self.device),
                "attn_implementation": self.attn_implementation}


def _cached_outputs(cache, items: Sequence[Mapping], mode: str) -> Optional[List[Dict]]:
    """Every item's outputs without a model (from the cache, or the refusal of an item with an
    empty scenario or action), or None when some item must be judged."""
    from vat_hf.evaluation.cache import cached_outputs
    from vat_hf.evaluation.task import bad_item_reason, missing_outputs

    outputs = []
    for item, out in zip(items, cached_outputs(cache, items)[1]):
        reason = bad_item_reason(item)
        if reason:
            outputs.append(missing_outputs(reason, mode))
        elif out is not None:
            outputs.append(out)
        else:
            return None
    return outputs


def _judge_hf(source: HFModelSource, config: EvalConfig, items: Sequence[Mapping], prompt, cache_root: Optional[Path],
              rank: int, progress: bool, model_variant: Optional[Mapping[str, Any]] = None
              ) -> Tuple[List[Dict], JudgeStats, Dict[str, str], str, Optional[str]]:
    """Records of ``items`` (this process's share), the judging statistics, the fingerprints,
    the scoring mode and the prompt template; the model is loaded only if an item is not cached.
    ``model_variant`` (what the loader does to the model beyond its files and adapter, such as
    a steering hook) is folded into the model fingerprint, so its judgments have their own cache."""
    from vat_hf.evaluation.cache import JudgmentCache, sha256_json
    from vat_hf.evaluation.task import default_max_length, resolve_mode, scoring_config

    tokenizer = source.tokenizer
    mode, _ = resolve_mode(tokenizer, config.mode)
    max_length = config.max_length if config.max_length is not None else default_max_length(source.model_config(), tokenizer)
    scoring = scoring_config(tokenizer, mode, max_length, config.truncation, config.max_new_tokens)
    template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    prompt_fp = prompt.fingerprint()
    with contextlib.ExitStack() as stack:
        model = None
        files = source.file_fingerprints()
        if files is None:  # not on this machine yet: load (download) first, fingerprint the weights in memory
            from vat_hf.evaluation.cache import adapter_fingerprint, model_fingerprint

            model = stack.enter_context(source.load())
            files = (model_fingerprint(model), adapter_fingerprint(model))
        model_fp = files[0] if not model_variant else sha256_json({"model": files[0], "variant": model_variant})[:32]
        fingerprints = {"model": model_fp, "adapter": files[1], "prompt": prompt_fp, "scoring": sha256_json(scoring)[:32]}
        if model_variant:
            fingerprints["variant"] = sha256_json(model_variant)[:32]
        cache = None
        if cache_root is not None:
            cache = JudgmentCache(cache_root, fingerprints["model"], fingerprints["adapter"], fingerprints["prompt"],
                                  fingerprints["scoring"], rank=rank,
                                  meta={"model": source.name_or_path, "adapter": source.adapter,
                                        "variant": dict(model_variant) if model_variant else None,
                                        "prompt": prompt.to_dict(), "scoring": scoring})
            outputs = _cached_outputs(cache, items, mode) if model is None else None
            if outputs is not None:  # every judgment is cached: no weights are read
                records = [make_record(item, out, prompt_fp) for item, out in zip(items, outputs)]
                stats = JudgeStats(n_items=len(items), n_cached=len(items),
                                   n_missing=sum(1 for r in records if r["rating"] is None))
                return records, stats, fingerprints, mode, template
        if model is None:
            model = stack.enter_context(source.load())
        from vat_hf.evaluation.judge import Evaluator

        evaluator = Evaluator(model, tokenizer, prompt=prompt, max_batch_tokens=config.max_batch_tokens,
                              max_batch_size=config.max_batch_size, progress=progress, mode=config.mode,
                              prefix_reuse=config.prefix_reuse_flag, max_length=config.max_length,
                              truncation=config.truncation, max_new_tokens=config.max_new_tokens, cache=cache,
                              cache_rank=rank, linear_kernel=config.linear_kernel)
        records = evaluator.judge(items)
        return records, evaluator.stats, fingerprints, evaluator.mode, evaluator.template


class BackendError(VatHfError, ValueError):
    """A backend asked for what it cannot do (several processes, an adapter on a served model)."""


def _cache_for(cache_root: Optional[Path], fingerprints: Mapping[str, str], meta: Mapping[str, Any]):
    from vat_hf.evaluation.cache import JudgmentCache

    return None if cache_root is None else JudgmentCache(cache_root, *fingerprints.values(), meta=meta)


def _judge_vllm(model, adapter, config: EvalConfig, items, prompt, cache_root, progress):
    """The vLLM backend's records, statistics, fingerprints, mode, template, tokenizer and model
    block; the engine starts only when an item is not in the judgment cache."""
    from vat_hf.evaluation.cache import adapter_files_fingerprint, model_files_fingerprint, sha256_json
    from vat_hf.evaluation.task import default_max_length, resolve_mode, scoring_config
    from vat_hf.evaluation.vllm_backend import VLLMEvaluator
    from vat_hf.models.loading import (
        DEFAULT_MODEL,
        default_device,
        default_dtype,
        dtype_name,
        dtype_record,
        load_tokenizer,
        parse_dtype,
        resolve_model_path,
    )

    path = resolve_model_path(model)
    tokenizer = load_tokenizer(path)
    # "auto" is resolved here by the transformers path's rule, so both backends run the same dtype
    # and the cache key and results file name it before any engine starts.
    device = default_device()
    dtype = dtype_name(parse_dtype(config.dtype) or default_dtype(device))
    mode, _ = resolve_mode(tokenizer, config.mode)
    if config.max_length is not None:
        max_length = config.max_length
    else:
        from transformers import AutoConfig

        max_length = default_max_length(AutoConfig.from_pretrained(path), tokenizer)
    scoring = {**scoring_config(tokenizer, mode, max_length, config.truncation, config.max_new_tokens),
               "backend": "vllm"}
    evaluator = VLLMEvaluator(path, prompt=prompt, adapter=adapter, dtype=dtype, mode=config.mode,
                              max_length=max_length, truncation=config.truncation,
                              max_new_tokens=config.max_new_tokens, progress=progress, tokenizer=tokenizer,
                              engine_args=config.vllm_engine_args)
    model_fp, adapter_fp = model_files_fingerprint(path, dtype), adapter_files_fingerprint(adapter)
    if model_fp is None or adapter_fp is None:  # a Hub id not downloaded yet: vLLM fetches it, then fingerprint
        evaluator.llm
        from vat_hf.evaluation.cache import local_folder

        model_fp = model_files_fingerprint(str(local_folder(path) or path), dtype)
        adapter_fp = adapter_files_fingerprint(adapter) or sha256_json({"adapter": adapter})[:32]
    fingerprints = {"model": model_fp, "adapter": adapter_fp, "prompt": prompt.fingerprint(),
                    "scoring": sha256_json(scoring)[:32]}
    evaluator.cache = _cache_for(cache_root, fingerprints, {"model": str(model or DEFAULT_MODEL), "adapter": adapter,
                                                            "prompt": prompt.to_dict(), "scoring": scoring})
    records = evaluator.judge(items)
    import vllm

    info = {"name_or_path": str(model or DEFAULT_MODEL), "resolved_path": path, "adapter": adapter,
            "backend": "vllm", **dtype_record(device, parse_dtype(dtype)), "vllm": vllm.__version__,
            "engine_args": evaluator.engine_args_record(), "score_paths": dict(sorted(evaluator.path_counts.items()))}
    return records, evaluator.stats, fingerprints, evaluator.mode, evaluator.template, tokenizer, info


def _judge_served(model, adapter, config: EvalConfig, items, prompt, cache_root, progress):
    """The served-model backend's records, statistics, fingerprints, mode, template, tokenizer and
    model block. ``model`` names the tokenizer (optional for the chat endpoint)."""
    from vat_hf.evaluation.cache import sha256_json
    from vat_hf.evaluation.served import ServedEvaluator, read_api_key

    if not config.base_url:
        raise BackendError("eval setting backend='openai' needs base_url",
                           fix="give the server's address, e.g. --base_url http://127.0.0.1:8000/v1")
    if adapter:
        raise BackendError("backend 'openai' judges the model the server serves; it cannot load an adapter",
                           fix="serve the adapter (vllm serve --enable-lora --lora-modules NAME=PATH) and give "
                               "--model_name NAME")
    tokenizer = None
    if model is not None:
        from vat_hf.models.loading import load_tokenizer

        tokenizer = load_tokenizer(model)
    source = f"--api_key_file {config.api_key_file}" if config.api_key_file else f"${config.api_key_env}"
    evaluator = ServedEvaluator(
        config.base_url, model_name=config.model_name, prompt=prompt, tokenizer=tokenizer, api=config.api,
        mode=config.mode, max_length=config.max_length, truncation=config.truncation,
        max_new_tokens=config.max_new_tokens, top_logprobs=config.top_logprobs, max_concurrency=config.max_concurrency,
        request_timeout=config.request_timeout, max_retries=config.max_retries,
        api_key=read_api_key(config.api_key_env, config.api_key_file), progress=progress, api_key_source=source)
    if evaluator.model_name is None:  # the one model the server lists: it names the cache's namespace
        evaluator.connect()
    scoring = evaluator.scoring_config()
    fingerprints = {"model": evaluator.fingerprint(), "adapter": "", "prompt": prompt.fingerprint(),
                    "scoring": sha256_json(scoring)[:32]}
    evaluator.cache = _cache_for(cache_root, fingerprints, {"model": evaluator.model_name, "base_url": evaluator.base_url,
                                                            "prompt": prompt.to_dict(), "scoring": scoring})
    records = evaluator.judge(items)
    info = {"name_or_path": evaluator.model_name, "tokenizer": model, "adapter": None, **evaluator.info()}
    return records, evaluator.stats, fingerprints, evaluator.mode, evaluator.template, tokenizer, info


def run_evaluation(config: EvalConfig, *, items: Sequence[Mapping], prompt, output, model: Optional[str] = None,
                   adapter: Optional[str] = None, name: Optional[str] = None, seed: int = 0,
                   data_config: Optional[Mapping[str, Any]] = None, run_config: Optional[Mapping[str, Any]] = None,
                   default_cache_dir=None, loader: Optional[ModelLoader] = None, accelerator=None,
                   model_variant: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Judge ``items`` (the first ``config.limit`` of them) with ``model`` (+ ``adapter``) under
    ``prompt``; write the judgments to ``output`` and ``results_<name>.json`` (and, with
    ``log_samples``, ``samples_<name>.jsonl``) into ``config.log_dir`` or ``output``'s folder.
    Returns the results dict (empty on processes other than the main one).

    ``data_config`` (where the items came from) and ``run_config`` (the caller's whole
    configuration) go into the results file's provenance; ``default_cache_dir`` is the cache root
    when ``config.cache_dir`` is unset (default ``$VAT_HF_CACHE``); ``loader`` gives the model
    instead of loading it (see :data:`ModelLoader`); ``model_variant`` describes what that loader
    does to the model beyond its files and adapter (a steering hook: its vector, layers and
    strength); it enters the judgment cache's model fingerprint and the results' ``model``.
    """
    from vat_hf.evaluation.results import data_block, evaluation_result, sample_records
    from vat_hf.evaluation.task import summarize
    from vat_hf.io import write_json, write_jsonl
    from vat_hf.provenance import provenance

    started = time.time()
    if accelerator is None:
        accelerator, rank, world = distributed_state()
    else:
        rank, world = accelerator.process_index, accelerator.num_processes
    check_adapter(adapter)
    items = list(items)[: config.limit] if config.limit else list(items)
    check_item_ids(items)
    output = Path(output)
    name = name or output.stem
    log_dir = Path(config.log_dir) if config.log_dir else output.parent
    cache_root = None
    if config.cache:
        from vat_hf.evaluation.cache import default_cache_root

        cache_root = Path(config.cache_dir or default_cache_dir or default_cache_root())
    device = config.device
    if device is None and accelerator is not None:
        device = str(accelerator.device)
    progress = config.progress and rank == 0
    shard = shard_indices(items, rank, world) if world > 1 else list(range(len(items)))
    local_items = [items[i] for i in shard]

    if config.backend != "hf" and world > 1:
        raise BackendError(f"backend {config.backend!r} runs in one process (got {world})",
                           fix="vLLM spreads a model over GPUs itself (vllm_engine_args tensor_parallel_size); a "
                               "server takes max_concurrency requests at once; launch without accelerate")
    if config.backend != "hf" and model_variant:
        raise EvalConfigError(f"{name}: a model changed by the loader ({model_variant.get('kind')}) is judged by "
                              "the transformers backend only", fix="set eval.backend: hf for this intervention")
    if config.backend == "vllm":
        local, stats, fingerprints, mode, template, tokenizer, model_info = _judge_vllm(
            model, adapter, config, local_items, prompt, cache_root, progress)
    elif config.backend == "openai":
        local, stats, fingerprints, mode, template, tokenizer, model_info = _judge_served(
            model, adapter, config, local_items, prompt, cache_root, progress)
    else:
        source = HFModelSource(model, adapter, config, device, loader)
        local, stats, fingerprints, mode, template = _judge_hf(source, config, local_items, prompt, cache_root, rank, progress,
                                                               model_variant)
        tokenizer, model_info = source.tokenizer, source.info()
        if model_variant:
            model_info["variant"] = dict(model_variant)

    stats_row = {**stats.to_dict(), "rank": rank}
    pairs = list(zip(shard, local))
    all_stats = [stats_row]
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
        all_stats = gather_object([stats_row])
    results: Dict[str, Any] = {}
    if rank == 0:
        records: List[Optional[Dict]] = [None] * len(items)
        for index, record in pairs:
            records[index] = record
        if any(r is None for r in records):
            raise RuntimeError("gathering the processes' judgments lost items; this is a bug")
        write_jsonl(output, records)
        files = {"judgments": str(output)}
        if config.log_samples:
            samples_path = log_dir / f"samples_{name}.jsonl"
            write_jsonl(samples_path, sample_records(items, records, tokenizer, prompt))
            files["samples"] = str(samples_path)
        results_path = log_dir / f"results_{name}.json"
        files["results"] = str(results_path)
        block = provenance(config={**dict(run_config or {}), "eval": config.to_dict()}, seed=seed,
                           data=data_block(data_config or {}, items, config.limit), fingerprints=fingerprints,
                           started=started)
        seconds = block["timing"]["seconds"]
        results = evaluation_result(
            name=name, provenance=block, model=model_info, prompt=prompt, mode=mode, template=template,
            summary=summarize(records).to_dict(), records=records, world_size=world,
            stats={"n_items": len(items),
                   "n_cached": sum(s["n_cached"] for s in all_stats),
                   "n_computed": sum(s["n_computed"] for s in all_stats),
                   "prefix_tokens": max(s["prefix_tokens"] for s in all_stats),
                   "n_prefix_reuse": sum(s["n_prefix"] for s in all_stats),
                   "items_per_s": len(items) / seconds if seconds > 0 else None,
                   "per_process": all_stats},
            files=files)
        write_json(results_path, results)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return results

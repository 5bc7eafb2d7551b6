"""The judging task, apart from any backend: what a judgment record holds and the scoring rules.

Both backends (the transformers :class:`~vat_hf.evaluation.judge.Evaluator` and
:class:`~vat_hf.evaluation.vllm_backend.VLLMEvaluator`) compute option log-probabilities or a
generated answer their own way and hand them to the functions here, which turn them into the
same outputs and records:

* the scoring modes (:data:`MODES`) and how ``"auto"`` picks one from the tokenizer
  (:func:`resolve_mode`, :func:`option_token_ids`);
* a distribution from the five options' log-probabilities (:func:`distribution_outputs`), a
  rating parsed from a generated answer (:func:`parse_rating`, :func:`generated_outputs`), and
  the recorded, explained outcome of an item that is not judged (:func:`missing_outputs`,
  :func:`bad_item_reason`, :func:`too_long_outputs`);
* the record of one judgment (:func:`make_record`) and the summary of many (:func:`summarize`);
* the token requests of items, for every backend: prompts tokenised in one batch
  (:func:`encode_texts`) and refused or cut by one set of length rules (:func:`token_requests`);
* for the backends that send token ids to an engine or a server (vLLM, served models): judging
  with the judgment cache chunk by chunk (:func:`judge_cached`), so that a killed run resumes;
* what besides model, adapter and prompt decides a judgment's outputs (:func:`scoring_config`,
  part of the judgment cache's key).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from vat_hf.errors import VatHfError
from vat_hf.prompts import OPTIONS, SCALE_MAX, SCALE_MIN

logger = logging.getLogger(__name__)

MODE_LOGPROB = "logprob"
MODE_MULTITOKEN = "logprob-multitoken"
MODE_GENERATE = "generate"
MODES = (MODE_LOGPROB, MODE_MULTITOKEN, MODE_GENERATE)
TRUNCATION_RULES = ("refuse", "left")

ITEM_KEYS = ("id", "scene_id", "country", "domain", "value", "micro_value", "polarity", "split")
"""The item metadata every record carries (the metric pairs and groups records by these)."""
OUTPUT_KEYS = ("rating", "probs", "option_mass", "option_logprobs", "argmax", "n_tokens", "mode", "missing_reason",
               "truncated_tokens", "generated", "score_path")
"""What a backend's outputs for one item may hold."""


class OptionTokenError(VatHfError, ValueError):
    """The tokenizer does not encode the rating options as single, distinct tokens."""


def option_token_ids(tokenizer, options: Sequence[str] = OPTIONS) -> List[int]:
    """The token id of each rating option, or :class:`OptionTokenError` when an option is not a
    single token or two options share one."""
    ids = []
    for option in options:
        encoded = tokenizer.encode(option, add_special_tokens=False)
        if len(encoded) != 1:
            raise OptionTokenError(
                f"option {option!r} is {len(encoded)} tokens {encoded} for this tokenizer; single-token "
                "scoring needs each rating option to be one token",
                fix="use mode 'auto' or 'logprob-multitoken'",
            )
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise OptionTokenError(f"rating options {list(options)} share token ids {ids}",
                               fix="use mode 'auto' or 'logprob-multitoken'")
    return ids


def resolve_mode(tokenizer, mode: str = "auto") -> Tuple[str, Optional[List[int]]]:
    """``(mode, option token ids or None)``: ``"auto"`` is ``logprob`` when the options are
    single, distinct tokens, else ``logprob-multitoken``; an explicit ``logprob`` on a tokenizer
    that does not allow it raises :class:`OptionTokenError`."""
    if mode not in ("auto",) + MODES:
        raise ValueError(f"mode {mode!r} is not 'auto' or one of {MODES}")
    try:
        ids: Optional[List[int]] = option_token_ids(tokenizer)
    except OptionTokenError:
        if mode == MODE_LOGPROB:
            raise
        ids = None
    if mode == "auto":
        mode = MODE_LOGPROB if ids is not None else MODE_MULTITOKEN
        if mode == MODE_MULTITOKEN:
            logger.info("rating options are not single distinct tokens for this tokenizer; scoring %s", mode)
    return mode, ids


def default_max_length(model_config, tokenizer) -> Optional[int]:
    """The longest prompt judged when none is given: the model's ``max_position_embeddings`` or
    the tokenizer's ``model_max_length``, whichever is smaller (None when neither is known)."""
    candidates = [getattr(model_config, "max_position_embeddings", None)]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 10_000_000:  # transformers' "no limit" is a huge int
        candidates.append(model_max)
    candidates = [c for c in candidates if isinstance(c, int) and c > 0]
    return min(candidates) if candidates else None


def scoring_config(tokenizer, mode: str, max_length: Optional[int], truncation: str, max_new_tokens: int) -> Dict:
    """Everything besides model, adapter and prompt that decides a judgment's outputs."""
    from vat_hf.evaluation.cache import tokenizer_fingerprint

    config = {"mode": mode, "options": list(OPTIONS), "tokenizer": tokenizer_fingerprint(tokenizer),
              "max_length": max_length, "truncation": truncation}
    if mode == MODE_GENERATE:
        config["max_new_tokens"] = max_new_tokens
    return config


# -- outputs of one item --------------------------------------------------------------------------

def distribution_outputs(logprobs: Sequence[float], mode: str) -> Dict:
    """Rating outputs from the five options' log-probabilities (full-vocabulary log-softmax).

    >>> out = distribution_outputs([math.log(0.1), math.log(0.3), -math.inf, math.log(0.1), math.log(0.5)], "logprob")
    >>> [round(p, 3) for p in out["probs"]], round(out["option_mass"], 3), round(out["rating"], 3), out["argmax"]
    ([0.1, 0.3, 0.0, 0.1, 0.5], 1.0, 3.6, 5)
    """
    logprobs = [float(x) for x in logprobs]
    top = max(logprobs)
    if not math.isfinite(top):
        dist, mass = [math.nan] * len(logprobs), 0.0
    else:
        weights = [math.exp(x - top) for x in logprobs]
        total = sum(weights)
        dist = [w / total for w in weights]
        mass = math.exp(top) * total
    return {
        "rating": float(sum((SCALE_MIN + k) * p for k, p in enumerate(dist))),
        "probs": dist,
        "option_mass": mass,
        "option_logprobs": logprobs,
        "argmax": SCALE_MIN + max(range(len(dist)), key=dist.__getitem__),
        "mode": mode,
    }


def missing_outputs(reason: str, mode: str, **extra) -> Dict:
    """The outputs of an item that got no rating: ``rating=None`` and the reason, never a guess."""
    return {"rating": None, "probs": None, "option_mass": None, "option_logprobs": None, "argmax": None,
            "mode": mode, "missing_reason": reason, **extra}


def bad_item_reason(item: Mapping) -> Optional[str]:
    """Why ``item`` cannot be judged at all (an empty scenario or action), or None.

    >>> bad_item_reason({"id": "x", "scenario": "S", "action": "  "})
    "item 'x': empty action; nothing to judge"
    """
    for key in ("scenario", "action"):
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"item {item.get('id')!r}: empty {key}; nothing to judge"
    return None


def too_long_outputs(item: Mapping, n_tokens: int, max_length: int, mode: str, reserved: int = 0) -> Dict:
    """The outputs of an item whose prompt (``n_tokens``) does not fit ``max_length`` less the
    ``reserved`` tokens of its answer, under ``truncation="refuse"``."""
    reserve = f" less {reserved} for the answer" if reserved else ""
    return missing_outputs(
        f"item {item.get('id')!r}: the prompt is {n_tokens} tokens, more than max_length {max_length}{reserve} "
        "(truncation='refuse'; use truncation='left' to keep the prompt's last tokens)",
        mode, n_tokens=n_tokens)


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def parse_rating(text: str) -> Tuple[Optional[int], Optional[str]]:
    """The rating in a generated answer: its first number, if that is an integer from 1 to 5.
    Returns ``(rating, None)`` or ``(None, reason)``; nothing is guessed.

    >>> parse_rating("4")
    (4, None)
    >>> parse_rating(" I'd say 2 out of 5.")
    (2, None)
    >>> parse_rating("3.5")
    (None, "the answer's first number '3.5' is not an integer from 1 to 5")
    >>> parse_rating("acceptable")
    (None, 'no number in the answer')
    """
    match = _NUMBER.search(text or "")
    if match is None:
        return None, "no number in the answer"
    token = match.group(0)
    if re.fullmatch(r"\d+", token) and SCALE_MIN <= int(token) <= SCALE_MAX:
        return int(token), None
    return None, f"the answer's first number {token!r} is not an integer from {SCALE_MIN} to {SCALE_MAX}"


def answer_complete(text: str) -> bool:
    """Whether a partial answer already decides its rating: its first number is followed by a
    character that cannot extend it (greedy decoding can stop there).

    >>> [answer_complete(t) for t in ("4", "4\\n", "3.", "3.5 ", "none yet")]
    [False, True, False, True, False]
    """
    match = _NUMBER.search(text or "")
    if match is None:
        return False
    rest = text[match.end():]
    return bool(rest) and not (rest[0] in ".," and len(rest) == 1)


def generated_outputs(text: str, **extra) -> Dict:
    """The outputs of a generated answer: its parsed rating, or missing with the answer and why.

    >>> generated_outputs("5 - fine")["rating"], generated_outputs("no idea")["missing_reason"]
    (5.0, "unparseable answer 'no idea': no number in the answer")
    """
    rating, reason = parse_rating(text)
    if rating is None:
        return missing_outputs(f"unparseable answer {text!r}: {reason}", MODE_GENERATE, generated=text, **extra)
    return {"rating": float(rating), "probs": None, "option_mass": None, "option_logprobs": None, "argmax": rating,
            "mode": MODE_GENERATE, "generated": text, **extra}


# -- records -------------------------------------------------------------------------------------

def check_item_ids(items: Sequence[Mapping]) -> None:
    """Every judged item needs an id (records are paired and cached by it); refuse any without."""
    for position, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("id") in (None, ""):
            raise ValueError(f"item {position} has no 'id'; every judged item needs one (see vat_hf.data.schema)")


def make_record(item: Mapping, outputs: Mapping, prompt_hash: str) -> Dict:
    """One judgment record: the item's metadata (:data:`ITEM_KEYS`), the hash of the text the model
    read (``item_hash``: scenario and action, the judgment cache's item hash; pairing checks that
    an item's text is the same before and after), the model's outputs (a mapping of
    :data:`OUTPUT_KEYS`) and the prompt's fingerprint."""
    from vat_hf.evaluation.cache import item_hash

    record = {key: item.get(key) for key in ITEM_KEYS}
    record["item_hash"] = item_hash(item)
    record.update({
        "rating": outputs.get("rating"),
        "probs": outputs.get("probs"),
        "option_mass": outputs.get("option_mass"),
        "argmax": outputs.get("argmax"),
        "prompt_hash": prompt_hash,
        "n_tokens": outputs.get("n_tokens"),
        "mode": outputs["mode"],
    })
    for key in ("option_logprobs", "missing_reason", "truncated_tokens", "generated", "score_path"):
        if outputs.get(key) is not None:
            record[key] = outputs[key]
    return record


@dataclass
class EvaluationSummary:
    n_items: int
    option_mass_mean: float
    option_mass_min: float
    mean_rating: float
    mode: str = MODE_LOGPROB
    n_missing: int = 0

    def to_dict(self) -> Dict:
        return dict(self.__dict__)


def summarize(records: Sequence[Mapping]) -> EvaluationSummary:
    """Counts, mean rating and option mass of a list of records (NaN where nothing was rated)."""
    masses = [r["option_mass"] for r in records if r.get("option_mass") is not None]
    ratings = [r["rating"] for r in records if r.get("rating") is not None]
    modes = sorted({r.get("mode") for r in records if r.get("mode")})
    return EvaluationSummary(
        n_items=len(records),
        option_mass_mean=float(sum(masses) / len(masses)) if masses else math.nan,
        option_mass_min=float(min(masses)) if masses else math.nan,
        mean_rating=float(sum(ratings) / len(ratings)) if ratings else math.nan,
        mode="+".join(modes) if modes else MODE_LOGPROB,
        n_missing=len(records) - len(ratings),
    )


@dataclass
class JudgeStats:
    """What one backend's judging did: items, cache hits, computed items, prefix reuse, time."""

    n_items: int = 0
    n_cached: int = 0
    n_computed: int = 0
    n_missing: int = 0
    n_prefix: int = 0
    prefix_tokens: int = 0
    n_scene_prefix: int = 0  # items that continued from their scene's prefix
    scene_prefixes: int = 0  # scene prefixes run (each once, against the root or a stem)
    stem_prefixes: int = 0  # stems run: common token prefixes of several scenes, each once
    action_prefixes: int = 0  # action nodes run: common token prefixes of items of one scene, each once
    n_action_prefix: int = 0  # items that continued from an action node below their scene
    scene_tokens: int = 0  # tokens run by the scene pass (scenes, stems, action nodes: each past its stem or the root)
    tokens_read: int = 0
    seconds: float = 0.0
    batches: int = 0
    linear_kernel: str = ""  # the float32 linear layers' CPU kernel, "onednn" or "torch" (empty: not decided)
    out_of_memory_splits: int = 0  # batches split after an out-of-memory error (the batch limits halved each time)
    max_batch_tokens: int = 0  # the batch limits in force at the end, lower than configured after such splits
    max_batch_size: int = 0  # (transformers evaluator; 0: another backend)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


# -- token requests and cached judging (the vLLM and served backends) ----------------------------

SCORE_PATHS = ("token-ids", "top-k", "per-option", "generate")
"""How a backend other than transformers produced an item's outputs (``score_path`` in its
record): ``token-ids``, the options' own log-probabilities at the answer's first position
(vLLM's ``logprob_token_ids``; for multi-token options, one such request per continuation
prefix); ``top-k``, read from the first position's top-k log-probabilities, all five options
among them; ``per-option``, the log-probability of each option as a continuation of the
prompt (vLLM's prompt log-probabilities, a server's ``echo``); ``generate``, a greedy answer
parsed. The first three are the same full-vocabulary numbers computed different ways."""


_BACKEND_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _offsetless_backend(tokenizer, sample: Sequence[str]):
    """The tokenizer's Rust backend when its ``encode_batch_fast`` (no character offsets) gives
    what ``tokenizer(texts, add_special_tokens=False)`` gives, else None. The backend is used only
    in the state transformers' call puts it in (no padding, no truncation, special tokens split as
    the tokenizer says), and the two are compared once per tokenizer, on ``sample``."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if (backend.padding is not None or backend.truncation is not None
            or backend.encode_special_tokens != bool(getattr(tokenizer, "split_special_tokens", False))):
        return None
    try:
        same = _BACKEND_CHECKED.get(tokenizer)
    except TypeError:  # not weak-referenceable: check every time
        same = None
    if same is None:
        sample = list(sample[:4])
        expected = tokenizer(sample, add_special_tokens=False)["input_ids"]
        same = [e.ids for e in backend.encode_batch_fast(sample, add_special_tokens=False)] == expected
        if not same:
            logger.info("%s: its backend's encode_batch_fast differs from the tokenizer's own call; using the "
                        "latter", type(tokenizer).__name__)
        with contextlib.suppress(TypeError):
            _BACKEND_CHECKED[tokenizer] = same
    return backend if same else None


def encode_texts(tokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Each text's token ids without added special tokens (a chat template writes its own), in one
    batch: the one way every backend tokenizes judging prompts.

    Through the fast tokenizer's backend without character offsets where that gives the same ids
    (:func:`_offsetless_backend`): on 4,096 corpus prompts (about 133 SmolLM2 tokens each) that
    took 0.067 ms a prompt against 0.101 through ``tokenizer(texts)`` with the tokenizer's two
    threads on a 2-core AMD EPYC, and 0.171 against 0.190 on one thread; the offsets and
    transformers' conversion of each encoding make the difference. The transformers evaluator
    calls it once a wave of items (``Evaluator.first_wave_items``), on a worker thread while the
    model runs the wave before."""
    texts = list(texts)
    if not texts:
        return []
    backend = _offsetless_backend(tokenizer, texts)
    if backend is not None:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass
class TokenRequest:
    """What one item sends: its prompt's token ids (after truncation) and, for
    ``logprob-multitoken``, each option's continuation tokens after them."""

    index: int
    ids: List[int]
    conts: Optional[List[List[int]]] = None
    truncated: int = 0


def token_requests(tokenizer, prompt, items: Sequence[Mapping], indices: Sequence[int], mode: str,
                   max_length: Optional[int], truncation: str, max_new_tokens: int
                   ) -> Tuple[List[TokenRequest], Dict[int, Dict]]:
    """Token requests for ``indices`` of ``items`` and the missing outputs of those refused, by
    the rules every backend shares: the chat-templated prompt encoded without special tokens
    (the template carries them); in ``logprob-multitoken`` the prompt followed by each option is
    encoded whole and split where the five stop sharing tokens; a prompt longer than
    ``max_length`` less its answer (``max_new_tokens`` in generate mode, the longest option's
    continuation in multitoken mode) is refused or keeps its last tokens."""
    from vat_hf.evaluation.prefix import common_prefix_length
    from vat_hf.prompts import judge_text

    texts = [judge_text(tokenizer, prompt, items[i]) for i in indices]
    requests: List[TokenRequest] = []
    missing: Dict[int, Dict] = {}
    k = len(OPTIONS)
    if mode == MODE_MULTITOKEN:
        encoded = encode_texts(tokenizer, [text + option for text in texts for option in OPTIONS])
    else:
        encoded = encode_texts(tokenizer, texts)
    for j, index in enumerate(indices):
        conts = None
        if mode == MODE_MULTITOKEN:
            full = encoded[j * k:(j + 1) * k]
            n = min(common_prefix_length(full), min(len(f) for f in full) - 1)
            ids, conts = full[0][:n], [f[n:] for f in full]
        else:
            ids = encoded[j]
        truncated = 0
        if max_length is not None:
            reserve = max_new_tokens if mode == MODE_GENERATE else (max(map(len, conts)) if conts else 0)
            limit = max(1, max_length - reserve)
            if len(ids) > limit:
                if truncation == "refuse":
                    missing[index] = too_long_outputs(items[index], len(ids), max_length, mode,
                                                      reserved=max_length - limit)
                    continue
                truncated = len(ids) - limit
                ids = ids[-limit:]
        requests.append(TokenRequest(index=index, ids=list(ids), conts=conts, truncated=truncated))
    return requests, missing


def request_outputs(request: TokenRequest, outputs: Dict, score_path: str) -> Dict:
    """``outputs`` of ``request`` with its prompt length, truncation and score path."""
    outputs["n_tokens"] = len(request.ids)
    if request.truncated:
        outputs["truncated_tokens"] = request.truncated
    outputs["score_path"] = score_path
    return outputs


Judged = Iterable[Tuple[List[Tuple[int, Dict]], bool]]
"""What a backend's judging yields, group by group: ``([(item index, outputs), ...], computed)``;
``computed`` groups hold model outputs (cached), the others refusals of bad input (not cached)."""


def judge_cached(items: Sequence[Mapping], judge_some: Callable[[List[int]], Judged], *, prompt, mode: str,
                 cache=None, stats: Optional[JudgeStats] = None, progress: bool = True,
                 desc: str = "judging") -> List[Dict]:
    """Records of ``items`` in their order: cached judgments are read, items with an empty
    scenario or action are refused, and ``judge_some(indices)`` judges the rest; every group it
    yields is appended to ``cache`` (a :class:`~vat_hf.evaluation.cache.JudgmentCache`, or None)
    before the next is asked for, so a run that fails or is killed midway keeps all it finished
    and a rerun judges only the rest."""
    import time

    from tqdm.auto import tqdm

    from vat_hf.evaluation.cache import cached_outputs

    started = time.perf_counter()
    check_item_ids(items)
    hashes, outputs = cached_outputs(cache, items)
    n_cached = sum(out is not None for out in outputs)
    todo = []
    for i, item in enumerate(items):
        if outputs[i] is None:
            reason = bad_item_reason(item)
            if reason:
                outputs[i] = missing_outputs(reason, mode)
            else:
                todo.append(i)
    n_computed = 0
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"{desc} ({prompt.name})", unit="item",
               disable=not progress)
    try:
        if todo:
            for pairs, computed in judge_some(todo):
                if cache is not None and computed:
                    cache.append((hashes[i], out) for i, out in pairs)
                for i, out in pairs:
                    outputs[i] = out
                n_computed += len(pairs)
                bar.update(len(pairs))
    finally:
        bar.close()
        if stats is not None:
            stats.n_items += len(items)
            stats.n_cached += n_cached
            stats.n_computed += n_computed
            stats.seconds += time.perf_counter() - started
    prompt_hash = prompt.fingerprint()
    records = [make_record(item, out, prompt_hash) for item, out in zip(items, outputs)]
    if stats is not None:
        stats.n_missing += sum(1 for r in records if r["rating"] is None)
    return records

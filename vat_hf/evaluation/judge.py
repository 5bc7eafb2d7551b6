"""The evaluator: a model rates each action's acceptability in its scene on a 1-5 scale.

Scoring modes (every record says which one produced it, in ``mode``):

``logprob`` (the default whenever the tokenizer allows it)
    After the chat-templated prompt (answer prefilled with "Rating: "), the next-token
    probabilities of the five option tokens "1".."5" are read from one forward pass and
    renormalised into a distribution; the record keeps that distribution, the expected rating,
    and the mass the options had before renormalising (a low mass means the model wanted to say
    something else).
``logprob-multitoken`` (chosen automatically when the options are not single, distinct tokens)
    Each option's text is appended to the prompt and its summed token log-probability is the
    option's score; the five are renormalised the same way, and ``option_mass`` is the sum of the
    five sequence probabilities. The prompt runs once per item (the options' first tokens are read
    from its last position); only options longer than one token need a second, tiny pass over
    their remaining tokens, against the prompt's key/value cache.
``generate`` (for models whose log-probabilities are not available)
    The model writes its answer greedily (``max_new_tokens``); the first number in it is the
    rating if it is an integer from 1 to 5. Anything else is recorded as missing, with the
    answer and the reason, and never guessed.

Throughput: prompts are sorted by token length and batched by a token budget (padded length x
rows), which keeps padding small; only the last position's logits are computed
(``logits_to_keep=1``); padding is on the left with explicit position ids, so a batched item's
distribution equals its unbatched one. The prompt's item-independent token prefix (system prompt,
few-shot demonstrations, the start of the last user turn) is run once and its key/value cache is
reused by every batch, and so is each scene's prefix below it (:mod:`vat_hf.evaluation.prefix`);
on a CPU, single-token batches read the shared prefix once per layer for all rows, with the rows
packed into one sequence (no padding in the linear layers). Items are prepared (rendered,
tokenised, matched to their prefixes) in waves of whole scenes, each next wave on a worker thread
while the model runs the current one (:attr:`Evaluator.first_wave_items`).

Running out of accelerator memory does not stop a run either: the batch that did not fit is
split (the batch limits are halved from its size, and stay lowered for the evaluator's later
batches) and judging goes on; only an item that does not fit alone stops it, with a
:class:`DeviceMemoryError` that names it, after every item judged before it has been handed over.

Bad input never stops a run: an item with an empty scenario or action, or a prompt longer than
``max_length`` (with ``truncation="refuse"``, the default), gets a record with ``rating=None`` and
a ``missing_reason`` naming the item and the problem; every other item is judged. With
``truncation="left"`` an over-long prompt keeps its last ``max_length`` tokens (the rule of
lm-evaluation-harness: the question and the answer prefix survive, the start of the system
prompt and demonstrations are dropped) and the record says how many tokens were dropped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size
from tqdm.auto import tqdm

from vat_hf.errors import VatHfError
from vat_hf.evaluation.linear_kernel import check_linear_kernel, chosen_linear_kernel, linears_on
from vat_hf.evaluation.prefix import (
    DUMMY_ITEMS,
    SHARED_PREFIX_ATTENTION,
    PrefixCache,
    SharedPrefixAttentionError,
    SharedPrefixBatch,
    action_nodes,
    adopt_prefixes,
    attention_implementation,
    cache_kwarg,
    common_prefix_length,
    host_to_device,
    keep_own,
    logits_to_keep_kwarg,
    output_cache,
    prefix_batch,
    scene_dummies,
    scene_stems,
    shared_attention_supported,
    supports_scene_prefixes,
    unwrap_model,
)
from vat_hf.evaluation.task import (
    MODE_GENERATE,
    MODE_LOGPROB,
    MODE_MULTITOKEN,
    TRUNCATION_RULES,
    JudgeStats,
    TokenRequest,
    answer_complete,
    bad_item_reason,
    check_item_ids,
    default_max_length,
    distribution_outputs,
    encode_texts,
    generated_outputs,
    make_record,
    missing_outputs,
    resolve_mode,
    scoring_config,
    token_requests,
)
from vat_hf.prompts import JudgePrompt, judge_text

logger = logging.getLogger(__name__)


def token_budget_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> List[List[int]]:
    """Indices grouped into batches: sorted by length (longest first, so an out-of-memory error
    shows at once), each batch's padded size ``max_len * rows`` within ``max_batch_tokens``.

    >>> token_budget_batches([5, 3, 9, 4], max_batch_tokens=12, max_batch_size=8)
    [[2], [0, 3], [1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: List[List[int]] = []
    current: List[int] = []
    for index in order:
        # Sorted longest first, so the batch's padded length is its first item's length.
        width = lengths[current[0]] if current else lengths[index]
        if current and (width * (len(current) + 1) > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def scene_waves(items: Sequence[Mapping], indices: Sequence[int], first_size: int, size: int) -> List[List[int]]:
    """``indices`` of ``items`` in waves of whole scenes (the items of one scenario text, scenes in
    order of first appearance): a first wave of up to ``first_size`` items, then waves of up to
    ``size``; a scene larger than its wave's size is a wave of its own. Each wave keeps the order
    of ``indices``, so a call that fits in one wave is judged as it would be without waves.

    >>> its = [{"scenario": s} for s in "aabbbca"]
    >>> scene_waves(its, range(7), first_size=3, size=4)
    [[0, 1, 6], [2, 3, 4, 5]]
    """
    by_scene: Dict[object, List[int]] = {}
    for i in indices:
        by_scene.setdefault(items[i].get("scenario"), []).append(i)
    waves: List[List[int]] = []
    current: List[int] = []
    limit = first_size
    for group in by_scene.values():
        if current and len(current) + len(group) > limit:
            waves.append(current)
            current, limit = [], size
        current.extend(group)
    if current:
        waves.append(current)
    position = {index: j for j, index in enumerate(indices)}
    return [sorted(wave, key=position.__getitem__) for wave in waves]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device, position_offset: int = 0) -> Dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` (positions count real
    tokens only, starting at ``position_offset``: the length of a cached prefix)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq):] = 1
    # Positions count real tokens only, so left padding does not shift them.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0) + position_offset
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    return {k: host_to_device(v, device) for k, v in out.items()}


def pack_rows(sequences: Sequence[Sequence[int]], offsets: Sequence[int], device) -> Dict[str, torch.Tensor]:
    """``input_ids`` and ``position_ids`` of shape (1, T): the sequences one after the other, each
    one's positions starting at its ``offsets`` entry (the length of the prefix it continues)."""
    input_ids = torch.tensor([[t for seq in sequences for t in seq]], dtype=torch.long)
    position_ids = torch.cat([torch.arange(len(seq), dtype=torch.long) + int(offset)
                              for seq, offset in zip(sequences, offsets)])[None]
    return {"input_ids": host_to_device(input_ids, device), "position_ids": host_to_device(position_ids, device)}


class DeviceMemoryError(VatHfError, RuntimeError):
    """An item (or a scene prefix) that does not fit in the accelerator's memory even in a batch of
    its own; every item judged before it was handed over (and cached, where there is a cache)."""


@dataclass
class _Request(TokenRequest):
    """A token request (``ids``: the tokens the main forward pass reads) and where it continues from."""

    use_prefix: bool = False
    # With use_prefix: the node below the root it continues from, its scene's prefix or an action
    # node below that (None: the root).
    scene: Optional[PrefixCache] = None


class Evaluator:
    """Judges items with one model under one :class:`JudgePrompt`.

    >>> # evaluator = Evaluator(loaded.model, loaded.tokenizer, prompt=value_prompt("Benevolence"))
    >>> # records = evaluator.judge(items)

    ``mode``: ``"auto"`` (``logprob`` when the options are single tokens, else
    ``logprob-multitoken``), or one of :data:`MODES`. ``prefix_reuse``: ``"auto"`` (reuse the
    shared prefix's key/value cache when it is at least ``min_prefix_tokens`` long, after a
    one-time check that it reproduces full encoding), ``True`` or ``False``. ``max_length``:
    the longest prompt judged (default: the model's ``max_position_embeddings``);
    ``truncation``: ``"refuse"`` or ``"left"`` for longer ones. ``cache_dir``: an on-disk
    judgment cache (:mod:`vat_hf.evaluation.cache`) under ``<cache_dir>/judgments``; finished
    items are read from it and new ones appended batch by batch. ``adapter_id`` / ``model_id``
    override the cache's automatic fingerprints of the adapter and the model. ``cache``: a
    ready :class:`~vat_hf.evaluation.cache.JudgmentCache` instead (an evaluation run builds it
    from the files on disk before any model is loaded; its prompt and scoring fingerprints must
    be this evaluator's). ``linear_kernel``: which CPU kernel runs the float32 linear layers
    (:mod:`vat_hf.evaluation.linear_kernel`; ``"auto"`` times MKL against oneDNN once per model).
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: Optional[JudgePrompt] = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        progress: bool = True,
        mode: str = "auto",
        prefix_reuse: Union[str, bool] = "auto",
        min_prefix_tokens: int = 16,
        max_length: Optional[int] = None,
        truncation: str = "refuse",
        max_new_tokens: int = 8,
        cache_dir: Optional[Union[str, Path]] = None,
        cache_rank: int = 0,
        model_id: Optional[str] = None,
        adapter_id: Optional[str] = None,
        cache=None,
        linear_kernel: str = "auto",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt or JudgePrompt()
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.progress = progress
        if truncation not in TRUNCATION_RULES:
            raise ValueError(f"truncation {truncation!r} is not one of {TRUNCATION_RULES}")
        self.linear_kernel = check_linear_kernel(linear_kernel)
        self._linear_choice: Optional[Dict] = None
        if prefix_reuse not in ("auto", True, False):
            raise ValueError(f"prefix_reuse {prefix_reuse!r} is not 'auto', True or False")
        self.mode, self.option_ids = resolve_mode(tokenizer, mode)
        self._option_index_tensor: Optional[torch.Tensor] = None
        self.prefix_reuse = prefix_reuse
        self.min_prefix_tokens = min_prefix_tokens
        self.truncation = truncation
        self.max_new_tokens = max_new_tokens
        self.max_length = max_length if max_length is not None else self._default_max_length()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad
        self.template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_rank = cache_rank
        self._model_id = model_id
        self._adapter_id = adapter_id
        self._cache = cache
        if cache is not None and cache.fingerprints["prompt"] != self.prompt.fingerprint():
            raise ValueError("the judgment cache given was built for another prompt")
        if cache is not None and cache.fingerprints["scoring"] != self.scoring_fingerprint():
            raise ValueError(f"the judgment cache given was built for another scoring setup than {self.scoring_config()}")
        self._cache_kw = cache_kwarg(model)
        self._keep_kw = logits_to_keep_kwarg(model)
        self._prefix: Optional[PrefixCache] = None
        self._prefix_checked = prefix_reuse is True
        # Whether prefix batches read the shared prefix once per layer for all rows (None: not
        # decided yet; see shared_prefix_attention). Single-token scoring only: the other modes
        # continue from the batch cache, which the stitched layout serves.
        self._shared_attention: Optional[bool] = None if self.mode == MODE_LOGPROB else False
        self.stats = JudgeStats()

    # -- setup --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _default_max_length(self) -> Optional[int]:
        return default_max_length(getattr(unwrap_model(self.model), "config", None), self.tokenizer)

    def scoring_config(self) -> Dict:
        """Everything besides model, adapter and prompt that decides a judgment's outputs."""
        return scoring_config(self.tokenizer, self.mode, self.max_length, self.truncation, self.max_new_tokens)

    def scoring_fingerprint(self) -> str:
        from vat_hf.evaluation.cache import sha256_json

        return sha256_json(self.scoring_config())[:32]

    @property
    def cache(self):
        """The :class:`~vat_hf.evaluation.cache.JudgmentCache` (None without ``cache_dir``)."""
        if self._cache is None and self.cache_dir is not None:
            from vat_hf.evaluation.cache import JudgmentCache, adapter_fingerprint, model_fingerprint

            model_fp = self._model_id if self._model_id is not None else model_fingerprint(self.model)
            adapter_fp = self._adapter_id if self._adapter_id is not None else adapter_fingerprint(self.model)
            scoring = self.scoring_config()
            self._cache = JudgmentCache(
                self.cache_dir, model_fp, adapter_fp, self.prompt.fingerprint(), self.scoring_fingerprint(),
                rank=self.cache_rank,
                meta={"model": str(getattr(getattr(unwrap_model(self.model), "config", None), "_name_or_path", "")),
                      "prompt": self.prompt.to_dict(), "scoring": scoring},
            )
        return self._cache

    def texts(self, items: Sequence[Mapping]) -> List[str]:
        return [judge_text(self.tokenizer, self.prompt, item) for item in items]

    def encode(self, items: Sequence[Mapping]) -> List[List[int]]:
        return encode_texts(self.tokenizer, self.texts(items))

    def shared_prefix(self) -> Optional[PrefixCache]:
        """The prompt's item-independent token prefix (None when reuse is off or it is short)."""
        if self.prefix_reuse is False:
            return None
        if self._prefix is None:
            encoded = self.encode([dict(d) for d in DUMMY_ITEMS])
            n = common_prefix_length(encoded)
            self._prefix = PrefixCache(encoded[0][:n])
        if self.prefix_reuse == "auto" and len(self._prefix) < self.min_prefix_tokens:
            return None
        return self._prefix

    min_scene_tokens: int = 4
    """A scene prefix is used when it adds at least this many tokens below the root and at least two
    judged items continue from it (one item gains nothing from running its scene separately); a
    stem when it adds at least this many below its own stem."""

    min_action_tokens: int = 1
    """An action node (below a scene) is used when it adds at least this many tokens below its own
    stem. Most openings items of a scene share are one to three tokens (" I", " I focus on"): on
    160 corpus items at 40 per scene, 1 read 4.6% fewer tokens than no action nodes and 4 only 1.0%,
    with times within the rounds' noise (``docs/evaluator.md``)."""

    def _scene_prefixes(self, root: PrefixCache, items: Sequence[Mapping], requests: Sequence[_Request]) -> None:
        """Set ``request.scene`` for the requests whose items share a scene prefix: per distinct
        scenario, the longest common token prefix of the prompt rendered with dummy actions (token
        ids, as for the root), used by the items whose own encoding starts with it; then, below
        each scene, the action nodes its items share (:func:`action_nodes`)."""
        if not root.scene_reuse:
            return
        by_scenario: Dict[str, List[_Request]] = {}
        for r in requests:
            if r.use_prefix:
                by_scenario.setdefault(items[r.index]["scenario"], []).append(r)
        scenarios = [s for s, group in by_scenario.items() if len(group) > 1]
        if not scenarios:
            return
        dummies = self.encode([d for s in scenarios for d in scene_dummies({"scenario": s})])
        k = len(DUMMY_ITEMS)
        nodes: Dict[Tuple[int, ...], PrefixCache] = {}
        for j, scenario in enumerate(scenarios):
            encoded = dummies[j * k:(j + 1) * k]
            ids = tuple(encoded[0][:common_prefix_length(encoded)])
            if len(ids) - len(root) < self.min_scene_tokens or list(ids[:len(root)]) != root.ids:
                continue
            members = [r for r in by_scenario[scenario] if len(r.ids) > len(ids) and tuple(r.ids[:len(ids)]) == ids]
            if len(members) < 2:
                continue
            # Different scenarios can render to the same tokens: one node each distinct prefix.
            node = nodes.setdefault(ids, PrefixCache(ids, parent=root))
            for r in members:
                r.scene = node
        scene_stems(root, list(nodes.values()), self.min_scene_tokens)
        # Below each scene, the opening words its items' actions share.
        by_scene: Dict[int, List[_Request]] = {}
        for r in requests:
            if r.scene is not None:
                by_scene.setdefault(id(r.scene), []).append(r)
        for members in by_scene.values():
            scene = members[0].scene
            for r, node in zip(members, action_nodes(root, scene, [r.ids for r in members], self.min_action_tokens)):
                r.scene = node

    def _run_scene_prefixes(self, requests: Sequence[_Request]) -> None:
        """Run every scene prefix the requests continue from, and the stems above them (each one's
        tokens below its stem, or below the root, batched like items), stems first, and keep each
        one's own keys/values."""
        pending: Dict[int, PrefixCache] = {}
        for r in requests:
            node = r.scene
            while node is not None and node.own is None and id(node) not in pending:
                pending[id(node)] = node
                node = node.stem
        while pending:
            # A round: the nodes whose stem (if any) has its keys; their tokens past it, batched.
            ready = [n for n in pending.values() if n.stem is None or n.stem.own is not None]
            lengths = [n.new_length for n in ready]
            for batch in token_budget_batches(lengths, self.max_batch_tokens, self.max_batch_size):
                chunk = [ready[i] for i in batch]
                pseudo = [_Request(index=-1, ids=n.ids, use_prefix=True, scene=n.stem) for n in chunk]
                try:
                    with torch.inference_mode():
                        _, (cache, _, _) = self._forward(pseudo, use_prefix=True, want_cache=True)
                except RuntimeError as error:
                    if not self._lower_limits(error, [lengths[i] for i in batch],
                                              f"a {chunk[0].kind} prefix of {len(chunk[0].ids)} tokens"):
                        raise
                    break  # the round again, without the nodes done, in batches of the lowered limits
                for row, node in enumerate(chunk):
                    keep_own(node, cache, row)
                    del pending[id(node)]
                    counter = f"{node.kind}_prefixes"
                    setattr(self.stats, counter, getattr(self.stats, counter) + 1)
                self.stats.scene_tokens += sum(lengths[i] for i in batch)
                del cache

    # -- requests -----------------------------------------------------------------------------
    def _requests(self, items: Sequence[Mapping], indices: Sequence[int]) -> Tuple[List[_Request], Dict[int, Dict]]:
        """Token requests for ``indices`` of ``items`` (:func:`~vat_hf.evaluation.task.token_requests`,
        the length rules every backend shares), with the prefix each continues from, and missing
        outputs for those refused."""
        tokens, missing = token_requests(self.tokenizer, self.prompt, items, indices, self.mode, self.max_length,
                                         self.truncation, self.max_new_tokens)
        prefix = self.shared_prefix()
        requests = [_Request(**vars(r), use_prefix=bool(prefix is not None and prefix.matches(r.ids))) for r in tokens]
        if prefix is not None:
            self._scene_prefixes(prefix, items, requests)
        return requests, missing

    # -- model passes -------------------------------------------------------------------------
    @property
    def prefix_attention(self) -> Optional[str]:
        """How prefix batches read the shared prefix: ``"shared"`` (once per layer for all rows,
        :func:`~vat_hf.evaluation.prefix.shared_prefix_attention`), ``"stitched"`` (its keys/values
        copied into every row), or None while no prefix batch has run."""
        if self._prefix is None or self._prefix._cache is None or self._shared_attention is None:
            return None
        return "shared" if self._shared_attention else "stitched"

    def _use_shared_attention(self) -> bool:
        if self._shared_attention is None:
            self._shared_attention = shared_attention_supported(self.model, self._prefix.cache(self.model, self.device))
        return self._shared_attention

    def _forward(self, requests: Sequence[_Request], use_prefix: bool, want_cache: bool = False):
        """One forward pass over the batch; returns last-position logits (rows, vocab) and, with
        ``want_cache``, the cache, the full attention mask and each row's last position. With
        ``use_prefix`` each row continues from its scene prefix (``request.scene``) or the root."""
        kwargs = {"use_cache": bool(want_cache or use_prefix)}
        packed = None
        if use_prefix:
            nodes = [r.scene or self._prefix for r in requests]
            shared = self._use_shared_attention()
            cache, prefix_mask, offsets = prefix_batch(self._prefix, nodes, self.model, self.device, keep=want_cache,
                                                       shared=shared)
            seqs = [r.ids[len(node):] for r, node in zip(requests, nodes)]
            kwargs[self._cache_kw] = cache
            if shared:
                packed = SharedPrefixBatch(cache, [len(s) for s in seqs], prefix_mask, len(self._prefix),
                                           cache.layers[0].prefix_keys.dtype)
                batch = pack_rows(seqs, offsets.view(-1).tolist(), self.device)
                kwargs.update(attention_mask=packed.mask, shared_prefix=packed)
                mask = torch.cat([prefix_mask, packed.real.long()], dim=1)
            else:
                batch = left_pad(seqs, self.pad_id, self.device, position_offset=offsets)
                mask = torch.cat([prefix_mask, batch["attention_mask"]], dim=1)
                kwargs["attention_mask"] = mask
        else:
            seqs = [r.ids for r in requests]
            batch = left_pad(seqs, self.pad_id, self.device)
            mask = batch["attention_mask"]
            if want_cache or len({len(s) for s in seqs}) > 1:
                kwargs["attention_mask"] = mask
            # (No padding and no prefix: no mask at all, so attention can take its causal fast path.)
        kwargs.update(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
        if packed is None:
            if self._keep_kw:
                kwargs[self._keep_kw] = 1
            out = self.model(**kwargs)
            logits = out.logits[:, -1, :]
            last_pos = batch["position_ids"][:, -1]
        else:
            # Packed rows: the logits of each row's last token.
            if self._keep_kw == "logits_to_keep":
                kwargs["logits_to_keep"] = packed.last
            with attention_implementation(self.model, SHARED_PREFIX_ATTENTION):
                out = self.model(**kwargs)
            logits = out.logits[0] if self._keep_kw == "logits_to_keep" else out.logits[0, packed.last]
            last_pos = batch["position_ids"][0, packed.last]
        self.stats.batches += 1
        self.stats.tokens_read += sum(len(s) for s in seqs)
        if not want_cache:
            return logits, None
        return logits, (output_cache(out), mask, last_pos)

    def _check_prefix(self, request: _Request, full: Optional[torch.Tensor] = None) -> bool:
        """One-time check (per level) that continuing from the request's prefix (its scene's, or the
        root) reproduces a full encoding of the same tokens (``full``: its logits, if computed).
        If continuing from the root with the shared-prefix attention does not, the stitched batch
        layout is checked instead (and used from then on when it passes); at the scene level the
        attention is already checked, so a difference there turns scene prefixes off."""
        level = "scene" if request.scene is not None else "shared"
        with torch.inference_mode():
            if full is None:
                full, _ = self._forward([request], use_prefix=False)
            try:
                reused, _ = self._forward([request], use_prefix=True)
            except SharedPrefixAttentionError as error:
                reused, reason = None, str(error)
        tol = 1e-3 if full.dtype == torch.float32 else 5e-2
        if reused is not None:
            diff = float((torch.softmax(reused.float(), -1) - torch.softmax(full.float(), -1)).abs().max())
            if diff <= tol:
                return True
            reason = f"changed next-token probabilities by {diff:.3g}"
        if self._shared_attention and request.scene is None:
            logger.warning("shared-prefix attention %s for this model; copying the prefix's keys/values into "
                           "every row instead", reason)
            self._shared_attention = False
            return self._check_prefix(request, full)
        logger.warning("%s prefix key/value reuse %s for this model; %s", level, reason,
                       "encoding below the shared prefix instead" if request.scene is not None
                       else "encoding every prompt in full instead")
        return False

    def _multitoken_outputs(self, requests: Sequence[_Request], use_prefix: bool) -> List[Dict]:
        k = len(requests[0].conts)
        rows = len(requests)
        longest = max(len(c) for r in requests for c in r.conts)
        logits, state = self._forward(requests, use_prefix, want_cache=longest > 1)
        first = torch.log_softmax(logits.float(), dim=-1)
        first_ids = host_to_device(torch.tensor([[c[0] for c in r.conts] for r in requests]), first.device)
        scores = first.gather(1, first_ids).cpu().double()
        if longest > 1:
            cache, mask, last_pos = state
            # Continue every (item, option) row from the item's cache with the option's tokens
            # but its last, right-padded; logits at each step give the next option token.
            cache.batch_repeat_interleave(k)
            steps = longest - 1
            cont_ids = torch.full((rows * k, steps), self.pad_id, dtype=torch.long)
            cont_mask = torch.zeros((rows * k, steps), dtype=torch.long)
            targets = torch.zeros((rows * k, steps), dtype=torch.long)
            for row, r in enumerate(requests):
                for o, c in enumerate(r.conts):
                    if len(c) > 1:
                        cont_ids[row * k + o, :len(c) - 1] = torch.tensor(c[:-1])
                        cont_mask[row * k + o, :len(c) - 1] = 1
                        targets[row * k + o, :len(c) - 1] = torch.tensor(c[1:])
            device = self.device
            cont_ids, cont_mask, targets = (host_to_device(t, device) for t in (cont_ids, cont_mask, targets))
            positions = last_pos.repeat_interleave(k)[:, None] + 1 + torch.arange(steps, device=device)[None, :]
            kwargs = {"input_ids": cont_ids, "position_ids": positions, "use_cache": True,
                      "attention_mask": torch.cat([mask.repeat_interleave(k, dim=0), cont_mask], dim=1),
                      self._cache_kw: cache}
            out = self.model(**kwargs)
            rest = torch.log_softmax(out.logits[:, -steps:, :].float(), dim=-1)
            picked = rest.gather(-1, targets[..., None])[..., 0]
            picked = torch.where(cont_mask.bool(), picked, torch.zeros_like(picked))
            scores += picked.sum(-1).cpu().double().view(rows, k)
        return [distribution_outputs(row.tolist(), MODE_MULTITOKEN) for row in scores]

    def _stop_ids(self) -> set:
        ids = set()
        for source in (getattr(unwrap_model(self.model), "generation_config", None), self.tokenizer):
            eos = getattr(source, "eos_token_id", None)
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
        return ids

    def _generate_outputs(self, requests: Sequence[_Request], use_prefix: bool) -> List[Dict]:
        stop = self._stop_ids()
        rows = len(requests)
        generated: List[List[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        logits, (cache, mask, last_pos) = self._forward(requests, use_prefix, want_cache=True)
        device = self.device
        for step in range(self.max_new_tokens):
            next_ids = logits.argmax(dim=-1)
            for row, token in enumerate(next_ids.tolist()):
                if done[row]:
                    continue
                if token in stop:
                    done[row] = True
                    continue
                generated[row].append(token)
                if answer_complete(self.tokenizer.decode(generated[row], skip_special_tokens=True)):
                    done[row] = True
            if all(done) or step == self.max_new_tokens - 1:
                break
            last_pos = last_pos + 1
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
            kwargs = {"input_ids": next_ids[:, None], "position_ids": last_pos[:, None], "attention_mask": mask,
                      "use_cache": True, self._cache_kw: cache}
            if self._keep_kw:
                kwargs[self._keep_kw] = 1
            out = self.model(**kwargs)
            logits = out.logits[:, -1, :]
            cache = output_cache(out) or cache
        return [generated_outputs(self.tokenizer.decode(tokens, skip_special_tokens=True)) for tokens in generated]

    @torch.inference_mode()
    def score_batch(self, requests: Sequence[_Request], use_prefix: bool) -> List[Dict]:
        """Outputs of one batch in the modes scored batch by batch (single-token ``logprob``
        batches are pipelined by :meth:`_launch_logprob` / :meth:`_finish_logprob` instead)."""
        if self.mode == MODE_MULTITOKEN:
            return self._multitoken_outputs(requests, use_prefix)
        if self.mode == MODE_GENERATE:
            return self._generate_outputs(requests, use_prefix)
        raise ValueError(f"score_batch scores {MODE_MULTITOKEN!r} or {MODE_GENERATE!r}, not {self.mode!r}")

    # -- judging ------------------------------------------------------------------------------
    @staticmethod
    def _bad_item(item: Mapping) -> Optional[str]:
        return bad_item_reason(item)

    def linear_kernel_choice(self) -> Dict:
        """The CPU kernel of the float32 linear layers (decided once, on first use; in
        ``stats.linear_kernel``)."""
        if self._linear_choice is None:
            self._linear_choice = chosen_linear_kernel(self.model, self.linear_kernel)
            self.stats.linear_kernel = self._linear_choice["kernel"]
        return self._linear_choice

    def iter_outputs(self, items: Sequence[Mapping], indices: Optional[Sequence[int]] = None
                     ) -> Iterator[Tuple[List[Tuple[int, Dict]], bool]]:
        """Yield ``([(index, outputs), ...], computed)`` batch by batch for ``indices`` of
        ``items`` (all by default): first the items with nothing to judge (``computed=False``),
        then wave by wave (:attr:`first_wave_items`) the wave's prompts refused as too long
        (``computed=False``) and its scored batches (``computed=True``), not in input order. No
        cache involved."""
        with linears_on(self.model, self.linear_kernel_choice()["kernel"]):
            yield from self._iter_outputs(items, indices)

    first_wave_items: int = 256
    """Items are prepared for the model (chat template rendered, tokenised, matched to their
    prefixes) in waves of whole scenes, each next wave on a worker thread while the model runs
    the current one, so the accelerator does not wait for every item's preparation before its
    first batch (2.24 s for the 14,723 corpus items on a 2-core CPU). The first wave is small so
    that the model starts at once; the others hold ``wave_items``. Scene prefixes are computed per
    wave and freed after it, so the keys/values kept at once are those of at most two waves'
    scenes (the last batch of one is read back after the next one's first is launched), not of
    every scene judged."""

    wave_items: int = 4096
    """Items in a wave after the first (a scene larger than that is a wave of its own). Batches
    are formed within a wave, so a smaller wave sorts fewer lengths together and pads a little
    more, and holds fewer scene keys at once: on the 14,723 corpus items with prefix reuse, waves
    of 4,096 padded 1.2% more tokens than one wave (2,048: 2.3%) and held at most 28% of the
    scene nodes' tokens (``docs/evaluator.md``, "Preparing items in waves")."""

    def _iter_outputs(self, items: Sequence[Mapping], indices: Optional[Sequence[int]]
                      ) -> Iterator[Tuple[List[Tuple[int, Dict]], bool]]:
        indices = list(range(len(items))) if indices is None else list(indices)
        bad = {i: self._bad_item(items[i]) for i in indices}
        refused = [(i, missing_outputs(reason, self.mode)) for i, reason in bad.items() if reason]
        if refused:
            yield refused, False
        waves = scene_waves(items, [i for i in indices if not bad[i]], self.first_wave_items, self.wave_items)
        # The root prefix is encoded here, before a worker thread reads it.
        self.shared_prefix()
        # Generate mode decodes with the tokenizer between its passes, on this thread: its waves
        # are prepared here too (a tokenizer is not used from two threads at once).
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vat-hf-prepare") \
            if len(waves) > 1 and self.mode != MODE_GENERATE else None
        pending = None
        try:
            future = None
            for k, wave in enumerate(waves):
                requests, missing = future.result() if future is not None else self._requests(items, wave)
                future = None
                if ahead is not None and k + 1 < len(waves):
                    # The next wave is prepared while this one runs: the tokenizer's Rust code and
                    # torch's kernels release the GIL (rendering the chat template does not).
                    future = ahead.submit(self._requests, items, waves[k + 1])
                if missing:
                    yield sorted(missing.items()), False
                self._settle_prefixes(requests)
                queue = deque(self._batches(requests))
                while queue:
                    use_prefix, chunk = queue.popleft()
                    try:
                        if self.mode != MODE_LOGPROB:
                            outputs = self.score_batch(chunk, use_prefix)
                        else:
                            # Single-token scoring is pipelined: the next batch is launched before
                            # the previous one's results are read back, so the accelerator never
                            # waits on Python (across waves too).
                            launched = self._launch_logprob(chunk, use_prefix)
                    except RuntimeError as error:
                        first = chunk[0]
                        if not self._lower_limits(error, [self._read_length(r, use_prefix) for r in chunk],
                                                  f"item {items[first.index].get('id')!r} ({len(first.ids)} tokens)"):
                            raise
                        # This batch and the wave's others, in batches of the lowered limits.
                        queue = deque(self._batches(chunk + [r for _, batch in queue for r in batch]))
                        continue
                    if self.mode != MODE_LOGPROB:
                        yield self._pairs(chunk, outputs), True
                        continue
                    if pending is not None:
                        done, pending = pending, None
                        yield self._finish_logprob(*done), True
                    pending = (chunk, *launched)
                del requests
            if pending is not None:
                done, pending = pending, None
                yield self._finish_logprob(*done), True
        except GeneratorExit:
            raise
        except BaseException:
            # Whatever stops the run (a wave that failed to prepare, an item too large for the
            # device, an interrupt), the batch already launched is handed over (and cached) first.
            if pending is not None:
                done, pending = pending, None
                yield self._finish_logprob(*done), True
            raise
        finally:
            if ahead is not None:
                ahead.shutdown(wait=True, cancel_futures=True)

    def _lower_limits(self, error: RuntimeError, lengths: Sequence[int], what: str) -> bool:
        """After ``error`` in a pass over a batch of rows reading ``lengths`` tokens each: False when
        it is not an out-of-memory error (accelerate's ``should_reduce_batch_size``: CUDA, ROCm,
        XPU, MPS, CPU); else halve the batch limits from that batch's size (rows, and padded tokens)
        so that it splits, free the device's cached memory and return True. A batch of one row
        cannot split: :class:`DeviceMemoryError`, naming ``what`` (what the row was)."""
        if isinstance(error, DeviceMemoryError) or not should_reduce_batch_size(error):
            return False  # (a DeviceMemoryError quotes the allocator's message: already handled)
        rows, width = len(lengths), max(lengths)
        if rows <= 1:
            raise DeviceMemoryError(
                f"out of memory on {self.device}: {what} does not fit in a batch of its own ({width} tokens read; "
                f"{error.args[0].splitlines()[0]}); every item judged before it was handed over",
                fix="free memory on the device (another process may hold some), load the model in a smaller dtype "
                    "(eval.dtype bfloat16) or refuse such long prompts (eval.max_length); then run the same command "
                    "again: judged items are read from the judgment cache") from error
        before = (self.max_batch_tokens, self.max_batch_size)
        self.max_batch_size = max(1, min(self.max_batch_size, rows) // 2)
        self.max_batch_tokens = max(1, min(self.max_batch_tokens, rows * width) // 2)
        self.stats.out_of_memory_splits += 1
        logger.warning("out of memory on %s in a batch of %d rows x %d tokens; lowering the batch limits from %d "
                       "tokens and %d rows to %d and %d, and going on", self.device, rows, width, *before,
                       self.max_batch_tokens, self.max_batch_size)
        # The failed pass's tensors are held by the traceback's frames: drop them, then return the
        # device memory they held to the allocator's pool (and the pool's free blocks to the device).
        error.__traceback__ = None
        clear_device_cache(garbage_collection=True)
        return True

    def _settle_prefixes(self, requests: Sequence[_Request]) -> None:
        """Make a wave's requests use only the prefix levels that passed their one-time checks
        (running each check on the first wave that can), and run the wave's scene prefixes.

        Each level is checked once, on the shortest item that uses it (the cheapest full
        encoding); both levels are checked on the same item when they can be, so that one full
        encoding serves both. The scene level's item is taken below a stem when there is one, so
        that its check covers a scene computed from its stem."""
        if self.prefix_reuse is False:
            # Turned off by an earlier wave's check after this wave was prepared.
            for r in requests:
                r.use_prefix, r.scene = False, None
        scene_first = min((r for r in requests if r.scene is not None),
                          key=lambda r: (r.scene.stem is None, len(r.ids)), default=None)
        full = None
        if not self._prefix_checked:
            first = scene_first or min((r for r in requests if r.use_prefix), key=lambda r: len(r.ids), default=None)
            # Checked only once a request uses the prefix: a wave (or call) whose items all miss it
            # (all cut by left truncation, say) leaves the check to the next one that does.
            if first is not None:
                with self._checking(first):
                    with torch.inference_mode():
                        full, (cache, _, _) = self._forward([first], use_prefix=False, want_cache=True)
                    adopt_prefixes(self._prefix, cache)
                    del cache
                    passed = self._check_prefix(replace(first, scene=None), full)
                if not passed:
                    self.prefix_reuse = False
                    for r in requests:
                        r.use_prefix, r.scene = False, None
                    scene_first = full = None
                self._prefix_checked = True
        root = self._prefix if any(r.use_prefix for r in requests) else None
        if root is not None and scene_first is not None:
            if not supports_scene_prefixes(root.cache(self.model, self.device)):
                root.scene_reuse = False
            elif not root.scene_checked:
                with self._checking(scene_first):
                    self._run_scene_prefixes([scene_first])
                    root.scene_reuse = self._check_prefix(scene_first, full)
                root.scene_checked = True
            if not root.scene_reuse:
                for r in requests:
                    r.scene = None
            self._run_scene_prefixes(requests)
        uses = [r for r in requests if r.use_prefix]
        self.stats.n_prefix += len(uses)
        self.stats.n_scene_prefix += sum(1 for r in uses if r.scene is not None)
        self.stats.n_action_prefix += sum(1 for r in uses if r.scene is not None and r.scene.kind == "action")
        if uses:
            self.stats.prefix_tokens = len(self._prefix)

    @contextmanager
    def _checking(self, request: _Request) -> Iterator[None]:
        """Around a one-time check's passes over ``request`` alone: for want of memory, a
        :class:`DeviceMemoryError` (one item cannot split); any other error as it is."""
        try:
            yield
        except RuntimeError as error:
            n = len(request.ids)
            self._lower_limits(error, [n], f"the item of a one-time prefix check ({n} tokens)")
            raise

    def _batches(self, requests: Sequence[_Request]) -> Iterator[Tuple[bool, List[_Request]]]:
        """``(use_prefix, batch)``: the requests that continue from a prefix, then the others, each
        group in token-budget batches of the tokens the pass reads."""
        for use_prefix in (True, False):
            group = [r for r in requests if r.use_prefix == use_prefix]
            lengths = [self._read_length(r, use_prefix) for r in group]
            for batch in token_budget_batches(lengths, self.max_batch_tokens, self.max_batch_size):
                yield use_prefix, [group[i] for i in batch]

    def _read_length(self, request: _Request, use_prefix: bool) -> int:
        """The tokens a pass reads for ``request``: those past its prefix, or all of them."""
        return len(request.ids) - (len(request.scene or self._prefix) if use_prefix else 0)

    def _launch_logprob(self, chunk: Sequence[_Request], use_prefix: bool):
        with torch.inference_mode():
            logits, _ = self._forward(chunk, use_prefix)
            selected = torch.log_softmax(logits.float(), dim=-1).index_select(1, self._option_index(logits.device))
            if selected.device.type != "cuda":
                return selected.cpu().double(), None
            host = torch.empty(selected.shape, dtype=selected.dtype, pin_memory=True)
            host.copy_(selected, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return host, event

    def _option_index(self, device: torch.device) -> torch.Tensor:
        # Once per device: indexing a GPU tensor with a Python list copies the list to the GPU
        # in every batch, and that copy waits for the GPU.
        if self._option_index_tensor is None or self._option_index_tensor.device != device:
            self._option_index_tensor = host_to_device(torch.tensor(self.option_ids, dtype=torch.long), device)
        return self._option_index_tensor

    def _finish_logprob(self, chunk: Sequence[_Request], host: torch.Tensor, event) -> List[Tuple[int, Dict]]:
        if event is not None:
            event.synchronize()
        outputs = [distribution_outputs(row, MODE_LOGPROB) for row in host.double().tolist()]
        return self._pairs(chunk, outputs)

    @staticmethod
    def _pairs(chunk: Sequence[_Request], outputs: List[Dict]) -> List[Tuple[int, Dict]]:
        for out, r in zip(outputs, chunk):
            out["n_tokens"] = len(r.ids)
            if r.truncated:
                out["truncated_tokens"] = r.truncated
        return [(r.index, out) for r, out in zip(chunk, outputs)]

    def judge(self, items: Sequence[Mapping]) -> List[Dict]:
        """Records in the order of ``items``; with ``cache_dir``, finished items come from the
        cache and each newly judged batch is appended to it before the next one starts."""
        from vat_hf.evaluation.cache import cached_outputs

        started = time.perf_counter()
        check_item_ids(items)
        prompt_hash = self.prompt.fingerprint()
        cache = self.cache
        hashes, outputs = cached_outputs(cache, items)
        todo = [i for i, out in enumerate(outputs) if out is None]
        n_cached = len(items) - len(todo)
        bar = tqdm(total=len(items), initial=n_cached, desc=f"judging ({self.prompt.name})", unit="item",
                   disable=not self.progress)
        try:
            for pairs, computed in self.iter_outputs(items, todo):
                if cache is not None and computed:
                    # Refusals of bad input are cheap and deterministic: only model outputs are cached.
                    cache.append((hashes[i], out) for i, out in pairs)
                for i, out in pairs:
                    outputs[i] = out
                bar.update(len(pairs))
        finally:
            bar.close()
        records = [make_record(item, out, prompt_hash) for item, out in zip(items, outputs)]
        self.stats.n_items += len(items)
        self.stats.n_cached += n_cached
        self.stats.n_computed += len(todo)
        self.stats.n_missing += sum(1 for r in records if r["rating"] is None)
        self.stats.seconds += time.perf_counter() - started
        self.stats.max_batch_tokens, self.stats.max_batch_size = self.max_batch_tokens, self.max_batch_size
        return records

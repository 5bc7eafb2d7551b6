"""Reusing the shared prompt prefix's key/value cache across items.

Every judged item's chat-templated prompt starts with the same tokens: the system prompt, any
few-shot demonstrations, and the opening of the last user turn ("<|im_start|>user\\nScenario:").
With an 8-shot prompt intervention that is about 1,000 tokens out of 1,100. The evaluator runs
that prefix once (batch 1), keeps its key/value cache, and for each batch runs only the items'
suffix tokens against a batch view of that cache.

Finding the prefix is done on token ids, never on text: the prompt is rendered for a few
dissimilar dummy items and the longest common *token* prefix of their encodings is the shared
prefix. An item uses the cached prefix only if its own encoding really starts with those ids
(BPE merges across the boundary would otherwise make the cached tokens differ from what the
model would have read); any item that does not is encoded in full.

With left-padded suffixes, a batch row reads ``[prefix | pads | suffix]``: the pads are masked
out by the attention mask and position ids count real tokens only (``prefix_len + cumsum(mask)
- 1``), so each row sees exactly the positions and keys of its unbatched full encoding.

Two levels (a two-level prefix tree): the **root** is the item-independent prefix above, run
once per evaluator; below it, each **scene** (the items that share a scenario sentence) has its
own prefix, the prompt up to where the action begins ("...Scenario: <scenario>\nAction:"),
found the same way on token ids (the prompt rendered for the scene's scenario with dissimilar
dummy actions). A scene prefix is run once per run, batched with the other scenes' against the
root cache, and only its own tokens' keys/values are kept (:class:`PrefixCache` with a
``parent``). Batches mix scenes: each row reads ``[root | pads | its scene's tokens | pads |
its own tokens]``, the pads masked and positions continuing from the row's real prefix length,
so every row still sees exactly what its full encoding would. Each level is checked once against
full encoding before it is used.
"""

from __future__ import annotations

import copy
import inspect
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

DUMMY_ITEMS = (
    {"scenario": "A", "action": "B"},
    {"scenario": "7 zebras, (quietly).", "action": "\"Why?\" - she asked"},
    {"scenario": "\n\tItem", "action": "x"},
)
"""Dissimilar items: their rendered prompts share exactly the item-independent token prefix."""


def scene_dummies(item: Mapping) -> List[Dict[str, str]]:
    """``item``'s scenario with each dummy action: their rendered prompts share exactly the
    scene's token prefix (everything before the action's first token).

    >>> [d["action"] for d in scene_dummies({"scenario": "S", "action": "mine"})]
    ['B', '"Why?" - she asked', 'x']
    """
    return [{"scenario": item["scenario"], "action": dummy["action"]} for dummy in DUMMY_ITEMS]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token id sequences.

    >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    >>> common_prefix_length([[1, 2]])
    2
    """
    if not sequences:
        return 0
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for other in sequences[1:]:
        lo = 0
        while lo < n and other[lo] == first[lo]:
            lo += 1
        n = lo
    return n


def unwrap_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _forward_parameters(model) -> Mapping:
    try:
        return inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return {}


def cache_kwarg(model) -> str:
    """Name of the forward argument that takes a key/value cache: ``cache`` in transformers >=
    5.2x, ``past_key_values`` before."""
    params = _forward_parameters(model)
    return "cache" if "cache" in params else "past_key_values"


def logits_to_keep_kwarg(model) -> Optional[str]:
    """``logits_to_keep`` (or the older ``num_logits_to_keep``) when the model supports it."""
    params = _forward_parameters(model)
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return "logits_to_keep"
    return None


def output_cache(output):
    """The cache returned by a forward pass (``cache`` or ``past_key_values``)."""
    for name in ("cache", "past_key_values"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


try:  # transformers >= 4.56
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover
    DynamicLayer = None


if DynamicLayer is not None:
    class ReadOnlyPrefixLayer(DynamicLayer):
        """A layer of a batch's view of the prefix cache that returns prefix + new keys to the
        attention but stores nothing: each layer's concatenation is freed as soon as the layer is
        done, instead of every layer's (rows x (prefix + suffix)) keys living until the forward
        pass ends. For passes whose cache is not needed afterwards."""

        def update(self, key_states, value_states, *args, **kwargs):
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


if DynamicLayer is not None:
    class StitchedPrefixLayer(DynamicLayer):
        """A batch layer over the root's keys (a batch view, never copied) and each row's scene
        part (``scene_keys``): the batch's new keys are concatenated onto both in one copy. With
        ``keep`` the result is stored (a cache to continue from), else it is freed with the layer's
        attention (like :class:`ReadOnlyPrefixLayer`)."""

        keep = True

        def update(self, key_states, value_states, *args, **kwargs):
            keys = torch.cat([self.keys, self.scene_keys, key_states], dim=-2)
            values = torch.cat([self.values, self.scene_values, value_states], dim=-2)
            if self.keep:
                self.keys, self.values = keys, values
                self.scene_keys, self.scene_values = keys[..., :0, :], values[..., :0, :]
            return keys, values

        def get_seq_length(self) -> int:
            return self.keys.shape[-2] + self.scene_keys.shape[-2]

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self.scene_keys = self.scene_keys.repeat_interleave(repeats, dim=0)
            self.scene_values = self.scene_values.repeat_interleave(repeats, dim=0)


def expand_cache(cache, batch_size: int, keep: bool = True):
    """A batch-``batch_size`` cache that reads the batch-1 ``cache`` without copying it.

    Each layer's keys/values become ``expand`` views; the model's ``update`` concatenates the
    batch's new keys onto them, which materialises the batch copy once (the view itself never
    is, and the original prefix cache is never modified). ``keep=False``: plain layers do not
    keep the concatenation (:class:`ReadOnlyPrefixLayer`), for a pass whose cache is dropped.
    """
    layers = getattr(cache, "layers", None)
    if layers is None:  # old-style caches: copy and repeat
        new = copy.deepcopy(cache)
        new.batch_repeat_interleave(batch_size)
        return new
    new = copy.copy(cache)
    new.layers = []
    for layer in layers:
        clone = copy.copy(layer)
        if not keep and DynamicLayer is not None and type(layer) is DynamicLayer:
            clone.__class__ = ReadOnlyPrefixLayer
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.numel():
            clone.keys = keys.expand(batch_size, *keys.shape[1:])
            clone.values = layer.values.expand(batch_size, *layer.values.shape[1:])
        new.layers.append(clone)
    return new


class PrefixCache:
    """A prefix's token ids (from position 0) and, computed once, its key/value cache.

    The root (``parent=None``) keeps its whole batch-1 cache (:meth:`cache`, computed lazily).
    A scene prefix (``parent=root``) keeps only its own tokens' keys/values, per layer
    (:attr:`own`, set by the evaluator's batched scene pass); :func:`prefix_batch` puts the
    root and each row's own part together for a batch.
    """

    def __init__(self, ids: Sequence[int], parent: Optional["PrefixCache"] = None):
        self.ids = list(ids)
        self.parent = parent
        self._cache = None
        self.own: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None
        # Root only: whether scene prefixes below it are used, and whether their one-time check
        # against full encoding has run (the root's own check is the evaluator's).
        self.scene_reuse = True
        self.scene_checked = False

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def own_length(self) -> int:
        """Tokens this level adds below its parent (all of them for the root)."""
        return len(self.ids) - (len(self.parent) if self.parent is not None else 0)

    def matches(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` starts with the prefix and has at least one token after it."""
        n = len(self.ids)
        return len(ids) > n and list(ids[:n]) == self.ids

    def cache(self, model, device):
        if self.parent is not None:
            raise TypeError("a scene prefix keeps only its own keys/values; build batches with prefix_batch")
        if self._cache is None:
            input_ids = torch.tensor([self.ids], dtype=torch.long, device=device)
            with torch.inference_mode():
                kwargs = {"input_ids": input_ids, "use_cache": True}
                keep = logits_to_keep_kwarg(model)
                if keep:
                    kwargs[keep] = 1
                out = model(**kwargs)
            self._cache = output_cache(out)
            if self._cache is None:
                raise RuntimeError("the model returned no key/value cache; prefix reuse is not possible")
        return self._cache

    def batch_cache(self, model, device, batch_size: int, keep: bool = True):
        return expand_cache(self.cache(model, device), batch_size, keep=keep)


def supports_scene_prefixes(cache) -> bool:
    """Scene prefixes are stitched into plain per-layer key/value tensors (``DynamicLayer``);
    other cache layouts (sliding windows, quantized or old-style caches) use the root only."""
    layers = getattr(cache, "layers", None)
    return DynamicLayer is not None and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def adopt_prefixes(root: PrefixCache, scene: Optional[PrefixCache], cache) -> None:
    """Take the root's cache (and ``scene``'s own keys/values) from the batch-1 cache of a full
    encoding of an item that starts with them: a causal model's keys at a position depend only on
    the tokens before it, so the first ``len(root)`` positions of that cache are the root's cache.
    The one-time check encodes an item in full anyway; this spares running the root (about 1,000
    tokens with 8 shots) a second time. Plain per-layer caches only (else nothing is taken)."""
    if not supports_scene_prefixes(cache):
        return
    n = len(root)
    if root._cache is None:
        adopted = copy.copy(cache)
        adopted.layers = []
        for layer in cache.layers:
            clone = copy.copy(layer)
            clone.keys, clone.values = layer.keys[..., :n, :].clone(), layer.values[..., :n, :].clone()
            adopted.layers.append(clone)
        root._cache = adopted
    if scene is not None and scene.own is None:
        scene.own = [(layer.keys[..., n:len(scene), :].clone(), layer.values[..., n:len(scene), :].clone())
                     for layer in cache.layers]


def keep_own(node: PrefixCache, cache, row: int, width: int) -> None:
    """Store ``node``'s own keys/values from row ``row`` of a scene pass's output ``cache``, whose
    layers read ``[root | left pads | the row's tokens]`` with ``width`` tokens after the root."""
    root_len = len(node.parent)
    n = node.own_length
    lo, hi = root_len + width - n, root_len + width
    node.own = [(layer.keys[row:row + 1, :, lo:hi].clone(), layer.values[row:row + 1, :, lo:hi].clone())
                for layer in cache.layers]


def prefix_batch(root: PrefixCache, nodes: Sequence[PrefixCache], model, device, keep: bool = True):
    """The cache, prefix attention mask and position offsets for a batch whose row ``i`` continues
    from ``nodes[i]`` (the root itself, or a scene prefix below it).

    Returns ``(cache, mask, offsets)``: ``mask`` is ``(rows, len(root) + width)`` (``width``: the
    longest scene part in the batch; shorter ones are left-padded and masked), ``offsets`` the
    ``(rows, 1)`` position of each row's first own token (its real prefix length). With only the
    root in the batch this is :meth:`PrefixCache.batch_cache` with an all-ones mask.
    """
    root_cache = root.cache(model, device)
    rows = len(nodes)
    root_len = len(root)
    lengths = [0 if node is root else node.own_length for node in nodes]
    width = max(lengths)
    mask = torch.ones((rows, root_len + width), dtype=torch.long, device=device)
    offsets = torch.tensor([[root_len + n] for n in lengths], dtype=torch.long)
    if width == 0:
        return expand_cache(root_cache, rows, keep=keep), mask, offsets
    for row, n in enumerate(lengths):
        mask[row, root_len:root_len + width - n] = 0
    new = copy.copy(root_cache)
    new.layers = []
    for index, layer in enumerate(root_cache.layers):
        clone = copy.copy(layer)
        clone.__class__ = StitchedPrefixLayer
        clone.keep = keep
        clone.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
        clone.values = layer.values.expand(rows, *layer.values.shape[1:])
        scene = []
        for tensor_index, full in enumerate((layer.keys, layer.values)):
            # Pads are zeros; the mask keeps them out of every attention row.
            part = full.new_zeros((rows, full.shape[1], width, full.shape[3]))
            for row, node in enumerate(nodes):
                if lengths[row]:
                    part[row, :, width - lengths[row]:] = node.own[index][tensor_index][0]
            scene.append(part)
        clone.scene_keys, clone.scene_values = scene
        new.layers.append(clone)
    return new, mask, offsets

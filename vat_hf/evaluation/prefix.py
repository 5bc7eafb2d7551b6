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
"""

from __future__ import annotations

import copy
import inspect
from typing import List, Mapping, Optional, Sequence

import torch

DUMMY_ITEMS = (
    {"scenario": "A", "action": "B"},
    {"scenario": "7 zebras, (quietly).", "action": "\"Why?\" - she asked"},
    {"scenario": "\n\tItem", "action": "x"},
)
"""Dissimilar items: their rendered prompts share exactly the item-independent token prefix."""


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


def shared_prefix_ids(encode, prompt_texts: Sequence[str]) -> List[int]:
    """The longest common token prefix of the encodings of ``prompt_texts``."""
    encoded = [list(encode(text)) for text in prompt_texts]
    return encoded[0][: common_prefix_length(encoded)]


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
    """The shared prefix's token ids and (computed lazily, once) its batch-1 key/value cache."""

    def __init__(self, ids: Sequence[int]):
        self.ids = list(ids)
        self._cache = None

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` starts with the prefix and has at least one token after it."""
        n = len(self.ids)
        return len(ids) > n and list(ids[:n]) == self.ids

    def cache(self, model, device):
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

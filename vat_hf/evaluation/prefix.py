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

Scenes share tokens too: every scenario of the ValueActionLens corpus opens with "I live in
<country>, and I am facing a situation related to <domain>", so scenes of one country share a dozen
tokens below the root. The scene pass runs those once: the scene prefixes' ids form a radix tree
(:func:`scene_stems`), each inner node (a **stem**, the common token prefix of several scenes) is
run like a scene, and a scene below a stem runs only its tokens past the stem, its own keys being
the stem's own followed by its new ones (:func:`keep_own`). Items still continue from their scene,
so item batches are the same; on 160 corpus items from 87 scenes the scene pass ran 611 tokens
instead of 1,438, and the whole judging read 11% fewer tokens. A causal model's keys at a position depend only on the tokens up to it, so a
stem's keys are the same in every scene below it, and the stem pass is the same batch layout as
items continuing from a scene (``[root | pads | part | pads | new]``), which the scene level's check
covers (the check item is chosen below a stem when there is one).

Below a scene, items share the opening words of their actions ("I actively participate in ...").
Those openings are **action nodes** (:func:`action_nodes`): the radix tree of the items' token
ids below their scene, each item keeping at least its last token (the answer is read there). An
action node is run in the scene pass like a stem, and the items below it continue from it instead
of from their scene, so their rows read only the tokens past it.

Two batch layouts serve those rows. **Stitched** (any device, every scoring mode): each layer's
keys are ``[root | scene part | new]`` per row, the root a batch view concatenated into every row.
**Shared** (CPU, single-token scoring): the rows' own tokens are packed into one sequence (the
linear layers see no padding, :class:`SharedPrefixBatch`), and an attention function registered in
transformers' ``AttentionInterface`` (:func:`shared_prefix_attention`) attends every row's queries
to the one batch-1 copy of the root at once and to its own keys under its own mask, merging the
two parts by their log-sum-exp: the same softmax, without a copy of the root per row. With an
8-shot prompt (1,056 shared tokens) the copies and the attention to them were half of a batch's
time. A model whose attention the shared layout does not reproduce fails the root level's
one-time check and gets the stitched layout.
"""

from __future__ import annotations

import contextlib
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


def host_to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``. To a CUDA device through pinned memory and without
    blocking: a plain ``.to(device)`` from pageable memory waits until the GPU has finished all the
    work queued before it, so one such copy per batch would keep the host from preparing the next
    batch while the GPU runs this one (the evaluator launches a batch before reading the previous
    one's results). Every host-to-device copy of judging goes through here."""
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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


NODE_KINDS = ("scene", "stem", "action")
"""What a node below the root holds: a scene's prefix (the prompt up to its action), a stem (the
common token prefix of several scenes) or an action node (a common token prefix of several
items of one scene, into their actions)."""


class PrefixCache:
    """A prefix's token ids (from position 0) and, computed once, its key/value cache.

    The root (``parent=None``) keeps its whole batch-1 cache (:meth:`cache`, computed lazily).
    A scene prefix (``parent=root``) keeps only its own tokens' keys/values, all layers in one
    tensor (:attr:`own`, set by the evaluator's batched scene pass); :func:`prefix_batch` puts the
    root and each row's own part together for a batch.
    """

    def __init__(self, ids: Sequence[int], parent: Optional["PrefixCache"] = None, kind: str = "scene"):
        self.ids = list(ids)
        self.parent = parent
        # Below the root, what the node is (:data:`NODE_KINDS`): a scene's prefix, a stem above
        # scenes, or an action node (items of one scene sharing the opening of their action). The
        # evaluator counts the nodes it runs by kind (``JudgeStats.<kind>_prefixes``).
        if parent is not None and kind not in NODE_KINDS:
            raise ValueError(f"PrefixCache kind {kind!r}: expected one of {NODE_KINDS}")
        self.kind = "root" if parent is None else kind
        self._cache = None
        # (layers, 2, kv_heads, own tokens, head_dim): keys and values of every layer in one tensor,
        # so that a batch copies each node once, not once per layer and row (on a GPU each copy is
        # a kernel launch: copied per layer, a 28-layer model's scene batches ran 15 times the
        # copies of the question prefix alone and were slower than it on an H200).
        self.own: Optional[torch.Tensor] = None
        # Below the root: the stem the scene pass continues from to compute ``own`` (None: the root).
        self.stem: Optional["PrefixCache"] = None
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

    @property
    def new_length(self) -> int:
        """Tokens the scene pass runs for this node: those past its stem (or its parent)."""
        return len(self.ids) - len(self.stem if self.stem is not None else self.parent)

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
    """Scene prefixes are stitched into plain per-layer key/value tensors (``DynamicLayer``) of
    one shape in every layer, keys and values alike (a node's keys are stacked across layers);
    other cache layouts (sliding windows, quantized or old-style caches, layers of different head
    counts) use the root only."""
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or not layers or not all(type(layer) is DynamicLayer for layer in layers):
        return False
    shapes = {(t.shape[1], t.shape[3], t.dtype) for layer in layers for t in (layer.keys, layer.values)}
    return len(shapes) == 1


def adopt_prefixes(root: PrefixCache, cache) -> None:
    """Take the root's cache from the batch-1 cache of a full encoding of an item that starts with
    it: a causal model's keys at a position depend only on the tokens before it, so the first
    ``len(root)`` positions of that cache are the root's cache. The one-time check encodes an item
    in full anyway; this spares running the root (about 1,000 tokens with 8 shots) a second time.
    (The item's scene is not taken: it is computed by the scene pass, which the scene level's check
    then covers.) Plain per-layer caches only (else nothing is taken)."""
    if not supports_scene_prefixes(cache) or root._cache is not None:
        return
    n = len(root)
    adopted = copy.copy(cache)
    adopted.layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        clone.keys, clone.values = layer.keys[..., :n, :].clone(), layer.values[..., :n, :].clone()
        adopted.layers.append(clone)
    root._cache = adopted


def scene_stems(root: PrefixCache, nodes: Sequence[PrefixCache], min_tokens: int,
                below: Optional[PrefixCache] = None, kind: str = "stem") -> List[PrefixCache]:
    """Set each node's :attr:`PrefixCache.stem` from the radix tree of the nodes' token ids below
    the root (or below the node ``below``), and return the stems it creates (new nodes of
    ``kind``, to run before the nodes below them).

    A stem is the longest common token prefix of two or more nodes that branch after it, made
    only where it adds at least ``min_tokens`` below its own stem (a shorter one costs a pass for
    little); a node whose ids are such a common prefix serves as the stem itself. The nodes' ids
    must be distinct and start with the root's (with ``below``'s, and be longer: the nodes it
    does not put below a new stem get ``below`` as theirs).

    >>> root = PrefixCache([0])
    >>> def nodes():
    ...     return [PrefixCache(ids, parent=root) for ids in
    ...             ([0, 1, 2, 3, 4, 5, 9], [0, 1, 2, 3, 4, 6], [0, 1, 2, 3, 7, 8], [0, 3, 1, 1, 1])]
    >>> a, b, c, d = nodes()
    >>> [s.ids for s in scene_stems(root, [a, b, c, d], min_tokens=2)]
    [[0, 1, 2, 3]]
    >>> a.stem is b.stem is c.stem, a.stem.ids, d.stem is None
    (True, [0, 1, 2, 3], True)
    >>> a, b, c, d = nodes()  # with one token enough, [0, 1, 2, 3, 4] is a stem below that one
    >>> stems = scene_stems(root, [a, b, c, d], min_tokens=1)
    >>> [s.ids for s in stems], a.stem is b.stem is stems[1], stems[1].stem is stems[0] is c.stem
    ([[0, 1, 2, 3], [0, 1, 2, 3, 4]], True, True)
    """
    stems: List[PrefixCache] = []

    def branch(group: Sequence[PrefixCache], start: int, stem: Optional[PrefixCache]) -> None:
        by_token: Dict[int, List[PrefixCache]] = {}
        for node in group:
            by_token.setdefault(node.ids[start], []).append(node)
        for members in by_token.values():
            if len(members) == 1:
                members[0].stem = stem
                continue
            end = common_prefix_length([m.ids for m in members])
            exact = [m for m in members if len(m) == end]
            if exact:  # one node is the others' common prefix: it is their stem
                exact[0].stem = stem
                branch([m for m in members if m is not exact[0]], end, exact[0])
            elif end - len(stem if stem is not None else root) >= min_tokens:
                inner = PrefixCache(members[0].ids[:end], parent=root, kind=kind)
                inner.stem = stem
                stems.append(inner)
                branch(members, end, inner)
            else:
                branch(members, end, stem)

    branch(list(nodes), len(below if below is not None else root), below)
    return stems


def action_nodes(root: PrefixCache, scene: PrefixCache, rows: Sequence[Sequence[int]], min_tokens: int
                 ) -> List[PrefixCache]:
    """The node each of ``rows`` (token ids of items continuing from ``scene``) continues from:
    ``scene``, or an action node below it, where two or more of the items share the opening
    tokens of their actions ("I decide to ...").

    The nodes are the radix tree of the rows' ids below the scene (:func:`scene_stems`), each row
    keeping at least its last token as its own (the answer is read there): a common prefix of two
    or more rows that adds at least ``min_tokens`` below its stem, a row's prefix that is another
    row's, or the prefix of rows that are the same tokens.

    >>> root = PrefixCache([0]); scene = PrefixCache([0, 1], parent=root)
    >>> rows = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 6, 7, 8], [0, 1, 2, 3, 4, 6, 7, 9], [0, 1, 9, 9]]
    >>> [n.ids for n in action_nodes(root, scene, rows, min_tokens=2)]
    [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 6, 7], [0, 1, 2, 3, 4, 6, 7], [0, 1]]
    >>> nodes = action_nodes(root, scene, rows, min_tokens=3)  # [.., 6, 7] adds two: not a node
    >>> [n.ids for n in nodes], nodes[0].kind, nodes[0].stem is scene
    ([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1]], 'action', True)
    """
    # One leaf per distinct row less its last token; a leaf is run as a node only where rows
    # below it save tokens: it is another leaf's stem, or the prefix of repeated rows.
    leaves: Dict[Tuple[int, ...], PrefixCache] = {}
    repeats: Dict[Tuple[int, ...], int] = {}
    for ids in rows:
        if len(ids) - 1 > len(scene):
            key = tuple(ids[:-1])
            leaves.setdefault(key, PrefixCache(key, parent=root, kind="action"))
            repeats[key] = repeats.get(key, 0) + 1
    stems = scene_stems(root, list(leaves.values()), min_tokens, below=scene, kind="action")
    nodes = {id(n) for n in stems} | {id(leaf.stem) for leaf in leaves.values()}
    nodes |= {id(leaf) for key, leaf in leaves.items() if repeats[key] > 1 and leaf.new_length >= min_tokens}
    out = []
    for ids in rows:
        leaf = leaves.get(tuple(ids[:-1]))
        out.append(scene if leaf is None else leaf if id(leaf) in nodes else leaf.stem)
    return out


def keep_own(node: PrefixCache, cache, row: int) -> None:
    """Store ``node``'s own keys/values (all its tokens below the root) from row ``row`` of a scene
    pass's output ``cache``, whose layers end with the row's left-padded new tokens (``[root | pads
    | stem part | pads | tokens]`` stitched, or ``[pads | stem part | pads | tokens]`` below a
    shared root, :class:`SharedPrefixLayer`): the stem's own keys, if any, then the new ones."""
    n = node.new_length
    layers = cache.layers
    # One stacked copy (so the pass's batch cache can be freed), (layers, 2, kv_heads, n, head_dim).
    new = torch.stack([t[row, :, -n:] for layer in layers for t in (layer.keys, layer.values)])
    new = new.view(len(layers), 2, *new.shape[1:])
    node.own = new if node.stem is None else torch.cat([node.stem.own, new], dim=-2)


def _scene_parts(root_cache, nodes: Sequence[PrefixCache], lengths: Sequence[int], width: int):
    """Per layer, each row's scene part, ``(rows, kv_heads, width, head_dim)`` keys and values,
    left-padded with zeros (the mask keeps the pads out of every attention row): views of one
    tensor, filled with one copy per distinct node (all layers at once)."""
    first = root_cache.layers[0].keys
    n_layers = len(root_cache.layers)
    parts = first.new_zeros((n_layers, 2, len(nodes), first.shape[1], width, first.shape[3]))
    rows_of: Dict[int, List[int]] = {}
    for row, node in enumerate(nodes):
        if lengths[row]:
            rows_of.setdefault(id(node), []).append(row)
    for node_rows in rows_of.values():
        node = nodes[node_rows[0]]
        n = lengths[node_rows[0]]
        if len(node_rows) == 1:
            parts[:, :, node_rows[0], :, width - n:] = node.own
        else:
            index = host_to_device(torch.tensor(node_rows), parts.device)
            parts[:, :, index, :, width - n:] = node.own[:, :, None]
    return [(parts[i, 0], parts[i, 1]) for i in range(n_layers)]


def prefix_batch(root: PrefixCache, nodes: Sequence[PrefixCache], model, device, keep: bool = True,
                 shared: bool = False):
    """The cache, prefix attention mask and position offsets for a batch whose row ``i`` continues
    from ``nodes[i]`` (the root itself, or a scene prefix below it).

    Returns ``(cache, mask, offsets)``: ``mask`` is ``(rows, len(root) + width)`` (``width``: the
    longest scene part in the batch; shorter ones are left-padded and masked), ``offsets`` the
    ``(rows, 1)`` position of each row's first own token (its real prefix length). ``shared``: the
    cache's layers are :class:`SharedPrefixLayer` (the root read once for all rows by
    :func:`shared_prefix_attention`), else the root is stitched into every row's keys. With only
    the root in a stitched batch this is :meth:`PrefixCache.batch_cache` with an all-ones mask.
    """
    root_cache = root.cache(model, device)
    rows = len(nodes)
    root_len = len(root)
    lengths = [0 if node is root else node.own_length for node in nodes]
    width = max(lengths)
    scene_lengths = torch.tensor(lengths, dtype=torch.long)[:, None]
    offsets = root_len + scene_lengths
    # Built here and sent in one copy (not one per row): each row's scene part is left-padded to
    # ``width``.
    scene_mask = torch.arange(width)[None, :] >= width - scene_lengths
    mask = host_to_device(torch.cat([torch.ones((rows, root_len), dtype=torch.long), scene_mask.long()], dim=1), device)
    if shared:
        return shared_prefix_cache(root_cache, nodes, lengths, width, keep), mask, offsets
    if width == 0:
        return expand_cache(root_cache, rows, keep=keep), mask, offsets
    new = copy.copy(root_cache)
    new.layers = []
    for layer, (scene_keys, scene_values) in zip(root_cache.layers, _scene_parts(root_cache, nodes, lengths, width)):
        clone = copy.copy(layer)
        clone.__class__ = StitchedPrefixLayer
        clone.keep = keep
        clone.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
        clone.values = layer.values.expand(rows, *layer.values.shape[1:])
        clone.scene_keys, clone.scene_values = scene_keys, scene_values
        new.layers.append(clone)
    return new, mask, offsets


# -- the shared prefix read once per layer for all rows ------------------------------------------
#
# With a long shared prefix (about 1,000 tokens with 8 shots) the stitched batch above spends
# about half its time copying the prefix's keys/values into every row (and, for grouped-query
# attention with a mask, into every query head) and attending to those copies. Softmax attention
# over the keys [prefix | own] splits exactly into the two parts, merged by their log-sum-exp:
#     out = out_prefix * exp(lse_prefix - lse) + out_own * exp(lse_own - lse),
#     lse = logaddexp(lse_prefix, lse_own),
# so the prefix part can be computed with every row's queries stacked against the one batch-1
# copy of the prefix (one attention call per layer, keys read once), and the own part (scene and
# item tokens) with each row's padded, causal mask. It is the same computation as sdpa or eager
# attention up to float rounding; the evaluator's one-time check per level compares it with full
# encoding before it is used, and falls back to the stitched batch if it differs. When the prefix
# is short beside the rows' own keys, the copies are cheaper than the second call and the merge,
# and the attention copies it (attend_with_copied_prefix, still with packed linear layers).

SHARED_PREFIX_ATTENTION = "vat_hf_shared_prefix"
"""The name of :func:`shared_prefix_attention` in transformers' ``AttentionInterface``."""

_ATTENTION_WITH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class SharedPrefixAttentionError(RuntimeError):
    """The model's attention asked for something the shared-prefix attention does not reproduce."""


if DynamicLayer is not None:
    class SharedPrefixLayer(DynamicLayer):
        """A batch layer below a batch-1 shared prefix: ``prefix_keys``/``prefix_values`` (1,
        kv_heads, prefix, head_dim) are the root's own tensors, never copied or expanded;
        ``keys``/``values`` hold only each row's part below it (its scene part, left-padded), and
        ``update`` unpacks the batch's new keys (:class:`SharedPrefixBatch`) and concatenates them
        onto that part alone. With ``keep`` the result
        is stored (a scene pass keeps its rows' keys), else it is freed with the layer's attention."""

        keep = True

        def update(self, key_states, value_states, *args, **kwargs):
            # The batch's new keys arrive packed (1, kv_heads, T, dim): unpacked into its rows.
            key_states, value_states = self.batch.unpack(key_states), self.batch.unpack(value_states)
            if self.keys is None or self.keys.shape[-2] == 0:
                keys, values = key_states.contiguous(), value_states.contiguous()
            else:
                keys = torch.cat([self.keys, key_states], dim=-2)
                values = torch.cat([self.values, value_states], dim=-2)
            if self.keep:
                self.keys, self.values = keys, values
            return keys, values

        def get_seq_length(self) -> int:
            own = self.keys.shape[-2] if self.keys is not None else 0
            return self.prefix_keys.shape[-2] + own


def shared_prefix_cache(root_cache, nodes: Sequence[PrefixCache], lengths: Sequence[int], width: int, keep: bool):
    """A batch cache of :class:`SharedPrefixLayer` over ``root_cache`` (each row's scene part from
    ``nodes``, ``width`` wide; empty when every row continues from the root)."""
    rows = len(nodes)
    parts = _scene_parts(root_cache, nodes, lengths, width) if width else None
    new = copy.copy(root_cache)
    new.layers = []
    for index, layer in enumerate(root_cache.layers):
        clone = copy.copy(layer)
        clone.__class__ = SharedPrefixLayer
        clone.keep = keep
        clone.prefix_keys, clone.prefix_values = layer.keys, layer.values
        if parts is None:
            shape = (rows, layer.keys.shape[1], 0, layer.keys.shape[3])
            clone.keys, clone.values = layer.keys.new_empty(shape), layer.values.new_empty(shape)
        else:
            clone.keys, clone.values = parts[index]
        new.layers.append(clone)
    return new


def shared_attention_supported(model, cache) -> bool:
    """Whether :func:`shared_prefix_attention` can serve ``model``: a CPU model whose attention goes
    through transformers' ``AttentionInterface`` (sdpa or eager; others are not reproduced), a
    plain per-layer prefix cache, and torch's CPU attention kernel that returns the log-sum-exp."""
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    try:
        device = next(base.parameters()).device
    except (StopIteration, AttributeError):
        return False
    can_set = getattr(base, "_can_set_attn_implementation", None)
    return (_ATTENTION_WITH_LSE is not None and device.type == "cpu" and supports_scene_prefixes(cache)
            and callable(can_set) and can_set() and hasattr(base, "set_attn_implementation")
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager"))


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run ``model`` with attention implementation ``name`` (registered in transformers'
    ``AttentionInterface``) inside the block, and with its own implementation again after it."""
    from transformers import AttentionInterface

    if name == SHARED_PREFIX_ATTENTION and name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, shared_prefix_attention)
    base = unwrap_model(model)
    before = base.config._attn_implementation
    if before == name:
        yield
        return
    base.set_attn_implementation(name)
    if base.config._attn_implementation != name:
        raise SharedPrefixAttentionError(f"{type(base).__name__} did not take the attention implementation {name!r}")
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def own_attention_mask(mask: torch.Tensor, prefix_len: int, query_len: int, dtype) -> torch.Tensor:
    """The additive ``(rows, 1, query_len, own)`` mask of each row's own keys (everything after the
    shared prefix) from the batch's 2D mask over ``[prefix | scene part | new tokens]``: a query sees
    the row's real keys up to its own position. Every row must see the whole prefix (it is read
    without a mask)."""
    if not bool(mask[:, :prefix_len].all()):
        raise SharedPrefixAttentionError("a row that does not see the whole shared prefix cannot share it")
    own = mask[:, prefix_len:].bool()
    width = own.shape[1] - query_len
    causal = torch.ones((query_len, own.shape[1]), dtype=torch.bool, device=mask.device).tril(diagonal=width)
    allowed = own[:, None, :] & causal
    # A padding query sees none of the row's own keys; it may see itself, so that no softmax row of
    # this part is empty (NaN). What it computes is read by no real token.
    steps = torch.arange(query_len, device=mask.device)
    allowed[:, steps, width + steps] |= ~own[:, width:]
    additive = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


class SharedPrefixBatch:
    """One forward pass below a shared prefix with its rows packed into one sequence.

    The model reads ``input_ids`` of shape (1, T), every row's own tokens one after the other (no
    padding: the linear layers, most of the work, run on real tokens only). Attention unpacks them
    into left-padded rows (``rows`` x ``width``, the longest row) to attend to each row's scene part
    and its own earlier tokens, and packs the result back. Passed to the model as the forward
    kwarg ``shared_prefix``; the batch cache's :class:`SharedPrefixLayer` layers read it too.
    ``prefix_mask`` is :func:`prefix_batch`'s (rows, prefix + scene width) mask.
    """

    def __init__(self, cache, lengths: Sequence[int], prefix_mask: torch.Tensor, prefix_len: int, dtype):
        device = prefix_mask.device
        rows, width = len(lengths), max(lengths)
        self.layers, self.rows, self.width = cache.layers, rows, width
        n = host_to_device(torch.tensor(list(lengths), dtype=torch.long), device)
        starts = torch.cumsum(n, 0) - n
        steps = torch.arange(width, device=device)
        pads = width - n
        real = steps[None, :] >= pads[:, None]  # (rows, width): left-padded slots that hold a token
        self.real = real
        source = starts[:, None] + steps[None, :] - pads[:, None]
        # Pad slots read token 0: masked as keys, discarded as queries.
        self.unpack_index = torch.where(real, source, torch.zeros_like(source)).view(-1)
        self.pack_index = (torch.arange(rows, device=device)[:, None] * width + steps[None, :])[real]
        self.last = starts + n - 1  # each row's last token in the packed sequence
        full = torch.cat([prefix_mask, real.to(prefix_mask.dtype)], dim=1)
        self.mask = own_attention_mask(full, prefix_len, width, dtype)
        self._grouped: Dict[Tuple[int, int], torch.Tensor] = {}
        for layer in cache.layers:
            layer.batch = self

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, heads, T, dim) packed -> (rows, heads, width, dim) left-padded."""
        heads, dim = packed.shape[1], packed.shape[3]
        return packed[0].index_select(1, self.unpack_index).view(heads, self.rows, self.width, dim).transpose(0, 1)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(rows, width, heads, dim) left-padded -> (1, T, heads, dim) packed."""
        return padded.reshape(self.rows * self.width, *padded.shape[2:]).index_select(0, self.pack_index)[None]

    def grouped_mask(self, groups: int, prefix_len: int = 0) -> torch.Tensor:
        """The mask (rows, 1, width, own) for ``groups`` query heads stacked per key/value head:
        (rows, 1, groups * width, own), made once per pass. With ``prefix_len``, for keys that are
        ``[prefix | own]`` (:func:`attend_with_copied_prefix`): every query sees the whole prefix."""
        key = (groups, prefix_len)
        if key not in self._grouped:
            rows, _, q, own = self.mask.shape
            grouped = self.mask[:, :, None].expand(rows, 1, groups, q, own).reshape(rows, 1, groups * q, own)
            if prefix_len:
                grouped = torch.cat([grouped.new_zeros((rows, 1, groups * q, prefix_len)), grouped], dim=-1)
            self._grouped[key] = grouped
        return self._grouped[key]


def _group_heads(query, kv_heads: int):
    """(rows, heads, q, dim) -> (rows, kv_heads, groups * q, dim). Query heads h = kv * groups + j
    share key/value head kv: stack them as rows (j, t) of it, so that grouped-query attention
    needs no copies of the keys."""
    rows, heads, q, dim = query.shape
    return query.reshape(rows, kv_heads, (heads // kv_heads) * q, dim)


def _ungroup_heads(out, heads: int, q: int):
    """:func:`_group_heads`' layout back to (rows, q, heads, dim), transformers' sdpa output layout."""
    rows, kv_heads, _, dim = out.shape
    return out.reshape(rows, kv_heads, heads // kv_heads, q, dim).permute(0, 3, 1, 2, 4).reshape(rows, q, heads, dim)


def attend_with_shared_prefix(query, prefix_keys, prefix_values, keys, values, mask, scale):
    """Attention of ``query`` (rows, heads, q, dim) over ``[prefix | own]`` keys, with the batch-1
    prefix (1, kv_heads, P, dim) read once for all rows and the rows' own keys (rows, kv_heads, S,
    dim) under ``mask`` (rows, 1, groups * q, S; additive). Returns (rows, q, heads, dim), the
    layout of transformers' sdpa attention output."""
    rows, heads, q, dim = query.shape
    kv_heads = keys.shape[1]
    grouped = _group_heads(query, kv_heads)
    out_own, lse_own = _ATTENTION_WITH_LSE(grouped, keys, values, attn_mask=mask, scale=scale)
    stacked = grouped.transpose(0, 1).reshape(1, kv_heads, -1, dim)
    out_prefix, lse_prefix = _ATTENTION_WITH_LSE(stacked, prefix_keys, prefix_values, scale=scale)
    out_prefix = out_prefix.reshape(kv_heads, rows, -1, dim).transpose(0, 1).float()
    lse_prefix = lse_prefix.reshape(kv_heads, rows, -1).transpose(0, 1).float()
    lse_own = lse_own.float()
    lse = torch.logaddexp(lse_prefix, lse_own)
    out = out_prefix * torch.exp(lse_prefix - lse)[..., None] + out_own.float() * torch.exp(lse_own - lse)[..., None]
    return _ungroup_heads(out.to(query.dtype), heads, q)


def attend_with_copied_prefix(query, prefix_keys, prefix_values, keys, values, mask, scale):
    """:func:`attend_with_shared_prefix`'s result in one attention call: the prefix's keys/values
    copied in front of every row's own ones, ``mask`` (rows, 1, groups * q, prefix + S) seeing the
    whole prefix. Cheaper when the prefix is short (see :func:`copy_the_prefix`)."""
    rows, heads, q, _ = query.shape
    all_keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], dim=-2)
    all_values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], dim=-2)
    out, _ = _ATTENTION_WITH_LSE(_group_heads(query, keys.shape[1]), all_keys, all_values, attn_mask=mask, scale=scale)
    return _ungroup_heads(out, heads, q)


COPY_PREFIX_FACTOR = 2
"""Copy the prefix into every row when it is at most this many times as long as a row's own keys."""


def copy_the_prefix(prefix_len: int, own_len: int) -> bool:
    """Whether :func:`attend_with_copied_prefix` is the cheaper of the two. The split form pays for
    two attention calls and a log-sum-exp merge over every query whatever the prefix's length; the
    copies cost rows x prefix. On one CPU thread (SmolLM2's heads, 8-64 rows of 30-45 tokens) the
    copied form is 20-30% faster with the zero-shot question (78 tokens) and the split form 1.5-2x
    faster with 8 shots (1,000 tokens); they cross near 3-5 times the own length, so the factor
    of 2 stays on the safe side."""
    return prefix_len <= COPY_PREFIX_FACTOR * own_len


def shared_prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                            scaling: Optional[float] = None, shared_prefix: Optional[SharedPrefixBatch] = None,
                            **kwargs):
    """An attention function for transformers' ``AttentionInterface``. ``query`` is the packed
    batch's (1, heads, T, dim), ``key``/``value`` each row's own keys (what :class:`SharedPrefixLayer`
    returns), the shared prefix is this layer's ``prefix_keys``; ``shared_prefix`` (the
    :class:`SharedPrefixBatch`) says how rows are packed and holds the mask."""
    if shared_prefix is None:
        raise SharedPrefixAttentionError("shared-prefix attention was called without the batch's shared prefix "
                                         "(the model did not pass its forward kwargs on to the attention)")
    for name in ("softcap", "position_bias", "sliding_window", "s_aux", "sinks"):
        if kwargs.get(name) is not None:
            raise SharedPrefixAttentionError(f"shared-prefix attention does not reproduce {name!r}")
    index = getattr(module, "layer_idx", None)
    if index is None or query.shape[0] != 1 or shared_prefix.layers[index].batch is not shared_prefix:
        raise SharedPrefixAttentionError("shared-prefix attention needs the layer index and the packed batch")
    layer = shared_prefix.layers[index]
    rows_query = shared_prefix.unpack(query)
    groups = rows_query.shape[1] // key.shape[1]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    prefix_len = layer.prefix_keys.shape[-2]
    copied = copy_the_prefix(prefix_len, key.shape[-2])
    attend = attend_with_copied_prefix if copied else attend_with_shared_prefix
    mask = shared_prefix.grouped_mask(groups, prefix_len if copied else 0)
    out = attend(rows_query, layer.prefix_keys, layer.prefix_values, key, value, mask, scale)
    return shared_prefix.pack(out), None

"""Value steering: contrastive activation addition (CAA) toward the target value.

**The contrast.** For every ``train`` item of the target value, the judging prompt the evaluator
uses (:func:`vat_hf.prompts.judge_text`, plain prompt, answer prefilled with ``"Rating: "``) is
followed once by the rating that *favours* the value (5 for an action expressing it, 1 for one
going against it) and once by the rating that *disfavours* it (1 and 5). The residual stream at
the output of each chosen decoder layer is read at that rating token, and the vector is the mean
difference favouring - disfavouring, averaged over the two polarities separately and then
together. This is the answer-token contrast of CAA (Rimsky et al., 2024, "Steering Llama 2 via
Contrastive Activation Addition") applied to the judgment the evaluator scores, and it is the
same preference the prompt intervention demonstrates and DPO trains on. Why this contrast and
not "expressing action minus opposing action": the answer tokens differ between the two halves
of a pair, but across the two polarities the favouring answer is once 5 and once 1, so the
direction of "a high rating" (and of the digits' embeddings) cancels, and what is left is the
direction of *judging in favour of the value*. A stimulus contrast (expressing minus opposing
actions, no answer) would instead carry "this action looks like the value", which moves every
rating of the value's items the same way (a uniform shift, no gain).

**Where it is added.** ``strength`` times the vector is added to the output of each chosen
decoder layer at every position (CAA's rule) by forward hooks on the loaded model: no copy of
the model, no change to its weights, removed when the evaluation ends (:func:`steer`). Strength
1 is the mean difference itself (CAA's multiplier); the vector's norm and the residual stream's
mean norm at that layer are recorded beside it (``vector.json``) so a strength can be read
against the activations it is added to. Strength 0 adds exact zeros: the baseline's numbers.

**The shared-prefix cache.** The evaluator runs the prompt's item-independent prefix once and
reuses its key/value cache (:mod:`vat_hf.evaluation.prefix`). The hooks are active for the whole
evaluation, the prefix pass included, so the cached keys and values are the steered ones, exactly
what a full steered encoding computes (tests/test_steering.py checks that steered judgments with
and without prefix reuse agree). The judgment cache keys every steered evaluation by the
vector's content, its layers and the strength, so steered and unsteered judgments never mix.

**Train scenes only.** The contrast set comes from :func:`vat_hf.data.fields.train_items_for`,
which refuses any item outside the ``train`` split.

**Why not a library.** ``steering-vectors`` 0.12.2 (the newest) declares ``transformers<5``:
installing it beside transformers 5.24 makes pip downgrade transformers to 4.57 and
huggingface_hub to 0.36 (its hooks do work with 5.24 when forced in with ``--no-deps``, which no
user install does). ``repeng`` 0.4.0 declares ``numpy<2`` and fails to import under NumPy 2
(``np.float_``); it also replaces decoder layers with wrapper modules (renaming parameters, which
changes PEFT's module paths and the in-memory model fingerprint) and extracts only PCA
directions. The hooks below are about forty lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from vat_hf.data.fields import TrainSplitError, train_items_for
from vat_hf.errors import VatHfError

logger = logging.getLogger(__name__)

CONTRAST = "caa-answer-token"
CONTRAST_VERSION = 1
CONTRAST_WORDS = ("mean difference of the residual stream at the rating token, judging prompt + the rating that "
                  "favours the target value (5 for an action expressing it, 1 for one against it) minus the rating "
                  "that disfavours it, averaged per polarity then over both; train items only")
POSITIONS = "all"

VECTOR_FILE = "vector.safetensors"
VECTOR_META = "vector.json"


class SteeringError(VatHfError, ValueError):
    """Steering cannot be set up for this model or item set."""


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (under a PEFT wrapper too): the ``ModuleList`` whose
    length is ``config.num_hidden_layers``."""
    from vat_hf.evaluation.prefix import unwrap_model

    base = unwrap_model(model)
    n = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    found = [(name, m) for name, m in base.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if len(found) > 1:  # e.g. a vision tower of the same depth: prefer the language model's
        found = [(name, m) for name, m in found if name.endswith(("layers", ".h"))] or found[:1]
    if not found:
        raise SteeringError(f"cannot find the decoder layers of {type(base).__name__} "
                            f"(no ModuleList of num_hidden_layers={n} blocks)")
    return found[0][1]


def resolve_layers(model, layers: Optional[Sequence[int]]) -> List[int]:
    """Layer indices (negative ones count from the end); default: the middle layer."""
    n = len(decoder_layers(model))
    chosen = [n // 2] if not layers else [int(i) + n if int(i) < 0 else int(i) for i in layers]
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise SteeringError(f"steering layers {list(layers or [])} are outside this model's {n} layers",
                            fix=f"give layer indices in 0..{n - 1} (or negative from the end)")
    return sorted(set(chosen))


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@dataclass
class SteeringVector:
    """One vector per layer (``directions``: layer -> tensor of the hidden size) and how it was
    made (``meta``)."""

    directions: Dict[int, torch.Tensor]
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> List[int]:
        return sorted(self.directions)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for layer in self.layers:
            t = self.directions[layer].detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{layer}|{tuple(t.shape)}|".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()[:32]

    def variant(self, strength: float) -> Dict[str, Any]:
        """What the judgment cache and the results record about a steered model."""
        return {"kind": "steering", "contrast": CONTRAST, "vector": self.content_hash(), "layers": self.layers,
                "strength": float(strength), "positions": POSITIONS}

    def save(self, folder) -> Path:
        from safetensors.torch import save_file

        from vat_hf.io import atomic_write, write_json

        folder = Path(folder)
        tensors = {f"layer.{k}": v.detach().to("cpu", torch.float32).contiguous() for k, v in self.directions.items()}
        atomic_write(folder / VECTOR_FILE, lambda tmp: save_file(tensors, tmp))
        write_json(folder / VECTOR_META, {**self.meta, "vector": self.content_hash()})
        return folder

    @classmethod
    def load(cls, folder) -> Optional["SteeringVector"]:
        from safetensors.torch import load_file

        from vat_hf.io import read_json

        folder = Path(folder)
        if not (folder / VECTOR_FILE).exists() or not (folder / VECTOR_META).exists():
            return None
        tensors = load_file(str(folder / VECTOR_FILE))
        vector = cls({int(k.split(".")[1]): v for k, v in tensors.items()}, read_json(folder / VECTOR_META))
        if vector.meta.get("vector") != vector.content_hash():
            logger.warning("%s: the vector does not match its record; computing it again", folder)
            return None
        return vector


@contextlib.contextmanager
def steer(model, vector: SteeringVector, strength: float) -> Iterator[None]:
    """Add ``strength * vector`` to the output of each of its layers, at every position, while
    the context is open (forward hooks; the model itself is not changed)."""
    blocks = decoder_layers(model)
    handles = []

    def hook_for(delta: torch.Tensor) -> Callable:
        def hook(_module, _inputs, output):
            hidden = _hidden(output)
            shifted = hidden + delta.to(device=hidden.device, dtype=hidden.dtype)
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

        return hook

    try:
        for layer, direction in vector.directions.items():
            handles.append(blocks[layer].register_forward_hook(hook_for(float(strength) * direction.float())))
        yield
    finally:
        for handle in handles:
            handle.remove()


def contrast_items(train_items: Sequence[Mapping], target_value: str) -> Dict[int, List[Mapping]]:
    """The contrast set by polarity: the target's ``train`` items (a test item is refused)."""
    pool = train_items_for(train_items, target_value)
    by_polarity = {p: [item for item in pool if int(item["polarity"]) == p] for p in (1, -1)}
    if not by_polarity[1] or not by_polarity[-1]:
        raise TrainSplitError(f"steering toward {target_value!r} needs train items of both polarities "
                              f"({len(by_polarity[1])} expressing, {len(by_polarity[-1])} against)")
    return by_polarity


def _sequences(tokenizer, items: Sequence[Mapping], favour: bool) -> List[List[int]]:
    """Token ids of the judging prompt + the rating that favours (or disfavours) the value."""
    from vat_hf.prompts import SCALE_MAX, SCALE_MIN, JudgePrompt, judge_text

    texts = [judge_text(tokenizer, JudgePrompt(), item) for item in items]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = []
    for item, ids in zip(items, prompts):
        high = (int(item["polarity"]) > 0) == favour
        rating = str(SCALE_MAX if high else SCALE_MIN)
        out.append(list(ids) + tokenizer.encode(rating, add_special_tokens=False))
    return out


@torch.inference_mode()
def _last_token_states(model, tokenizer, sequences: Sequence[Sequence[int]], layers: Sequence[int],
                       batch_size: int) -> Tuple[Dict[int, torch.Tensor], Dict[int, float]]:
    """Sum over ``sequences`` of each layer's output at the last token, and its mean norm."""
    from vat_hf.evaluation.judge import left_pad

    blocks = decoder_layers(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seen: Dict[int, torch.Tensor] = {}
    sums: Dict[int, torch.Tensor] = {}
    norms: Dict[int, float] = {layer: 0.0 for layer in layers}

    def reader(layer):
        def hook(_module, _inputs, output):
            seen[layer] = _hidden(output)[:, -1, :].float()
        return hook

    handles = [blocks[layer].register_forward_hook(reader(layer)) for layer in layers]
    try:
        for start in range(0, len(sequences), batch_size):
            batch = left_pad(sequences[start:start + batch_size], 0 if pad is None else pad, device)
            model(**batch)
            for layer in layers:
                sums[layer] = sums.get(layer, 0) + seen[layer].sum(dim=0)
                norms[layer] += float(seen[layer].norm(dim=-1).sum())
    finally:
        for handle in handles:
            handle.remove()
    return sums, {layer: norms[layer] / len(sequences) for layer in layers}


def compute_steering_vector(model, tokenizer, train_items: Sequence[Mapping], target_value: str,
                            layers: Optional[Sequence[int]] = None, batch_size: int = 8) -> SteeringVector:
    """The CAA vector toward ``target_value`` from its ``train`` items (see the module docstring)."""
    from vat_hf.data import items_fingerprint
    from vat_hf.values import canonical_value

    target = canonical_value(target_value)
    chosen = resolve_layers(model, layers)
    by_polarity = contrast_items(train_items, target)
    directions: Dict[int, torch.Tensor] = {layer: 0 for layer in chosen}
    residual: Dict[int, float] = {layer: 0.0 for layer in chosen}
    for polarity, items in by_polarity.items():
        pos, norms = _last_token_states(model, tokenizer, _sequences(tokenizer, items, True), chosen, batch_size)
        neg, _ = _last_token_states(model, tokenizer, _sequences(tokenizer, items, False), chosen, batch_size)
        for layer in chosen:  # each polarity weighs one half, however many items it has
            directions[layer] = directions[layer] + 0.5 * (pos[layer] - neg[layer]) / len(items)
            residual[layer] += 0.5 * norms[layer]
    vector = SteeringVector({layer: d.cpu() for layer, d in directions.items()})
    vector.meta = {
        "contrast": CONTRAST, "contrast_version": CONTRAST_VERSION, "contrast_words": CONTRAST_WORDS,
        "target_value": target, "layers": chosen, "positions": POSITIONS,
        "n_items": {"expressing": len(by_polarity[1]), "against": len(by_polarity[-1])},
        "n_scenes": len({item["scene_id"] for items in by_polarity.values() for item in items}),
        "train_fingerprint": items_fingerprint([i for items in by_polarity.values() for i in items]),
        "vector_norm": {str(layer): float(directions[layer].norm()) for layer in chosen},
        "residual_norm_mean": {str(layer): residual[layer] for layer in chosen},
    }
    return vector


def vector_key(model_key: str, target_value: str, layers: Optional[Sequence[int]], train_items: Sequence[Mapping]) -> str:
    """The folder name of a stored vector: it is reused only for the same model files, target,
    layers, contrast and train items."""
    from vat_hf.data import items_fingerprint
    from vat_hf.prompts import JudgePrompt

    payload = {"model": model_key, "target": target_value, "layers": sorted(layers) if layers else None,
               "contrast": CONTRAST, "version": CONTRAST_VERSION, "prompt": JudgePrompt().fingerprint(),
               "train": items_fingerprint(list(train_items))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def steering_vector(folder, train_items: Sequence[Mapping], target_value: str, layers: Optional[Sequence[int]],
                    load_model: Callable[[], Tuple[Any, Any]]) -> SteeringVector:
    """The stored vector in ``folder``, or one computed (``load_model()`` gives the unsteered
    base model and tokenizer) and stored there. A stored vector is read without loading weights,
    so a steered evaluation whose judgments are all cached loads nothing."""
    found = SteeringVector.load(folder)
    if found is not None:
        return found
    model, tokenizer = load_model()
    with contextlib.ExitStack() as stack:
        if hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
            stack.enter_context(model.disable_adapter())
        vector = compute_steering_vector(model, tokenizer, train_items, target_value, layers)
    vector.save(folder)
    logger.info("steering vector toward %s at layers %s -> %s", target_value, vector.layers, folder)
    return vector

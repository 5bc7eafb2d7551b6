"""The evaluator: a model rates each action's acceptability in its scene on a 1-5 scale.

The rating is read from one forward pass. After the chat-templated prompt (answer prefilled with
"Rating: "), the next-token probabilities of the five option tokens "1".."5" are renormalised
into a distribution; the record keeps that distribution, the expected rating, and the mass the
options had before renormalising (a low mass means the model wanted to say something else).

Batches are built by sorting prompts by token length and filling a token budget (padded length x
rows), which keeps padding small; only the last position's logits are computed
(``logits_to_keep=1``); padding is on the left with explicit position ids, so a batched item's
distribution equals its unbatched one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from vat_hf.prompts import OPTIONS, SCALE_MIN, JudgePrompt, judge_text

MODE_LOGPROB = "logprob"


class OptionTokenError(ValueError):
    """The tokenizer does not encode the rating options as single, distinct tokens."""


def option_token_ids(tokenizer, options: Sequence[str] = OPTIONS) -> List[int]:
    ids = []
    for option in options:
        encoded = tokenizer.encode(option, add_special_tokens=False)
        if len(encoded) != 1:
            raise OptionTokenError(
                f"option {option!r} is {len(encoded)} tokens {encoded} for this tokenizer; single-token "
                "scoring needs each rating option to be one token"
            )
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise OptionTokenError(f"rating options {list(options)} share token ids {ids}")
    return ids


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


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device) -> Dict[str, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq):] = 1
    # Positions count real tokens only, so left padding does not shift them.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
            "position_ids": position_ids.to(device)}


@dataclass
class EvaluationSummary:
    n_items: int
    option_mass_mean: float
    option_mass_min: float
    mean_rating: float
    mode: str = MODE_LOGPROB

    def to_dict(self) -> Dict:
        return dict(self.__dict__)


def summarize(records: Sequence[Mapping]) -> EvaluationSummary:
    masses = [r["option_mass"] for r in records if r.get("option_mass") is not None]
    ratings = [r["rating"] for r in records if r.get("rating") is not None]
    return EvaluationSummary(
        n_items=len(records),
        option_mass_mean=float(sum(masses) / len(masses)) if masses else math.nan,
        option_mass_min=float(min(masses)) if masses else math.nan,
        mean_rating=float(sum(ratings) / len(ratings)) if ratings else math.nan,
        mode=records[0].get("mode", MODE_LOGPROB) if records else MODE_LOGPROB,
    )


ITEM_KEYS = ("id", "scene_id", "country", "domain", "value", "micro_value", "polarity", "split")


class Evaluator:
    """Judges items with one model under one :class:`JudgePrompt`.

    >>> # evaluator = Evaluator(loaded.model, loaded.tokenizer, prompt=value_prompt("Benevolence"))
    >>> # records = evaluator.judge(items)
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompt: Optional[JudgePrompt] = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        progress: bool = True,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt or JudgePrompt()
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.progress = progress
        self.option_ids = option_token_ids(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else pad

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, items: Sequence[Mapping]) -> List[List[int]]:
        texts = [judge_text(self.tokenizer, self.prompt, item) for item in items]
        # The chat template already carries any special tokens the model expects.
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def option_probabilities(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        """Full-vocabulary probabilities of the option tokens at the next position, (rows, 5)."""
        inputs = left_pad(batch, self.pad_id, self.device)
        logits = self.model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)
        return probs[:, self.option_ids].cpu()

    def iter_judgments(self, items: Sequence[Mapping]) -> Iterator[Dict]:
        """Yield one record per item, batch by batch (not in input order)."""
        encoded = self.encode(items)
        batches = token_budget_batches([len(e) for e in encoded], self.max_batch_tokens, self.max_batch_size)
        prompt_hash = self.prompt.fingerprint()
        bar = tqdm(total=len(items), desc=f"judging ({self.prompt.name})", unit="item", disable=not self.progress)
        try:
            for batch in batches:
                probs = self.option_probabilities([encoded[i] for i in batch])
                for row, index in enumerate(batch):
                    yield make_record(items[index], probs[row], prompt_hash, len(encoded[index]))
                bar.update(len(batch))
        finally:
            bar.close()

    def judge(self, items: Sequence[Mapping]) -> List[Dict]:
        """Records in the order of ``items``."""
        position = {item["id"]: i for i, item in enumerate(items)}
        records: List[Optional[Dict]] = [None] * len(items)
        for record in self.iter_judgments(items):
            records[position[record["id"]]] = record
        return records  # type: ignore[return-value]


def make_record(item: Mapping, option_probs: torch.Tensor, prompt_hash: str, n_tokens: int, mode: str = MODE_LOGPROB) -> Dict:
    mass = float(option_probs.sum())
    dist = (option_probs / mass).tolist() if mass > 0 else [math.nan] * len(OPTIONS)
    rating = float(sum((SCALE_MIN + k) * p for k, p in enumerate(dist)))
    record = {key: item.get(key) for key in ITEM_KEYS}
    record.update({
        "rating": rating,
        "probs": dist,
        "option_mass": mass,
        "argmax": SCALE_MIN + max(range(len(dist)), key=dist.__getitem__),
        "prompt_hash": prompt_hash,
        "n_tokens": n_tokens,
        "mode": mode,
    })
    return record

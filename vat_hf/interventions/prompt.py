"""Prompt intervention toward one target value: a system prompt built from the taxonomy's
definition, plus k-shot demonstrations drawn only from ``train`` scenes.

Demonstrations show judgments that favour the target value: an action that expresses it is
rated 5, one that goes against it 1. They are drawn with a seed, alternating polarities so the
demonstrations never teach "always answer 5", and from distinct scenes where possible.
"""

from __future__ import annotations

import random
from typing import Mapping, Optional, Sequence

from vat_hf.data.fields import TrainSplitError, train_items_for
from vat_hf.prompts import SCALE_MAX, SCALE_MIN, JudgePrompt, judge_user_turn, rating_answer, value_system_prompt
from vat_hf.values import canonical_value


def demonstrations(train_items: Sequence[Mapping], target_value: str, k: int, seed: int = 0) -> tuple:
    if k == 0:
        return ()
    pool = train_items_for(train_items, target_value)
    rng = random.Random(seed)
    by_polarity = {p: [item for item in pool if item["polarity"] == p] for p in (1, -1)}
    for group in by_polarity.values():
        rng.shuffle(group)
    if len(by_polarity[1]) < (k + 1) // 2 or len(by_polarity[-1]) < k // 2:
        raise TrainSplitError(f"{k}-shot needs {(k + 1) // 2} expressing and {k // 2} opposing train items of {target_value!r}")
    shots = []
    for i in range(k):
        polarity = 1 if i % 2 == 0 else -1
        item = by_polarity[polarity][i // 2]
        shots.append((judge_user_turn(item), rating_answer(SCALE_MAX if polarity > 0 else SCALE_MIN)))
    return tuple(shots)


def value_prompt(
    target_value: str,
    train_items: Sequence[Mapping] = (),
    k_shots: int = 0,
    system_prompt: bool = True,
    seed: int = 0,
    name: Optional[str] = None,
) -> JudgePrompt:
    """The prompt intervention toward ``target_value`` as a :class:`JudgePrompt`."""
    target = canonical_value(target_value)
    if k_shots < 0:
        raise ValueError("k_shots must be >= 0")
    system = value_system_prompt(target) if system_prompt else None
    shots = demonstrations(train_items, target, k_shots, seed)
    return JudgePrompt(system=system, demonstrations=shots, name=name or f"prompt-{target.lower()}-k{k_shots}")

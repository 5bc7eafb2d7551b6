"""Training data for the SFT and DPO interventions, built from scenario–action items.

Only ``train`` items are used: every builder goes through the data layer's train-split guard
:func:`vat_hf.data.fields.train_items_for`, which refuses any ``test`` item, so no scene
the evaluator judges can leak into training.

Both builders use TRL's *conversational* formats; the user turn is
:func:`vat_hf.prompts.advice_user_turn` (the one place prompt wording lives, shared with the
evaluator's ``Scenario: ...`` line)::

    [user]       Scenario: <scenario>

                 What should I do in this situation? Answer in one sentence, in the first person.
    [assistant]  <an action, first person: "I ...">

* SFT (:func:`sft_dataset`): conversational *prompt–completion* rows
  ``{"prompt": [user], "completion": [assistant]}``, one per train item that **expresses** the
  target value (``polarity == +1``). TRL's ``SFTTrainer`` applies the tokenizer's chat template and,
  for prompt–completion rows, computes the loss on the completion only.
* DPO (:func:`dpo_dataset`): conversational *preference* rows
  ``{"prompt": [user], "chosen": [assistant], "rejected": [assistant]}``: in one scene, ``chosen``
  is an action expressing the target value and ``rejected`` one going against it (every pair of
  the two when a scene has several of either).
"""

from __future__ import annotations

import random
from typing import Dict, List, Mapping, Optional, Sequence

import datasets

from vat_hf.data.fields import TrainSplitError, train_items_for
from vat_hf.errors import VatHfError
from vat_hf.prompts import advice_user_turn
from vat_hf.values import canonical_value

__all__ = ["TrainingDataError", "sft_examples", "dpo_pairs", "sft_dataset", "dpo_dataset", "load_training_items",
           "user_message", "assistant_message"]


class TrainingDataError(VatHfError, ValueError):
    """The items cannot make a training set (test items, no train items, no usable pairs)."""


def user_message(item: Mapping) -> Dict[str, str]:
    return {"role": "user", "content": advice_user_turn(item)}


def assistant_message(item: Mapping) -> Dict[str, str]:
    return {"role": "assistant", "content": item["action"]}


def _target_items(items: Sequence[Mapping], target_value: str) -> List[Mapping]:
    try:
        return train_items_for(items, target_value)
    except TrainSplitError as err:
        raise TrainingDataError(str(err)) from None


def sft_examples(items: Sequence[Mapping], target_value: str) -> List[Dict]:
    """Prompt–completion rows, one per train item expressing ``target_value``."""
    target = canonical_value(target_value)
    positives = [item for item in _target_items(items, target) if item["polarity"] > 0]
    if not positives:
        raise TrainingDataError(f"no train item expresses {target!r}; SFT needs at least one")
    return [{"prompt": [user_message(item)], "completion": [assistant_message(item)]} for item in positives]


def dpo_pairs(items: Sequence[Mapping], target_value: str, max_pairs_per_scene: Optional[int] = None,
              seed: int = 0) -> List[Dict]:
    """Preference rows: in each train scene, (expresses ``target_value``, goes against it)."""
    target = canonical_value(target_value)
    by_scene: Dict[str, Dict[int, List[Mapping]]] = {}
    for item in _target_items(items, target):
        by_scene.setdefault(item["scene_id"], {1: [], -1: []})[item["polarity"]].append(item)
    rng = random.Random(seed)
    rows = []
    for scene_id in sorted(by_scene):
        pos, neg = by_scene[scene_id][1], by_scene[scene_id][-1]
        pairs = [(p, n) for p in pos for n in neg]
        if max_pairs_per_scene and len(pairs) > max_pairs_per_scene:
            pairs = rng.sample(pairs, max_pairs_per_scene)
        for chosen, rejected in pairs:
            # Same scene, so the prompt is the same whichever item it is built from.
            rows.append({"prompt": [user_message(chosen)], "chosen": [assistant_message(chosen)],
                         "rejected": [assistant_message(rejected)]})
    if not rows:
        raise TrainingDataError(
            f"no train scene has both an action expressing {target!r} and one going against it; DPO needs such pairs"
        )
    return rows


def sft_dataset(items: Sequence[Mapping], target_value: str) -> datasets.Dataset:
    return datasets.Dataset.from_list(sft_examples(items, target_value))


def dpo_dataset(items: Sequence[Mapping], target_value: str, max_pairs_per_scene: Optional[int] = None,
                seed: int = 0) -> datasets.Dataset:
    return datasets.Dataset.from_list(dpo_pairs(items, target_value, max_pairs_per_scene, seed))


def load_training_items(source: str = "builtin", max_scenes: Optional[int] = None, seed: int = 0,
                        columns: Optional[Mapping[str, str]] = None) -> List[Dict]:
    """The ``train`` items of ``source`` (a reproducible sample of ``max_scenes`` scenes if given);
    a clear error when the source has none."""
    from vat_hf.data import load_items

    try:
        return load_items(source, split="train", max_scenes=max_scenes, seed=seed, columns=columns)
    except TrainSplitError as err:
        raise TrainingDataError(f"{err}: training needs train scenes (the test scenes are for evaluation only)") from None

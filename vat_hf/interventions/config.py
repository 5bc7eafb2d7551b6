"""What an intervention is, as an experiment recipe's ``interventions:`` entry names it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from vat_hf.errors import RecipeError

INTERVENTION_TYPES = ("prompt", "sft", "dpo")


@dataclass
class InterventionConfig:
    """One intervention toward the experiment's target value: a prompt (system prompt and
    ``k_shots`` demonstrations from train scenes) or an SFT/DPO adapter trained from ``recipe``
    (a TRL training recipe YAML) with ``overrides`` of its keys."""

    type: str
    name: Optional[str] = None
    # prompt
    k_shots: int = 0
    system_prompt: bool = True
    # sft / dpo: a training recipe (TRL config YAML) and overrides of its keys
    recipe: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.type not in INTERVENTION_TYPES:
            raise RecipeError(f"intervention type {self.type!r} is not one of {INTERVENTION_TYPES}")
        if self.type != "prompt" and not self.recipe:
            raise RecipeError(f"{self.type} intervention {self.name or ''}: give 'recipe', the training config YAML")
        if self.name is None:
            self.name = f"prompt-k{self.k_shots}" if self.type == "prompt" else self.type

    @property
    def needs_train_items(self) -> bool:
        """Whether realising it takes train items (demonstrations or training data)."""
        return self.type != "prompt" or self.k_shots > 0

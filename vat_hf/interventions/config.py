"""What an intervention is, as an experiment recipe's ``interventions:`` entry names it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

from vat_hf.errors import RecipeError

INTERVENTION_TYPES = ("prompt", "sft", "dpo", "steering")
DEFAULT_MIN_OPTION_MASS = 0.5
"""A steered evaluation whose mean option mass (the probability the model puts on the five rating
options before renormalising) is below this is flagged and not scored: the model then answers
with a rating less than half the time, and its renormalised ratings describe a minority of what
it would say. Recipe key ``min_option_mass`` (any intervention may set it; steering defaults to
this value, because a large strength can push a model off the rating scale altogether)."""


def strength_label(strength: float) -> str:
    """How a strength is spelled in names and cell ids.

    >>> strength_label(8.0), strength_label(0.5), strength_label(-4)
    ('8', '0.5', '-4')
    """
    return f"{float(strength):g}"


@dataclass
class InterventionConfig:
    """One intervention toward the experiment's target value: a prompt (system prompt and
    ``k_shots`` demonstrations from train scenes), an SFT/DPO adapter trained from ``recipe``
    (a TRL training recipe YAML) with ``overrides`` of its keys, or value steering (contrastive
    activation addition at ``layers`` with ``strength``, or one arm per entry of ``strengths``:
    :mod:`vat_hf.interventions.steering`)."""

    type: str
    name: Optional[str] = None
    # prompt
    k_shots: int = 0
    system_prompt: bool = True
    # sft / dpo: a training recipe (TRL config YAML) and overrides of its keys
    recipe: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    # steering: decoder layers (default: the middle one), one strength or a list (a dose-response)
    layers: Optional[List[int]] = None
    strength: Optional[float] = None
    strengths: Optional[List[float]] = None
    # an evaluation whose mean option mass is below this is flagged and not scored (steering: 0.5)
    min_option_mass: Optional[float] = None
    # a sweep: only these of its target values (default: all of them)
    target_values: Optional[List[str]] = None

    def __post_init__(self):
        if self.type not in INTERVENTION_TYPES:
            raise RecipeError(f"intervention type {self.type!r} is not one of {INTERVENTION_TYPES}")
        if self.type in ("sft", "dpo") and not self.recipe:
            raise RecipeError(f"{self.type} intervention {self.name or ''}: give 'recipe', the training config YAML")
        if self.type == "steering":
            if (self.strength is None) == (self.strengths is None):
                raise RecipeError(f"steering intervention {self.name or ''}: give 'strength' (one) or 'strengths' "
                                  "(a list: one arm each), not both and not neither")
            if self.strengths is not None and not self.strengths:
                raise RecipeError(f"steering intervention {self.name or ''}: 'strengths' is empty")
            if self.min_option_mass is None:
                self.min_option_mass = DEFAULT_MIN_OPTION_MASS
        if self.target_values is not None:
            from vat_hf.values import canonical_value

            self.target_values = [canonical_value(v) for v in self.target_values]
        if self.name is None:
            self.name = {"prompt": f"prompt-k{self.k_shots}"}.get(self.type, self.type)
            if self.type == "steering" and self.strength is not None and self.strengths is None:
                self.name = f"steering-s{strength_label(self.strength)}"

    @property
    def needs_train_items(self) -> bool:
        """Whether realising it takes train items (demonstrations, training data, contrast set)."""
        return self.type != "prompt" or self.k_shots > 0

    def expand(self) -> List["InterventionConfig"]:
        """One intervention per strength (``<name>-s<strength>``); itself for everything else."""
        if self.type != "steering" or self.strengths is None:
            return [self]
        arms = []
        for strength in self.strengths:
            arms.append(replace(self, strength=float(strength), strengths=None,
                                name=f"{self.name}-s{strength_label(strength)}"))
        return arms

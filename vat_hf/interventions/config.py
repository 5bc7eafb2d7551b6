"""What an intervention is, as an experiment recipe's ``interventions:`` entry names it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Dict, List, Literal, Optional

from annotated_types import Ge, Interval, MinLen

from vat_hf.errors import RecipeError
from vat_hf.validation import FieldError, check_fields, name_problem

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
    :mod:`vat_hf.interventions.steering`).

    ``name`` names its files (judgments, results, adapter folder), so it must be a safe file
    name (:func:`vat_hf.validation.safe_name`); every field is checked against its type hint."""

    type: Literal[INTERVENTION_TYPES] = field(metadata={"help": "prompt, sft, dpo or steering."})
    name: Optional[str] = field(
        default=None,
        metadata={"help": "Names its files and folders (default: prompt-k<k_shots>, sft, dpo, steering-s<strength>)."})
    # prompt
    k_shots: Annotated[int, Ge(0)] = field(
        default=0, metadata={"help": "Demonstrations from train scenes (prompt interventions)."})
    system_prompt: bool = field(default=True, metadata={"help": "Use the value system prompt (prompt interventions)."})
    # sft / dpo: a training recipe (TRL config YAML) and overrides of its keys
    recipe: Optional[Annotated[str, MinLen(1)]] = field(
        default=None, metadata={"help": "The training recipe YAML (sft and dpo interventions)."})
    overrides: Dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keys of the training recipe to override (sft and dpo interventions)."})
    # steering: decoder layers (default: the middle one), one strength or a list (a dose-response)
    layers: Optional[Annotated[List[Annotated[int, Ge(0)]], MinLen(1)]] = field(
        default=None, metadata={"help": "Decoder layers to steer (steering; default: the middle one)."})
    strength: Optional[float] = field(
        default=None, metadata={"help": "Steering strength, in units of the contrast vector (steering)."})
    strengths: Optional[List[float]] = field(
        default=None, metadata={"help": "Several strengths: one intervention each, <name>-s<strength> (steering)."})
    min_option_mass: Optional[Annotated[float, Interval(ge=0.0, le=1.0)]] = field(
        default=None, metadata={"help": "Flag and do not score an evaluation whose mean option mass is below this "
                                        f"(steering default {DEFAULT_MIN_OPTION_MASS})."})
    target_values: Optional[List[str]] = field(
        default=None, metadata={"help": "In a sweep: only these of its target values (default: all)."})

    def __post_init__(self):
        if self.overrides is None:
            self.overrides = {}
        check_fields(self)
        if self.type in ("sft", "dpo") and not self.recipe:
            raise RecipeError(f"{self.type} intervention {self.name or ''}: no 'recipe'",
                              fix=f"give recipe: the training config YAML (e.g. recipes/SmolLM2-135M-Instruct/{self.type}/config_demo.yaml)")
        if self.type == "steering":
            if (self.strength is None) == (self.strengths is None):
                raise RecipeError(f"steering intervention {self.name or ''}: give 'strength' (one) or 'strengths' "
                                  "(a list: one arm each), not both and not neither")
            if self.strengths is not None and not self.strengths:
                raise RecipeError(f"steering intervention {self.name or ''}: 'strengths' is empty",
                                  fix="list at least one strength, or give 'strength'")
            if self.min_option_mass is None:
                self.min_option_mass = DEFAULT_MIN_OPTION_MASS
        if self.target_values is not None:
            from vat_hf.values import canonical_value

            self.target_values = [canonical_value(v) for v in self.target_values]
        if self.name is None:
            self.name = {"prompt": f"prompt-k{self.k_shots}"}.get(self.type, self.type)
            if self.type == "steering" and self.strength is not None and self.strengths is None:
                self.name = f"steering-s{strength_label(self.strength)}"
        problem = name_problem(self.name)
        if problem is not None:
            raise FieldError("name", self.name, *problem)

    @property
    def needs_train_items(self) -> bool:
        """Whether realising it takes train items (demonstrations, training data, contrast set)."""
        return self.type != "prompt" or self.k_shots > 0

    def expand(self) -> List["InterventionConfig"]:
        """One intervention per strength (``<name>-s<strength>``); itself for everything else."""
        if self.type != "steering" or self.strengths is None:
            return [self]
        return [replace(self, strength=float(strength), strengths=None, name=f"{self.name}-s{strength_label(strength)}")
                for strength in self.strengths]

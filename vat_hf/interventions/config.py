"""What an intervention is, as an experiment recipe's ``interventions:`` entry names it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, Literal, Optional

from annotated_types import Ge, MinLen

from vat_hf.errors import RecipeError
from vat_hf.validation import FieldError, check_fields, name_problem

INTERVENTION_TYPES = ("prompt", "sft", "dpo")


@dataclass
class InterventionConfig:
    """One intervention toward the experiment's target value: a prompt (system prompt and
    ``k_shots`` demonstrations from train scenes) or an SFT/DPO adapter trained from ``recipe``
    (a TRL training recipe YAML) with ``overrides`` of its keys.

    ``name`` names its files (judgments, results, adapter folder), so it must be a safe file
    name (:func:`vat_hf.validation.safe_name`); every field is checked against its type hint."""

    type: Literal[INTERVENTION_TYPES] = field(metadata={"help": "prompt, sft or dpo."})
    name: Optional[str] = field(
        default=None, metadata={"help": "Names its files and folders (default: prompt-k<k_shots>, sft or dpo)."})
    # prompt
    k_shots: Annotated[int, Ge(0)] = field(
        default=0, metadata={"help": "Demonstrations from train scenes (prompt interventions)."})
    system_prompt: bool = field(default=True, metadata={"help": "Use the value system prompt (prompt interventions)."})
    # sft / dpo: a training recipe (TRL config YAML) and overrides of its keys
    recipe: Optional[Annotated[str, MinLen(1)]] = field(
        default=None, metadata={"help": "The training recipe YAML (sft and dpo interventions)."})
    overrides: Dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keys of the training recipe to override (sft and dpo interventions)."})

    def __post_init__(self):
        if self.overrides is None:
            self.overrides = {}
        check_fields(self)
        if self.type != "prompt" and not self.recipe:
            raise RecipeError(f"{self.type} intervention {self.name or ''}: no 'recipe'",
                              fix=f"give recipe: the training config YAML (e.g. recipes/SmolLM2-135M-Instruct/{self.type}/config_demo.yaml)")
        if self.name is None:
            self.name = f"prompt-k{self.k_shots}" if self.type == "prompt" else self.type
        problem = name_problem(self.name)
        if problem is not None:
            raise FieldError("name", self.name, *problem)

    @property
    def needs_train_items(self) -> bool:
        """Whether realising it takes train items (demonstrations or training data)."""
        return self.type != "prompt" or self.k_shots > 0

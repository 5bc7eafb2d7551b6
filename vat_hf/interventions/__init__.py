"""Interventions toward one target value: a prompt (here, :mod:`~vat_hf.interventions.prompt`)
or an SFT/DPO adapter trained with TRL (the glue in :mod:`~vat_hf.interventions.training`; the
training itself in :mod:`vat_hf.train`). :func:`realise` turns an experiment's intervention entry
into what the evaluator needs: a prompt and, for a trained one, an adapter folder."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

from vat_hf.interventions.config import INTERVENTION_TYPES, InterventionConfig
from vat_hf.interventions.prompt import TrainSplitError, demonstrations, train_items_for, value_prompt
from vat_hf.interventions.training import check_intervention, train_intervention
from vat_hf.prompts import JudgePrompt

__all__ = ["INTERVENTION_TYPES", "InterventionConfig", "TrainSplitError", "check_intervention", "demonstrations",
           "realise", "train_intervention", "train_items_for", "value_prompt"]


def realise(spec: InterventionConfig, *, target_value: str, base_model: Optional[str], data_source: str,
            data_columns: Optional[Mapping[str, str]], train_items: Sequence[Mapping], adapters_dir, seed: int = 0
            ) -> Tuple[JudgePrompt, Optional[str]]:
    """(prompt, adapter folder or None) that realise ``spec``: the value prompt, or the trained
    adapter (judged under the plain prompt)."""
    if spec.type == "prompt":
        return value_prompt(target_value, train_items, k_shots=spec.k_shots, system_prompt=spec.system_prompt,
                            seed=seed, name=spec.name), None
    adapter = train_intervention(spec, base_model, target_value, data_source, data_columns, train_items,
                                 Path(adapters_dir) / spec.name)
    return JudgePrompt(), str(adapter)

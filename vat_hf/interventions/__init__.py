"""Interventions toward one target value: a prompt (here, :mod:`~vat_hf.interventions.prompt`),
an SFT/DPO adapter trained with TRL (the glue in :mod:`~vat_hf.interventions.training`; the
training itself in :mod:`vat_hf.train`), or value steering (:mod:`~vat_hf.interventions.steering`).
:func:`realise` turns an experiment's intervention entry into what the evaluator needs: a prompt
and, for a trained one, an adapter folder, for steering a vector and its strength."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Tuple

from vat_hf.interventions.config import DEFAULT_MIN_OPTION_MASS, INTERVENTION_TYPES, InterventionConfig
from vat_hf.interventions.prompt import TrainSplitError, demonstrations, train_items_for, value_prompt
from vat_hf.interventions.training import check_intervention, train_intervention
from vat_hf.prompts import JudgePrompt

__all__ = ["DEFAULT_MIN_OPTION_MASS", "INTERVENTION_TYPES", "InterventionConfig", "Realised", "TrainSplitError",
           "check_intervention", "demonstrations", "realise", "train_intervention", "train_items_for", "value_prompt"]


class Realised(NamedTuple):
    """What an evaluation of an intervention needs: the prompt, an adapter folder (or None), and
    for steering the vector with its strength (or None)."""

    prompt: JudgePrompt
    adapter: Optional[str] = None
    steering: Optional[Tuple[Any, float]] = None


def realise(spec: InterventionConfig, *, target_value: str, base_model: Optional[str], data_source: str,
            data_columns: Optional[Mapping[str, str]], train_items: Sequence[Mapping], adapters_dir, seed: int = 0,
            steering_dir=None, model_key: Optional[str] = None,
            load_base: Optional[Callable[[], Tuple[Any, Any]]] = None) -> Realised:
    """The value prompt; the trained adapter (judged under the plain prompt); or the steering
    vector toward the target (stored under ``steering_dir``, keyed by ``model_key``, the model
    files' fingerprint; computed with ``load_base()``'s model and tokenizer when not stored yet)
    with the entry's strength, judged under the plain prompt."""
    if spec.type == "prompt":
        return Realised(value_prompt(target_value, train_items, k_shots=spec.k_shots, system_prompt=spec.system_prompt,
                                     seed=seed, name=spec.name))
    if spec.type == "steering":
        from vat_hf.interventions.steering import steering_vector, vector_key

        if steering_dir is None or load_base is None:
            raise ValueError("realising a steering intervention needs steering_dir and load_base")
        folder = Path(steering_dir) / vector_key(str(model_key or base_model), target_value, spec.layers, train_items)
        vector = steering_vector(folder, train_items, target_value, spec.layers, load_base)
        return Realised(JudgePrompt(), None, (vector, float(spec.strength)))
    adapter = train_intervention(spec, base_model, target_value, data_source, data_columns, train_items,
                                 Path(adapters_dir) / spec.name)
    return Realised(JudgePrompt(), str(adapter))

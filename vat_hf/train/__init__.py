"""SFT and DPO interventions: TRL's trainers on items of the train scenes, LoRA/QLoRA via PEFT.

Command line (one process, or several with ``accelerate launch --config_file recipes/accelerate/...``)::

    accelerate launch -m vat_hf.train.sft --config recipes/SmolLM2-135M-Instruct/sft/config_lora.yaml
    accelerate launch -m vat_hf.train.dpo --config recipes/SmolLM2-135M-Instruct/dpo/config_lora.yaml

From an experiment recipe, `vat-hf run` trains each ``sft``/``dpo`` intervention through
:func:`vat_hf.interventions.train_intervention` (the glue lives beside the prompt intervention)
and evaluates the adapter on the one loaded base model.
"""

from __future__ import annotations

from vat_hf.train.card import add_vat_result, read_training_info, write_model_card
from vat_hf.train.config import (
    TrainingConfigError,
    VATDPOScriptArguments,
    VATScriptArguments,
    make_parser,
    parse_training_args,
    parse_training_config,
)
from vat_hf.train.data import TrainingDataError, dpo_dataset, dpo_pairs, sft_dataset, sft_examples

__all__ = [
    "TrainingConfigError", "TrainingDataError", "VATDPOScriptArguments", "VATScriptArguments", "add_vat_result",
    "dpo_dataset", "dpo_pairs", "make_parser", "parse_training_args", "parse_training_config", "read_training_info",
    "run_training", "sft_dataset", "sft_examples", "write_model_card",
]


def run_training(method, script_args, training_args, model_args, items=None, end=False, extra_info=None):
    """See :func:`vat_hf.train.common.run_training` (imported on first use: it pulls in TRL)."""
    from vat_hf.train.common import run_training as run

    return run(method, script_args, training_args, model_args, items=items, end=end, extra_info=extra_info)

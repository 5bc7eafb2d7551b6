"""Interventions toward one target value: prompting here; SFT and DPO in vat_hf.train."""

from vat_hf.interventions.prompt import TrainSplitError, demonstrations, train_items_for, value_prompt

__all__ = ["TrainSplitError", "demonstrations", "train_items_for", "value_prompt"]

"""DPO toward one Schwartz value with TRL's ``DPOTrainer`` (LoRA/QLoRA through PEFT, or full fine-tuning).

    accelerate launch -m vat_hf.train.dpo --config recipes/SmolLM2-135M-Instruct/dpo/config_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m vat_hf.train.dpo \
        --config recipes/Qwen2.5-7B-Instruct/dpo/config_lora.yaml --beta 0.05 --max_steps 200

The recipe is parsed by TRL's ``TrlParser`` into ``VATDPOScriptArguments`` (target value, data,
reference), TRL's ``DPOConfig`` and ``ModelConfig``; any key can be overridden by a ``--key value``
flag, an unknown key is an error. The pairs are (chosen: an action expressing the target value,
rejected: one going against it) from the same train scene (see :mod:`vat_hf.train.data`).

Reference model: with LoRA, the base with the adapter disabled (no second copy); with full
fine-tuning, ``ref_model_name_or_path`` when given, else the initial model's log-probs precomputed
once. The adapter (or model) is saved to ``output_dir`` with a model card. ``--resume`` continues
from the last checkpoint in ``output_dir``.
"""

from __future__ import annotations

import sys

from vat_hf.train.common import command_line, run_training

METHOD = "dpo"


def main(script_args, training_args, model_args):
    # run_training ends with accelerator.end_training(): trackers finished, process group destroyed.
    return run_training(METHOD, script_args, training_args, model_args, end=True)


if __name__ == "__main__":
    # TrlParser over vat-hf's and TRL's dataclasses (vat_hf.train.config.make_parser), refusing unknown keys;
    # a user error prints `error: <message>` and exits 1 (-v: with the traceback).
    sys.exit(command_line(METHOD))

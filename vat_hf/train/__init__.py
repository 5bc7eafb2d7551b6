"""SFT and DPO interventions: TRL's trainers on items of the train scenes, LoRA/QLoRA via PEFT.

Command line (one process, or several with ``accelerate launch --config_file recipes/accelerate/...``)::

    accelerate launch -m vat_hf.train.sft --config recipes/SmolLM2-135M-Instruct/sft/config_lora.yaml
    accelerate launch -m vat_hf.train.dpo --config recipes/SmolLM2-135M-Instruct/dpo/config_lora.yaml

From an experiment recipe, `vat-hf run` calls :func:`train_intervention` for each ``sft``/``dpo``
intervention and evaluates the adapter on the one loaded base model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from vat_hf.train.card import add_vat_result, read_training_info, write_model_card
from vat_hf.train.config import (
    TrainingConfigError,
    VATDPOScriptArguments,
    VATScriptArguments,
    VATTrainingArguments,
    make_parser,
    parse_training_args,
)
from vat_hf.train.data import TrainingDataError, dpo_dataset, dpo_pairs, sft_dataset, sft_examples

logger = logging.getLogger(__name__)

__all__ = [
    "TrainingConfigError", "TrainingDataError", "VATDPOScriptArguments", "VATScriptArguments", "VATTrainingArguments",
    "add_vat_result", "check_intervention", "dpo_dataset", "dpo_pairs", "make_parser", "parse_training_args", "read_training_info",
    "run_training", "sft_dataset", "sft_examples", "train_intervention", "write_model_card",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOLVED_RECIPE = "vat_recipe.yaml"
# Keys that do not change the trained weights: a finished adapter stays valid when only these differ.
_NOT_IN_FINGERPRINT = {"output_dir", "logging_steps", "logging_dir", "report_to", "save_steps", "save_strategy",
                       "save_total_limit", "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo", "resume",
                       "run_name", "disable_tqdm", "logging_first_step", "dataloader_num_workers"}


def run_training(method, script_args, training_args, model_args, items=None, end=False, extra_info=None):
    """See :func:`vat_hf.train.common.run_training` (imported lazily: it pulls in TRL)."""
    from vat_hf.train.common import run_training as _run

    return _run(method, script_args, training_args, model_args, items=items, end=end, extra_info=extra_info)


def find_recipe(recipe) -> Path:
    """A training recipe path, as given or relative to the repository root."""
    path = Path(str(recipe)).expanduser()
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise TrainingConfigError(f"training recipe {recipe} not found (looked in . and {REPO_ROOT})")


def fingerprint(method: str, config: Mapping) -> str:
    kept = {k: v for k, v in sorted(config.items()) if k not in _NOT_IN_FINGERPRINT}
    payload = json.dumps({"method": method, **kept}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolved_recipe(spec, experiment_config, output_dir) -> dict:
    """The training recipe of an intervention: its YAML, then ``spec.overrides``, then what the
    experiment fixes (base model, target value, data source, output folder)."""
    from vat_hf.models.loading import DEFAULT_MODEL, is_embedded
    from vat_hf.pipeline import RecipeError

    raw = yaml.safe_load(find_recipe(spec.recipe).read_text()) or {}
    if not isinstance(raw, dict):
        raise TrainingConfigError(f"training recipe {spec.recipe} must be a YAML mapping")
    config = {**raw, **dict(spec.overrides or {})}
    model = experiment_config.model or DEFAULT_MODEL
    fixed = {"model_name_or_path": model, "target_value": experiment_config.target_value,
             "data_source": experiment_config.data.source, "data_columns": experiment_config.data.columns,
             "output_dir": str(output_dir)}
    for key, value in fixed.items():
        given = config.get(key)
        same_model = key == "model_name_or_path" and given is not None and is_embedded(given) and is_embedded(value)
        if given not in (None, value) and key != "output_dir" and not same_model:
            logger.warning("%s: the recipe's %s=%r is replaced by the experiment's %r", spec.name, key, given, value)
        config[key] = value
    if not config.get("use_peft") and not config.get("adapter_name_or_path"):
        raise RecipeError(
            f"intervention {spec.name!r}: vat-hf run evaluates trained interventions as adapters on one base model; "
            "set use_peft: true (full fine-tuning runs through `accelerate launch -m vat_hf.train.{sft,dpo}` and "
            "`vat-hf eval --model OUTPUT_DIR`)"
        )
    return config


def _finished(spec, fp: str, output_dir: Path) -> bool:
    """Whether ``output_dir`` holds the finished adapter of this very recipe; an adapter of
    another recipe there is an error (its judgments would be mixed up with the new one's)."""
    done = read_training_info(output_dir)
    if done is None:
        return False
    if done.get("fingerprint") == fp and any((Path(output_dir) / f).exists() for f in ("adapter_config.json", "config.json")):
        return True
    from vat_hf.pipeline import RecipeError

    raise RecipeError(
        f"intervention {spec.name!r}: {output_dir} holds an adapter trained from a different recipe. Remove that "
        f"folder and judgments/{spec.name}.jsonl, or give the intervention a new name"
    )


def _parse_resolved(method: str, config: Mapping, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return parse_training_args(method, ["--config", str(path)])


def check_intervention(spec, experiment_config, output_dir):
    """Resolve and parse an intervention's training recipe without training: `vat-hf run` calls
    it for every sft/dpo intervention before its first evaluation, so an unknown key, a bad value,
    a missing recipe or base model fails in seconds."""
    from vat_hf.train.common import resolve_base_model

    config = resolved_recipe(spec, experiment_config, output_dir)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / RESOLVED_RECIPE
        try:
            script_args, training_args, model_args = _parse_resolved(spec.type, config, resolved)
        except TrainingConfigError as err:
            where = f"intervention {spec.name!r} (recipe {spec.recipe} with overrides {dict(spec.overrides or {})})"
            raise TrainingConfigError(str(err).replace(f"recipe {resolved}", where)) from None
    resolve_base_model(model_args.model_name_or_path, model_args.model_revision, training_args.trust_remote_code)
    _finished(spec, fingerprint(spec.type, config), Path(output_dir))
    return script_args, training_args, model_args


def train_intervention(spec, experiment_config, train_items: Sequence[Mapping], output_dir) -> Path:
    """Train one ``sft``/``dpo`` intervention in this process and return its adapter folder.

    A finished adapter of the same resolved recipe in ``output_dir`` is reused; an interrupted
    one resumes from its last checkpoint."""
    method = spec.type
    if method not in ("sft", "dpo"):
        raise TrainingConfigError(f"train_intervention trains sft or dpo interventions, not {method!r}")
    output_dir = Path(output_dir)
    config = resolved_recipe(spec, experiment_config, output_dir)
    fp = fingerprint(method, config)
    if _finished(spec, fp, output_dir):
        logger.info("%s: reusing the finished adapter in %s", spec.name, output_dir)
        return output_dir
    script_args, training_args, model_args = _parse_resolved(method, config, output_dir / RESOLVED_RECIPE)
    script_args.resume = True  # an interrupted run continues from its last checkpoint (fresh if none)
    extra = {"fingerprint": fp, "intervention": spec.name, "recipe": str(spec.recipe), "overrides": dict(spec.overrides or {})}
    return run_training(method, script_args, training_args, model_args, items=train_items, end=False, extra_info=extra)

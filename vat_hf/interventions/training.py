"""Training an intervention: an experiment's ``sft``/``dpo`` entry into a trained adapter.

The training recipe is resolved in memory: its YAML, then the entry's ``overrides``, then what
the experiment fixes (base model, target value, data source, output folder); that mapping is
parsed by TRL's parser (:func:`vat_hf.train.config.parse_training_config`) without a file in
between, and the resolved recipe is kept beside the adapter (``vat_recipe.yaml``, secrets
redacted) for the record. A finished adapter of the same training fingerprint
(:func:`vat_hf.train.common.training_fingerprint`: the parsed settings that change the weights,
the same fingerprint every checkpoint carries) is reused; an interrupted one resumes from its
newest checkpoint of that fingerprint; a checkpoint or adapter of another recipe is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import yaml

from vat_hf.errors import RecipeError
from vat_hf.redaction import redact

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOLVED_RECIPE = "vat_recipe.yaml"


def find_recipe(recipe) -> Path:
    """A training recipe path, as given or relative to the repository root."""
    from vat_hf.train.config import TrainingConfigError

    path = Path(str(recipe)).expanduser()
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise TrainingConfigError(f"training recipe {recipe} not found (looked in . and {REPO_ROOT})")


def resolved_recipe(spec, base_model: Optional[str], target_value: str, data_source: str,
                    data_columns: Optional[Mapping[str, str]], output_dir) -> Dict:
    """The training recipe of an intervention: its YAML, then ``spec.overrides``, then what the
    experiment fixes (base model, target value, data source and columns, output folder)."""
    from vat_hf.models.loading import DEFAULT_MODEL, is_embedded
    from vat_hf.train.config import TrainingConfigError

    from vat_hf.validation import load_yaml

    raw, _ = load_yaml(find_recipe(spec.recipe))  # a YAML error names the file, line and column
    raw = raw or {}
    if not isinstance(raw, dict):
        raise TrainingConfigError(f"training recipe {spec.recipe} must be a YAML mapping of keys to values")
    config = {**raw, **dict(spec.overrides or {})}
    model = base_model or DEFAULT_MODEL
    fixed = {"model_name_or_path": model, "target_value": target_value, "data_source": data_source,
             "data_columns": dict(data_columns) if data_columns else None, "output_dir": str(output_dir)}
    for key, value in fixed.items():
        given = config.get(key)
        same_model = key == "model_name_or_path" and given is not None and is_embedded(given) and is_embedded(value)
        if given not in (None, value) and key != "output_dir" and not same_model:
            logger.warning("%s: the recipe's %s=%r is replaced by the experiment's %r", spec.name, key, given, value)
        config[key] = value
    if not config.get("use_peft") and not config.get("adapter_name_or_path"):
        raise RecipeError(
            f"intervention {spec.name!r}: vat-hf run evaluates trained interventions as adapters on one base model",
            fix="set use_peft: true (full fine-tuning runs through `accelerate launch -m vat_hf.train.{sft,dpo}` and "
                "`vat-hf eval --model OUTPUT_DIR`)")
    return config


def _finished(spec, fp: str, output_dir: Path) -> bool:
    """Whether ``output_dir`` holds the finished adapter of this very recipe; an adapter of
    another recipe there is an error (its judgments would be mixed up with the new one's)."""
    from vat_hf.train.card import read_training_info

    done = read_training_info(output_dir)
    if done is None:
        return False
    if done.get("fingerprint") == fp and any((Path(output_dir) / f).exists() for f in ("adapter_config.json", "config.json")):
        return True
    raise RecipeError(f"intervention {spec.name!r}: {output_dir} holds an adapter trained from a different recipe",
                      fix="remove that folder, or give the intervention a new name")


def _parse(spec, config: Mapping):
    from vat_hf.train.config import parse_training_config

    where = f"intervention {spec.name!r} (recipe {spec.recipe} with overrides {redact(dict(spec.overrides or {}))})"
    return parse_training_config(spec.type, config, where=where)


def _fingerprint(spec, parsed) -> str:
    from vat_hf.train.common import training_fingerprint

    return training_fingerprint(spec.type, *parsed)[0]


def check_intervention(spec, base_model: Optional[str], target_value: str, data_source: str,
                       data_columns: Optional[Mapping[str, str]], output_dir):
    """Resolve and parse an intervention's training recipe without training: `vat-hf run` calls
    it for every sft/dpo intervention before its first evaluation, so an unknown key, a bad value,
    a missing recipe or base model fails in seconds."""
    from vat_hf.train.common import resolve_base_model

    config = resolved_recipe(spec, base_model, target_value, data_source, data_columns, output_dir)
    parsed = script_args, training_args, model_args = _parse(spec, config)
    resolve_base_model(model_args.model_name_or_path, model_args.model_revision, training_args.trust_remote_code)
    fp = _fingerprint(spec, parsed)
    if not _finished(spec, fp, Path(output_dir)):
        # An interrupted run of another recipe: refused now, before the first evaluation.
        from vat_hf.train.common import resume_checkpoint, training_fingerprint

        resume_checkpoint(output_dir, *training_fingerprint(spec.type, *parsed))
    return script_args, training_args, model_args


def train_intervention(spec, base_model: Optional[str], target_value: str, data_source: str,
                       data_columns: Optional[Mapping[str, str]], train_items: Sequence[Mapping], output_dir) -> Path:
    """Train one ``sft``/``dpo`` intervention in this process and return its adapter folder.

    A finished adapter of the same resolved recipe in ``output_dir`` is reused; an interrupted
    one resumes from its last checkpoint."""
    from vat_hf.io import atomic_write_text
    from vat_hf.train.common import run_training
    from vat_hf.train.config import TrainingConfigError

    method = spec.type
    if method not in ("sft", "dpo"):
        raise TrainingConfigError(f"train_intervention trains sft or dpo interventions, not {method!r}")
    output_dir = Path(output_dir)
    config = resolved_recipe(spec, base_model, target_value, data_source, data_columns, output_dir)
    parsed = script_args, training_args, model_args = _parse(spec, config)
    if _finished(spec, _fingerprint(spec, parsed), output_dir):
        logger.info("%s: reusing the finished adapter in %s", spec.name, output_dir)
        return output_dir
    atomic_write_text(output_dir / RESOLVED_RECIPE, yaml.safe_dump(redact(dict(config)), sort_keys=False))
    script_args.resume = True  # an interrupted run continues from its last checkpoint (fresh if none)
    extra = {"intervention": spec.name, "recipe": str(spec.recipe), "overrides": redact(dict(spec.overrides or {}))}
    return run_training(method, script_args, training_args, model_args, items=train_items, end=False, extra_info=extra)

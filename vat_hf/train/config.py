"""Training arguments: TRL's own config classes plus vat-hf's script arguments, parsed by TRL's parser.

A training recipe is one flat YAML file whose keys belong to one of three dataclasses:

* :class:`VATScriptArguments` (this module): what to align toward and with which data
  (``target_value``, ``data_source``, ``max_scenes``, ``adapter_name_or_path``, ``resume``...);
* TRL's ``SFTConfig`` or ``DPOConfig`` (a ``transformers.TrainingArguments``): the optimisation
  (``learning_rate``, ``max_steps``, ``per_device_train_batch_size``, ``bf16``, ``beta``...);
* TRL's ``ModelConfig``: the base model and PEFT (``model_name_or_path``, ``dtype``,
  ``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_target_modules``, ``load_in_4bit``...).

:func:`parse_training_args` reads ``--config recipe.yaml`` and any key as a ``--key value`` flag
overriding the file; :func:`parse_training_config` parses a recipe that is already a mapping (an
experiment's resolved intervention recipe) the same way, in memory. Both run
:class:`trl.TrlParser` and refuse any key none of the three dataclasses knows, before anything is
loaded.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from vat_hf.errors import VatHfError
from vat_hf.values import canonical_value

METHODS = ("sft", "dpo")


class TrainingConfigError(VatHfError, ValueError):
    """A training recipe or flag that cannot be used: unknown key, missing or invalid value."""


@dataclass
class VATScriptArguments:
    """vat-hf's own training arguments (the rest are TRL's ``SFTConfig``/``DPOConfig`` and ``ModelConfig``)."""

    target_value: Optional[str] = field(
        default=None,
        metadata={"help": "Basic Schwartz value to align toward (e.g. Benevolence); required."},
    )
    data_source: str = field(
        default="builtin",
        metadata={"help": "Item source: 'builtin', a file/folder in the item schema, or a Hub dataset id. "
                          "Only its 'train' scenes are used."},
    )
    data_columns: Optional[str] = field(
        default=None,
        metadata={"help": "Column mapping for sources with other column names, as a JSON object "
                          "(in YAML: a mapping)."},
    )
    max_scenes: Optional[int] = field(
        default=None,
        metadata={"help": "Train on a reproducible sample of this many train scenes (drawn with `seed`)."},
    )
    adapter_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "An existing PEFT adapter to continue training (e.g. DPO on top of an SFT adapter) "
                          "instead of a new one from `use_peft`/`lora_*`."},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Resume from the last checkpoint in output_dir (start fresh if there is none)."},
    )
    trajectory_every_n_steps: Optional[int] = field(
        default=None,
        metadata={"help": "Judge a fixed sample of test items every N steps (and at the start) and log gain, "
                          "drifts and vat (vat_hf.train.trajectory). Unset: no trajectory."},
    )
    trajectory_n_items: int = field(
        default=200,
        metadata={"help": "Size of the trajectory's fixed test-item sample (whole scenes first)."},
    )
    trajectory_n_bootstrap: int = field(
        default=200,
        metadata={"help": "Scene-bootstrap resamples for the trajectory's intervals (drift onset reads them)."},
    )

    def __post_init__(self):
        if self.target_value is None:
            raise TrainingConfigError("target_value is required: the basic Schwartz value to align toward (e.g. Benevolence)")
        self.target_value = canonical_value(self.target_value)
        if isinstance(self.data_columns, str):
            try:
                self.data_columns = json.loads(self.data_columns)
            except json.JSONDecodeError as err:
                raise TrainingConfigError(f"data_columns must be a JSON object mapping schema field -> column: {err}") from None
        if self.data_columns is not None and not isinstance(self.data_columns, dict):
            raise TrainingConfigError(f"data_columns must be a mapping, got {self.data_columns!r}")
        if self.max_scenes is not None and self.max_scenes < 1:
            raise TrainingConfigError(f"max_scenes must be >= 1, got {self.max_scenes}")
        if self.trajectory_every_n_steps is not None and self.trajectory_every_n_steps < 1:
            raise TrainingConfigError(f"trajectory_every_n_steps must be >= 1, got {self.trajectory_every_n_steps}")
        if getattr(self, "tax_aware_weight", 0.0) < 0:
            raise TrainingConfigError(f"tax_aware_weight must be >= 0, got {self.tax_aware_weight}")


@dataclass
class VATDPOScriptArguments(VATScriptArguments):
    """DPO adds how the reference model is made and how many pairs a scene may give."""

    ref_model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Full fine-tuning only: an explicit reference model. Unset: the reference log-probs of "
                          "the initial model are precomputed once (no second copy in memory). With LoRA the "
                          "reference is the base with the adapter disabled."},
    )
    max_pairs_per_scene: Optional[int] = field(
        default=None,
        metadata={"help": "Cap on (chosen, rejected) pairs drawn from one scene (unset: all)."},
    )
    tax_aware_weight: float = field(
        default=0.0,
        metadata={"help": "Tax-aware DPO: anchor pairs per target pair for the non-target values, ordered by the "
                          "model's own pre-training judgments (vat_hf.train.anchors). 0: plain DPO."},
    )
    tax_aware_min_margin: float = field(
        default=0.0,
        metadata={"help": "Skip anchor pairs whose two earlier ratings differ by no more than this."},
    )


def config_classes(method: str) -> Tuple[type, type, type]:
    from trl import DPOConfig, ModelConfig, SFTConfig

    if method == "sft":
        return VATScriptArguments, SFTConfig, ModelConfig
    if method == "dpo":
        return VATDPOScriptArguments, DPOConfig, ModelConfig
    raise TrainingConfigError(f"unknown training method {method!r}; use one of {METHODS}")


def make_parser(method: str):
    from trl import TrlParser

    # allow_abbrev=False: "--learning_rat" is an unknown key, not a silent abbreviation of learning_rate.
    return TrlParser(config_classes(method), prog=f"accelerate launch -m vat_hf.train.{method}", allow_abbrev=False)


# The recipes spell transformers' current names. transformers 5.23 renamed gradient checkpointing to
# activation checkpointing (the old names stay as deprecated aliases until v6); a GPU image with an
# earlier transformers (5.17 on the lent H200) knows only the old names, so there each recipe key
# and flag is renamed back rather than refused as unknown.
EARLIER_NAMES = {"activation_checkpointing": "gradient_checkpointing",
                 "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}


def _known_keys(parser) -> List[str]:
    return sorted({action.dest for action in parser._actions if action.dest != "help"})


def _to_known_names(parser, config: dict, args: List[str]) -> Tuple[dict, List[str]]:
    known = set(_known_keys(parser))
    renames = {new: old for new, old in EARLIER_NAMES.items() if new not in known and old in known}
    if not renames:
        return config, args
    config = {renames.get(key, key): value for key, value in config.items()}
    flags = {f"--{new}": f"--{old}" for new, old in renames.items()}
    renamed = []
    for arg in args:  # "--flag value" and "--flag=value"
        flag, equals, value = arg.partition("=")
        renamed.append(flags.get(flag, flag) + equals + value)
    return config, renamed


def _keys(strings: Sequence[str]) -> List[str]:
    return [s[2:].split("=", 1)[0] for s in strings if s.startswith("--")]


def _unknown_error(parser, where: str, keys: Iterable[str], method: str) -> TrainingConfigError:
    known = _known_keys(parser)
    lines = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=3)
        lines.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    classes = ", ".join(cls.__name__ for cls in config_classes(method))
    return TrainingConfigError(f"{where}: unknown key(s) {'; '.join(lines)}",
                               fix=f"spell each key as a field of {classes} (a {method} recipe takes those)")


def parse_training_config(method: str, config: Mapping[str, Any], args: Sequence[str] = (), where: str = "recipe"):
    """(script_args, training_args, model_args) from a recipe ``config`` (a mapping, as a recipe
    YAML file holds) with ``--key value`` ``args`` on top.

    TRL's own parsing, in memory: the mapping becomes the parser's defaults
    (``TrlParser.set_defaults_with_config``, what ``--config FILE`` does) and the flags are parsed
    over them, so a mapping parses exactly as the same keys in a file. An ``env`` mapping sets
    environment variables, as in TRL. Unknown keys raise :class:`TrainingConfigError` naming
    ``where`` (TRL's scripts silently ignore unknown file keys; a misspelt ``learning_rate``
    should not train with the default).
    """
    parser = make_parser(method)
    config = dict(config)
    env = config.pop("env", None) or {}
    if not isinstance(env, Mapping):
        raise TrainingConfigError(f"{where}: 'env' must be a mapping of environment variables")
    for key, value in env.items():
        os.environ[str(key)] = str(value)
    config, args = _to_known_names(parser, config, list(args))
    config_unknown = parser.set_defaults_with_config(**config)
    if config_unknown:  # before the dataclasses are built: a typo is named before any value is checked
        raise _unknown_error(parser, where, _keys(config_unknown), method)
    try:
        *parsed, flag_unknown = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True,
                                                                   look_for_args_file=False)
    except VatHfError:
        raise
    except ValueError as err:  # TrainingArguments' and TRL's own checks (bf16 without a GPU that has it, ...)
        raise TrainingConfigError(f"{where}: {err}") from None
    if flag_unknown:
        raise _unknown_error(parser, "command line", _keys(flag_unknown) or flag_unknown, method)
    return tuple(parsed)


def parse_training_args(method: str, args: Optional[Sequence[str]] = None):
    """(script_args, training_args, model_args) from ``--config FILE`` and ``--key value`` flags
    (flags override the file); see :func:`parse_training_config`."""
    args = list(sys.argv[1:] if args is None else args)
    config, where = {}, "config"
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise TrainingConfigError("--config needs a recipe file")
        path = args[at + 1]
        del args[at:at + 2]
        try:
            with open(path, encoding="utf-8") as handle:
                config = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise TrainingConfigError(f"training recipe not found: {path}") from None
        if not isinstance(config, dict):
            raise TrainingConfigError(f"training recipe {path} must be a YAML mapping")
        where = f"recipe {path}"
    return parse_training_config(method, config, args, where)

"""The configuration of an evaluation: :class:`EvalConfig` (every evaluator setting) and
:class:`DataConfig` (which items are judged).

One dataclass each, three ways in: an experiment recipe's ``eval:`` and ``data:`` sections, and
the flags of ``vat-hf eval`` and ``python -m vat_hf.evaluate`` (generated from these fields by
``transformers.HfArgumentParser``, the way TRL's scripts are). The help text of every setting is
written once, in its field's metadata.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

from vat_hf.errors import VatHfError

MODE_CHOICES = ("auto", "logprob", "logprob-multitoken", "generate")
BACKENDS = ("hf", "vllm")


class EvalConfigError(VatHfError, ValueError):
    """An evaluation setting that cannot be used; names the setting."""


def _help(text: str, **more) -> Dict[str, Any]:
    return {"help": text, **more}


@dataclass
class EvalConfig:
    """Every setting of one evaluation: the backend, how items are scored and batched, the
    length rule, the judgment cache, and the files written. A recipe's ``eval:`` section,
    ``vat-hf eval`` and ``python -m vat_hf.evaluate`` all take it."""

    _argument_group_name = "evaluator settings (EvalConfig: also a recipe's eval: section)"  # HfArgumentParser: the --help section

    backend: Literal["hf", "vllm"] = field(
        default="hf", metadata=_help("hf (transformers) or vllm (the optional extra, on a supported GPU)."))
    mode: Literal["auto", "logprob", "logprob-multitoken", "generate"] = field(
        default="auto", metadata=_help("Scoring mode; auto: logprob when the options are single tokens, "
                                       "else logprob-multitoken."))
    dtype: str = field(
        default="auto", metadata=_help("auto (bf16 on GPUs that support it, else fp32), float32, bfloat16 or float16."))
    device: Optional[str] = field(
        default=None, metadata=_help("Device (default: this process's accelerator device, else the best available)."))
    attn_implementation: Optional[str] = field(
        default=None, metadata=_help("Attention kernel (default sdpa; flash_attention_2 if installed)."))
    prefix_reuse: Literal["auto", "true", "false"] = field(
        default="auto", metadata=_help("Reuse the shared prompt prefix's key/value cache: auto (when it is at least "
                                       "16 tokens, after a one-time check), true or false."))
    max_batch_tokens: int = field(default=8192, metadata=_help("Token budget of one batch (padded length x rows)."))
    max_batch_size: int = field(default=64, metadata=_help("Most rows in one batch."))
    max_length: Optional[int] = field(
        default=None, metadata=_help("Longest prompt judged (default: the model's context)."))
    truncation: Literal["refuse", "left"] = field(
        default="refuse", metadata=_help("Over-long prompts: refuse (recorded as missing) or left (keep their last "
                                         "max_length tokens)."))
    max_new_tokens: int = field(default=8, metadata=_help("Longest answer in generate mode."))
    limit: Optional[int] = field(
        default=None, metadata=_help("Judge only the first N items (of the scene sample); every stage of an "
                                     "experiment judges the same N."))
    cache: bool = field(
        default=True, metadata=_help("Read and write the judgment cache: a rerun judges only what is not in it."))
    cache_dir: Optional[str] = field(
        default=None, metadata=_help("Judgment cache root (default $VAT_HF_CACHE or ~/.cache/vat-hf; for vat-hf run, "
                                     "<output_dir>/cache)."))
    log_samples: bool = field(
        default=True, metadata=_help("Write samples_<name>.jsonl: per item, the exact prompt text and its hash "
                                     "with the model's outputs (lm-evaluation-harness --log_samples)."))
    log_dir: Optional[str] = field(
        default=None, metadata=_help("Folder for results_<name>.json and samples_<name>.jsonl (default: the "
                                     "judgments' folder)."))
    progress: bool = field(default=True, metadata=_help("Show a progress bar."))

    def __post_init__(self):
        if isinstance(self.prefix_reuse, bool):  # a YAML recipe may say true/false
            self.prefix_reuse = "true" if self.prefix_reuse else "false"
        self.prefix_reuse = str(self.prefix_reuse).lower()
        for name, choices in (("backend", BACKENDS), ("mode", MODE_CHOICES), ("prefix_reuse", ("auto", "true", "false")),
                              ("truncation", ("refuse", "left"))):
            if getattr(self, name) not in choices:
                raise EvalConfigError(f"eval setting {name}={getattr(self, name)!r} is not one of {list(choices)}")
        for name in ("max_batch_tokens", "max_batch_size", "max_new_tokens", "max_length", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise EvalConfigError(f"eval setting {name}={value!r} must be a whole number >= 1")
        from vat_hf.models.loading import parse_dtype

        try:
            parse_dtype(self.dtype)
        except ValueError as err:
            raise EvalConfigError(f"eval setting dtype: {err}") from None

    @property
    def prefix_reuse_flag(self) -> Union[str, bool]:
        """The evaluator's ``prefix_reuse`` argument: ``"auto"``, ``True`` or ``False``."""
        return {"true": True, "false": False}.get(self.prefix_reuse, "auto")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DataConfig:
    """Which items are judged: a source, a split and an optional reproducible scene sample."""

    _argument_group_name = "items (DataConfig: also a recipe's data: section)"  # HfArgumentParser: the --help section

    source: str = field(
        default="builtin", metadata=_help("Item source: 'builtin', a file/folder in the item schema, or a Hub dataset id.",
                                          aliases=["--data"]))
    split: Optional[str] = field(default="test", metadata=_help("Split to judge: train or test; '' for all."))
    max_scenes: Optional[int] = field(
        default=None, metadata=_help("Judge a reproducible sample of this many scenes (drawn with the seed)."))
    # Typed str for the command line (a JSON object); a recipe gives a mapping, and either is a
    # dict after __post_init__ (as VATScriptArguments.data_columns).
    columns: Optional[str] = field(
        default=None, metadata=_help("Column mapping for sources with other column names: a JSON object "
                                     "(in a recipe, a mapping) of schema field -> column."))

    def __post_init__(self):
        if isinstance(self.columns, str):
            try:
                self.columns = json.loads(self.columns) if self.columns.strip() else None
            except json.JSONDecodeError as err:
                raise EvalConfigError(f"data columns: not a JSON object ({err})",
                                      fix='give a mapping such as {"scenario": "situation"}') from None
        if self.columns is not None and not isinstance(self.columns, Mapping):
            raise EvalConfigError(f"data columns must be a mapping of schema field -> column, got {self.columns!r}")
        if self.max_scenes is not None and (not isinstance(self.max_scenes, int) or self.max_scenes < 1):
            raise EvalConfigError(f"data max_scenes={self.max_scenes!r} must be a whole number >= 1")

    def load(self, seed: int = 0) -> List[Dict]:
        """The items (``split`` '' or None: all of them)."""
        from vat_hf.data import load_items

        return load_items(self.source, split=self.split or None, max_scenes=self.max_scenes, seed=seed, columns=self.columns)

    def load_train(self, seed: int = 0) -> List[Dict]:
        """The source's ``train`` items: intervention material, never judged."""
        from vat_hf.data import load_items

        return load_items(self.source, split="train", seed=seed, columns=self.columns)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

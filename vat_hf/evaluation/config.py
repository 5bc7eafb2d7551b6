"""The configuration of an evaluation: :class:`EvalConfig` (every evaluator setting) and
:class:`DataConfig` (which items are judged).

One dataclass each, three ways in: an experiment recipe's ``eval:`` and ``data:`` sections, and
the flags of ``vat-hf eval`` and ``python -m vat_hf.evaluate`` (generated from these fields by
``transformers.HfArgumentParser``, the way TRL's scripts are). The help text of every setting is
written once, in its field's metadata.

Each field's type hint is its rule (a ``Literal`` of choices, a range such as ``Ge(1)`` written
with ``annotated_types``): :func:`vat_hf.validation.check_fields` checks every field against it
in ``__post_init__``, however the dataclass was made (a recipe, the command line, Python), so a
field added later is checked without new code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Mapping, Optional, Union

from annotated_types import Ge, MinLen

from vat_hf.errors import VatHfError
from vat_hf.validation import Checked, FieldError, check_fields

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
    max_batch_tokens: Annotated[int, Ge(1)] = field(
        default=8192, metadata=_help("Token budget of one batch (padded length x rows)."))
    max_batch_size: Annotated[int, Ge(1)] = field(default=64, metadata=_help("Most rows in one batch."))
    max_length: Optional[Annotated[int, Ge(1)]] = field(
        default=None, metadata=_help("Longest prompt judged (default: the model's context)."))
    truncation: Literal["refuse", "left"] = field(
        default="refuse", metadata=_help("Over-long prompts: refuse (recorded as missing) or left (keep their last "
                                         "max_length tokens)."))
    max_new_tokens: Annotated[int, Ge(1)] = field(default=8, metadata=_help("Longest answer in generate mode."))
    limit: Optional[Annotated[int, Ge(1)]] = field(
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
        if isinstance(self.prefix_reuse, str):
            self.prefix_reuse = self.prefix_reuse.lower()
        check_fields(self)  # every field against its type hint (choices, ranges)
        from vat_hf.models.loading import parse_dtype

        try:
            parse_dtype(self.dtype)
        except ValueError as err:
            raise FieldError("dtype", self.dtype, str(err), fix="auto, float32, bfloat16 or float16") from None

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

    source: Annotated[str, MinLen(1)] = field(
        default="builtin", metadata=_help("Item source: 'builtin', a file/folder in the item schema, or a Hub dataset id.",
                                          aliases=["--data"]))
    split: Optional[Literal["train", "test", ""]] = field(
        default="test", metadata=_help("Split to judge: train or test; '' for all."))
    max_scenes: Optional[Annotated[int, Ge(1)]] = field(
        default=None, metadata=_help("Judge a reproducible sample of this many scenes (drawn with the seed)."))
    # Typed str for the command line (a JSON object); a recipe gives a mapping, and either is a
    # dict after __post_init__ (as VATScriptArguments.data_columns).
    columns: Annotated[Optional[str], Checked(Optional[Dict[str, Any]])] = field(
        default=None, metadata=_help("Column mapping for sources with other column names: a JSON object "
                                     "(in a recipe, a mapping) of schema field -> column."))

    def __post_init__(self):
        if isinstance(self.columns, str):
            try:
                self.columns = json.loads(self.columns) if self.columns.strip() else None
            except json.JSONDecodeError as err:
                raise EvalConfigError(f"data columns: not a JSON object ({err})",
                                      fix='give a mapping such as {"scenario": "situation"}') from None
        if isinstance(self.columns, Mapping):
            self.columns = dict(self.columns)
        check_fields(self)  # every field against its type hint (columns: a mapping by now)

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

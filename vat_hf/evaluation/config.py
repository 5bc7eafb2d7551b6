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

from annotated_types import Ge, Gt, MinLen

from vat_hf.errors import VatHfError
from vat_hf.evaluation.linear_kernel import LINEAR_KERNELS
from vat_hf.evaluation.served import APIS
from vat_hf.evaluation.task import MODES, TRUNCATION_RULES
from vat_hf.validation import Checked, FieldError, check_fields

MODE_CHOICES = ("auto",) + MODES
BACKENDS = ("hf", "vllm", "openai")
SERVED_APIS = ("auto",) + APIS


class EvalConfigError(VatHfError, ValueError):
    """An evaluation setting that cannot be used; names the setting."""


def json_mapping(value, what: str, example: str) -> Optional[Mapping]:
    """A setting that is a mapping in a recipe and a JSON object on the command line, as a
    mapping (None for none or an empty string)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise EvalConfigError(f"{what}: not a JSON object ({err})", fix=f"give a mapping such as {example}") from None
    if value is not None and not isinstance(value, Mapping):
        raise EvalConfigError(f"{what} must be a mapping, got {value!r}", fix=f"give a mapping such as {example}")
    return value


def _help(text: str, **more) -> Dict[str, Any]:
    return {"help": text, **more}


@dataclass
class EvalConfig:
    """Every setting of one evaluation: the backend, how items are scored and batched, the
    length rule, the judgment cache, and the files written. A recipe's ``eval:`` section,
    ``vat-hf eval`` and ``python -m vat_hf.evaluate`` all take it."""

    _argument_group_name = "evaluator settings (EvalConfig: also a recipe's eval: section)"  # HfArgumentParser: the --help section

    backend: Literal[BACKENDS] = field(
        default="hf", metadata=_help("hf (transformers), vllm (vLLM's offline engine: the vllm extra) or openai (a "
                                     "model served over an OpenAI-compatible API: --base_url; the openai extra)."))
    mode: Literal[MODE_CHOICES] = field(
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
    linear_kernel: Literal[LINEAR_KERNELS] = field(
        default="auto", metadata=_help("CPU kernel of the float32 linear layers (backend hf): auto (oneDNN where a "
                                       "one-time timing finds it clearly faster than torch's MKL kernel), onednn or "
                                       "torch. Both compute the same products up to float32 rounding."))
    max_batch_tokens: Annotated[int, Ge(1)] = field(
        default=8192, metadata=_help("Token budget of one batch (padded length x rows); after an out-of-memory "
                                     "error the evaluator halves it (and max_batch_size) and goes on."))
    max_batch_size: Annotated[int, Ge(1)] = field(default=64, metadata=_help("Most rows in one batch."))
    max_length: Optional[Annotated[int, Ge(1)]] = field(
        default=None, metadata=_help("Longest prompt judged (default: the model's context)."))
    truncation: Literal[TRUNCATION_RULES] = field(
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
    # -- vLLM's offline engine (backend vllm) -----------------------------------------------------
    # Typed str for the command line (a JSON object); a recipe gives a mapping (as DataConfig.columns).
    vllm_engine_args: Annotated[Optional[str], Checked(Optional[Dict[str, Any]])] = field(
        default=None, metadata=_help("More vllm.LLM arguments: a JSON object (in a recipe, a mapping), e.g. "
                                     '{"tensor_parallel_size": 4, "gpu_memory_utilization": 0.85}.'))
    # -- served models (backend openai) -----------------------------------------------------------
    # The key itself is never a setting: only where to read it from, so that no config, results
    # file, card or log can hold it.
    base_url: Optional[str] = field(
        default=None, metadata=_help("OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (backend openai)."))
    model_name: Optional[str] = field(
        default=None, metadata=_help("The model's name on the server (default: the one model it lists). --model "
                                     "then names the tokenizer (a Hub id or folder), if there is one."))
    api: Literal[SERVED_APIS] = field(
        default="auto", metadata=_help("Server endpoint: completions (the exact prompt as token ids; needs the "
                                       "tokenizer), chat (messages; the server applies its chat template) or auto "
                                       "(completions when the tokenizer is available, else chat)."))
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata=_help("Environment variable holding the server's API key (read, never "
                                                 "written anywhere)."))
    api_key_file: Optional[str] = field(
        default=None, metadata=_help("File holding the API key (first line), instead of --api_key_env."))
    top_logprobs: Annotated[int, Ge(1)] = field(
        default=20, metadata=_help("Top log-probabilities asked for at the answer's first token, where the server "
                                   "cannot return the five options' own (OpenAI allows at most 20)."))
    max_concurrency: Annotated[int, Ge(1)] = field(
        default=8, metadata=_help("Requests in flight at once (the server batches them)."))
    request_timeout: Annotated[float, Gt(0)] = field(
        default=120.0, metadata=_help("Seconds before one request is abandoned and retried."))
    max_retries: Annotated[int, Ge(0)] = field(
        default=5, metadata=_help("Retries of one request on a timeout, a dropped connection, 408/409/429 or a 5xx "
                                  "(exponential backoff, or the server's Retry-After)."))

    def __post_init__(self):
        if isinstance(self.prefix_reuse, bool):  # a YAML recipe may say true/false
            self.prefix_reuse = "true" if self.prefix_reuse else "false"
        if isinstance(self.prefix_reuse, str):
            self.prefix_reuse = self.prefix_reuse.lower()
        self.vllm_engine_args = json_mapping(self.vllm_engine_args, "eval setting vllm_engine_args",
                                             '{"tensor_parallel_size": 2}')
        check_fields(self)  # every field against its type hint (choices, ranges)
        from vat_hf.models.loading import parse_dtype

        try:
            parse_dtype(self.dtype)
        except ValueError as err:
            raise FieldError("dtype", self.dtype, str(err), fix="auto, float32, bfloat16 or float16") from None
        self._check_backend_settings()

    def _check_backend_settings(self) -> None:
        if self.base_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise EvalConfigError(f"eval setting base_url={self.base_url!r} is not an http(s) address",
                                      fix="e.g. http://127.0.0.1:8000/v1")
            # A key inside the address would be written with the config into every results file.
            if parts.username or parts.password or parts.query:
                raise EvalConfigError("eval setting base_url carries credentials or a query string; it is written "
                                      "into results files, so it may hold neither",
                                      fix=f"put the key in ${self.api_key_env} or --api_key_file and give the "
                                          f"address alone ({parts.scheme}://{parts.hostname}"
                                          f"{':' + str(parts.port) if parts.port else ''}{parts.path})")

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
        self.columns = json_mapping(self.columns, "data columns", '{"scenario": "situation"}')
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

"""Judging scenario–action items with a model.

:mod:`~vat_hf.evaluation.task` (records and scoring rules, shared by every backend),
:class:`Evaluator` (the transformers backend: single-token, multi-token and generative scoring;
token-budget batches; shared-prefix key/value reuse; an on-disk judgment cache), an optional vLLM
backend (:mod:`~vat_hf.evaluation.vllm_backend`), :class:`EvalConfig` (every evaluator setting,
the one configuration of an evaluation) and :func:`run_evaluation` (one evaluation stage, the
same for ``vat-hf eval``, ``python -m vat_hf.evaluate`` and each stage of ``vat-hf run``,
writing the results file and per-sample records of :mod:`~vat_hf.evaluation.results`).
"""

from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.evaluation.judge import Evaluator, token_budget_batches
from vat_hf.evaluation.run import run_evaluation
from vat_hf.evaluation.task import (
    MODE_GENERATE,
    MODE_LOGPROB,
    MODE_MULTITOKEN,
    MODES,
    EvaluationSummary,
    OptionTokenError,
    make_record,
    option_token_ids,
    parse_rating,
    summarize,
)

__all__ = ["DataConfig", "EvalConfig", "EvaluationSummary", "Evaluator", "MODES", "MODE_GENERATE", "MODE_LOGPROB",
           "MODE_MULTITOKEN", "OptionTokenError", "make_record", "option_token_ids", "parse_rating", "run_evaluation",
           "summarize", "token_budget_batches"]


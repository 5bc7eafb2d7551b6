"""Judging scenario–action items with a model.

:class:`Evaluator` (single-token, multi-token and generative scoring; token-budget batches;
shared-prefix key/value reuse; an on-disk judgment cache), :mod:`vat_hf.evaluation.run` (a whole
evaluation run, data-parallel under ``accelerate launch -m vat_hf.evaluate``, with per-sample
logs and a results JSON), and an optional vLLM backend (:mod:`vat_hf.evaluation.vllm_backend`).
"""

from vat_hf.evaluation.judge import (
    MODE_GENERATE,
    MODE_LOGPROB,
    MODE_MULTITOKEN,
    MODES,
    EvaluationSummary,
    Evaluator,
    OptionTokenError,
    make_record,
    option_token_ids,
    parse_rating,
    summarize,
    token_budget_batches,
)

__all__ = ["EvaluationSummary", "Evaluator", "MODES", "MODE_GENERATE", "MODE_LOGPROB", "MODE_MULTITOKEN",
           "OptionTokenError", "make_record", "option_token_ids", "parse_rating", "summarize", "token_budget_batches"]

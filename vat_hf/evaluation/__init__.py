"""Judging scenario–action items with a model."""

from vat_hf.evaluation.judge import (
    EvaluationSummary,
    Evaluator,
    OptionTokenError,
    option_token_ids,
    summarize,
    token_budget_batches,
)

__all__ = ["EvaluationSummary", "Evaluator", "OptionTokenError", "option_token_ids", "summarize", "token_budget_batches"]

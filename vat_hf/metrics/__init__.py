"""The Value Alignment Tax metric (math in :mod:`vat_hf.metrics.core`, comparison of
interventions in :mod:`vat_hf.metrics.compare`, an ``evaluate`` module in ``metrics/vat/``)."""

from pathlib import Path as _Path

from vat_hf.metrics.core import (
    GAIN_EPS,
    LEVELS,
    P_VALUE_TEST,
    VATWarning,
    compute_vat,
    expression,
    gini,
    holm,
    spearman_pairwise,
    to_jsonable,
)
from vat_hf.metrics.compare import comparison_markdown, compare_interventions

#: Folder of the ``evaluate`` module: ``evaluate.load(str(VAT_MODULE_PATH))``.
VAT_MODULE_PATH = _Path(__file__).resolve().parent / "vat"

__all__ = [
    "GAIN_EPS",
    "LEVELS",
    "P_VALUE_TEST",
    "VAT_MODULE_PATH",
    "VATWarning",
    "compare_interventions",
    "comparison_markdown",
    "compute_vat",
    "expression",
    "gini",
    "holm",
    "spearman_pairwise",
    "to_jsonable",
]

"""The Value Alignment Tax metric: the math in :mod:`vat_hf.metrics.core` (generic numerics in
:mod:`vat_hf.metrics.numerics`), the paired comparison of interventions in
:mod:`vat_hf.metrics.compare`, judgment records in :mod:`vat_hf.metrics.paired`, the text of
every number in :mod:`vat_hf.metrics.formatting`, and an ``evaluate`` module in ``metrics/vat/``."""

from pathlib import Path as _Path

from vat_hf.metrics.core import (
    CENTERINGS,
    GAIN_EPS,
    GAIN_STATUSES,
    LEVELS,
    P_VALUE_TEST,
    RESAMPLE_UNITS,
    VATInputError,
    VATWarning,
    compute_vat,
    expression,
    gini,
    holm,
    spearman_pairwise,
    to_jsonable,
)
from vat_hf.metrics.compare import compare_interventions, compare_paired, comparison_markdown, paired_markdown
from vat_hf.metrics.paired import compare_judgments, score_judgments

#: Folder of the ``evaluate`` module: ``evaluate.load(str(VAT_MODULE_PATH))``.
VAT_MODULE_PATH = _Path(__file__).resolve().parent / "vat"

__all__ = [
    "CENTERINGS",
    "GAIN_EPS",
    "GAIN_STATUSES",
    "LEVELS",
    "P_VALUE_TEST",
    "RESAMPLE_UNITS",
    "VAT_MODULE_PATH",
    "VATInputError",
    "VATWarning",
    "compare_interventions",
    "compare_judgments",
    "compare_paired",
    "comparison_markdown",
    "compute_vat",
    "expression",
    "gini",
    "holm",
    "paired_markdown",
    "score_judgments",
    "spearman_pairwise",
    "to_jsonable",
]

"""Evaluation: metrics, seeded evaluation with confidence intervals, paired tests, cost."""

from tidian.evaluation.cost import Cost, measure_cost
from tidian.evaluation.evaluate import Evaluation, SeedRun, compare, evaluate
from tidian.evaluation.stats import (
    PairedComparison,
    Summary,
    confidence_interval,
    paired_compare,
    summarize,
)
from tidian.metrics import (
    METRICS,
    classification_report,
    confusion_matrix,
    predict,
    score,
)

__all__ = [
    "METRICS",
    "Cost",
    "Evaluation",
    "PairedComparison",
    "SeedRun",
    "Summary",
    "classification_report",
    "compare",
    "confidence_interval",
    "confusion_matrix",
    "evaluate",
    "measure_cost",
    "paired_compare",
    "predict",
    "score",
    "summarize",
]

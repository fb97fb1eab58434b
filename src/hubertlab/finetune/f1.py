"""F1 where a class can be absent: with no true positive, false positive or false negative
its F1 is 0 / 0, which is no evidence (pyannote-style scorers call it undefined), never a
perfect 1.0. Shared by `score vtc` (evaluate.classification), VTC validation (tasks.vtc) and
threshold tuning (finetune.postprocess)."""

from __future__ import annotations

from collections.abc import Iterable


def f1_from_counts(tp: float, fp: float, fn: float) -> float | None:
    """2 tp / (2 tp + fp + fn); None (undefined) for a class with none of them."""
    if tp + fp + fn <= 0:
        return None
    return 2 * tp / (2 * tp + fp + fn)


def macro_mean(f1s: Iterable[float | None]) -> float | None:
    """Mean of the defined F1s (absent classes left out); None when every class is absent."""
    defined = [f for f in f1s if f is not None]
    return sum(defined) / len(defined) if defined else None

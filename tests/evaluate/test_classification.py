"""Detection F1 per class over files (pyannote.metrics, collar 0) and the macro mean."""

from __future__ import annotations

import pytest

pytest.importorskip("pyannote.metrics")

from hubertlab.data.rttm import Turn  # noqa: E402
from hubertlab.evaluate.classification import (  # noqa: E402
    detection_scores,
    format_detection_table,
    macro_f1,
)

CLASSES = ("KCHI", "FEM")


def test_f1_by_hand_over_two_files():
    ref = {
        "a": [Turn("a", 0, 10, "KCHI"), Turn("a", 2, 4, "FEM")],
        "b": [Turn("b", 0, 4, "FEM")],
    }
    hyp = {"a": [Turn("a", 5, 10, "KCHI"), Turn("a", 2, 4, "FEM"), Turn("a", 6, 2, "FEM")]}
    scores = detection_scores(ref, hyp, CLASSES)
    kchi, fem = scores
    # KCHI: tp 5, fp 5, fn 5
    assert (kchi.precision, kchi.recall, kchi.f1) == pytest.approx((0.5, 0.5, 0.5))
    # FEM: tp 4, fp 2 (a: [6, 8) is outside the reference), fn 4 (file b missed entirely)
    assert fem.precision == pytest.approx(4 / 6) and fem.recall == pytest.approx(0.5)
    assert fem.f1 == pytest.approx(2 * 4 / (6 + 8))
    assert fem.reference_s == pytest.approx(8) and fem.hypothesis_s == pytest.approx(6)
    assert macro_f1(scores) == pytest.approx((0.5 + 8 / 14) / 2)
    assert "| **macro** | **53.6** |" in format_detection_table(scores)


def test_uem_limits_the_scored_region():
    ref = {"a": [Turn("a", 0, 10, "KCHI")]}
    hyp = {"a": [Turn("a", 0, 20, "KCHI")]}
    assert detection_scores(ref, hyp, ["KCHI"])[0].precision == pytest.approx(0.5)
    scored = detection_scores(ref, hyp, ["KCHI"], uem={"a": [(0, 10)]})[0]
    assert scored.precision == pytest.approx(1.0) and scored.f1 == pytest.approx(1.0)


def test_unknown_or_unscored_files_are_errors():
    with pytest.raises(ValueError, match="reference files have no UEM regions, e.g. 'b'"):
        detection_scores({"a": [], "b": []}, {}, CLASSES, uem={"a": [(0, 1)]})
    with pytest.raises(ValueError, match="hypothesis files are not in the reference, e.g. 'x'"):
        detection_scores({"a": []}, {"x": [Turn("x", 0, 1, "FEM")]}, CLASSES)


def test_an_absent_class_is_undefined_and_left_out_of_the_macro_mean():
    """A class with no reference and no hypothesis speech used to count as F1 100 % (a macro
    of 75 % where the one present class scores 50 %)."""
    ref = {"a": [Turn("a", 0, 10, "KCHI")]}
    hyp = {"a": [Turn("a", 5, 10, "KCHI")]}
    kchi, fem = detection_scores(ref, hyp, CLASSES)
    assert kchi.f1 == pytest.approx(0.5) and fem.f1 is None and not fem.defined
    assert macro_f1([kchi, fem]) == pytest.approx(0.5)
    table = format_detection_table([kchi, fem])
    assert "| FEM | undefined |" in table and "| **macro** (1 of 2) | **50.0** |" in table
    assert "left out of the macro mean" in table
    # A class with hypothesis speech only is a defined 0, not absent.
    (_, fem_only_hyp) = detection_scores(ref, {"a": [Turn("a", 0, 1, "FEM")]}, CLASSES)
    assert fem_only_hyp.f1 == 0


def test_every_class_absent_has_no_score():
    ref = {"a": [Turn("a", 0, 10, "KCHI")]}
    scores = detection_scores(ref, {}, CLASSES, uem={"a": [(100, 200)]})  # past the audio
    assert not any(s.defined for s in scores)
    with pytest.raises(ValueError, match="nothing to score"):
        macro_f1(scores)

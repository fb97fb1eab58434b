"""WER / CER with jiwer, and WER by utterance length."""

from __future__ import annotations

import pytest

pytest.importorskip("jiwer")

from hubertlab.data.text import normalize_text  # noqa: E402
from hubertlab.evaluate.asr import error_rates, format_error_table  # noqa: E402


def test_wer_cer_and_buckets():
    ref = {
        "a": "the cat sat",
        "b": "one two three four five six seven",
        "c": "Hello, World!",
        "d": "",
    }
    hyp = {"a": "the cat sat", "b": "one two tree four five six", "c": "hello world"}
    rates = error_rates(ref, hyp, normalize=normalize_text, buckets=(5,))
    overall, short, long = rates
    # a: 0 errors / 3; b: 1 sub + 1 del / 7; c: 0 / 2 after normalization; d left out
    assert overall.wer == pytest.approx(2 / 12) and overall.utterances == 3
    assert (overall.substitutions, overall.deletions, overall.insertions) == (1, 1, 0)
    assert short.name == "1-5 words" and short.wer == 0 and short.utterances == 2
    assert long.name == "6+ words" and long.wer == pytest.approx(2 / 7)
    # b: "three" -> "tree" (1 char deleted), " seven" deleted (6 chars), over 33 characters
    assert long.cer == pytest.approx(7 / 33)
    raw = error_rates(ref, hyp)  # without normalization punctuation and case count
    assert raw[0].wer > overall.wer
    assert "| all | 3 | 12 | 16.7 |" in format_error_table(rates)


def test_missing_and_unknown_hypotheses():
    ref = {"a": "one two", "b": "three"}
    assert error_rates(ref, {"a": "one two"})[0].wer == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="not in the reference, e.g. 'z'"):
        error_rates(ref, {"z": "x"})

"""Unit quality: purities and PNMI by their definitions, and MFCC units beat random ones."""

from __future__ import annotations

import numpy as np
import pytest

from hubertlab.data.alignments import read_phone_segments
from hubertlab.evaluate.units import codebook_usage, purity_and_pnmi, unit_quality
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.features.store import extract_features_to_store
from hubertlab.units.assign import read_units, transcribe
from hubertlab.units.kmeans import fit_kmeans
from tests.units_fixtures import demo_corpus


def test_perfect_and_independent_units():
    rng = np.random.default_rng(0)
    phones = rng.integers(10, size=20_000)
    perfect = purity_and_pnmi(phones, phones * 3 + 1)  # a relabelling: all information kept
    assert perfect["pnmi"] == pytest.approx(1.0)
    assert perfect["phone_purity"] == pytest.approx(1.0)
    assert perfect["cluster_purity"] == pytest.approx(1.0)
    noise = purity_and_pnmi(phones, rng.integers(50, size=20_000))
    assert noise["pnmi"] < 0.02


def test_small_example_by_hand():
    # phone 0: units 0,0,1 ; phone 1: units 1,1,1,1,2
    phones = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    units = np.array([0, 0, 1, 1, 1, 1, 1, 2])
    scores = purity_and_pnmi(phones, units)
    # phone purity: unit 0 -> 2/2, unit 1 -> 4/5, unit 2 -> 1/1: (2 + 4 + 1) / 8
    assert scores["phone_purity"] == pytest.approx(7 / 8)
    # cluster purity: phone 0 -> unit 0 (2 of 3), phone 1 -> unit 1 (4 of 5): (2 + 4) / 8
    assert scores["cluster_purity"] == pytest.approx(6 / 8)
    p = np.array([[2, 1, 0], [0, 4, 1]]) / 8
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(py, pz)[nz])).sum()
    assert scores["pnmi"] == pytest.approx(mi / -(py * np.log(py)).sum())


def test_codebook_usage():
    usage = codebook_usage(np.array([0, 0, 1, 1]), num_units=4)
    assert usage["unit_perplexity"] == pytest.approx(2.0)
    assert (usage["used_units"], usage["unused_units"]) == (2, 2)
    with pytest.raises(ValueError, match="num_units is 2"):
        codebook_usage(np.array([0, 5]), num_units=2)


def test_frames_follow_the_50hz_centres():
    # frame k is centred at 0.02 k + 0.0125 s: frames 0-1 in "a", 2.. in "b"
    segments = {"f": [(0.0, 0.05, "a"), (0.05, 0.2, "b")]}
    scores = unit_quality({"f": np.array([0, 0, 1, 1, 1])}, segments)
    assert scores["pnmi"] == pytest.approx(1.0)
    assert scores["num_frames"] == 5 and scores["num_phones"] == 2
    excluded = unit_quality({"f": np.array([0, 0, 1, 1, 1])}, segments, exclude=("a",))
    assert excluded["num_frames"] == 3


def test_missing_phones_named():
    with pytest.raises(ValueError, match="no phone segments for fileid 'x/y'"):
        unit_quality({"x/y": np.array([1, 2])}, {"a": [(0.0, 1.0, "a")]})
    scores = unit_quality(
        {"x/y": np.array([1]), "a": np.array([0, 1])}, {"a": [(0.0, 1.0, "a")]}, strict=False
    )
    assert scores["files_without_phones"] == 1


def test_mfcc_units_beat_random_units_on_speech(tmp_path_factory):
    corpus = demo_corpus(tmp_path_factory)
    work = tmp_path_factory.mktemp("quality")
    extract_features_to_store(corpus / "manifest.csv", work / "store", MfccExtractor())
    kmeans = fit_kmeans(work / "store", 100, fraction=1.0, seed=0)
    transcribe(corpus / "manifest.csv", kmeans, work / "store", work / "units")
    units = read_units(work / "units")
    segments = read_phone_segments(corpus / "phones.jsonl")
    mfcc = unit_quality(units, segments, num_units=100)
    rng = np.random.default_rng(0)
    random = {f: rng.integers(100, size=len(u)) for f, u in units.items()}
    chance = unit_quality(random, segments, num_units=100)
    assert mfcc["pnmi"] > chance["pnmi"] + 0.15
    assert mfcc["phone_purity"] > chance["phone_purity"] + 0.1
    assert mfcc["used_units"] > 90

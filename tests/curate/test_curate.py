"""UPS-style curation: density, language scarcity, chunks, exact budget, determinism."""

import json

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.curate.select import CurationConfig, curate, scarcity_weight
from hubertlab.curate.speech import FileSpeech
from hubertlab.data.manifest import ManifestRow, read_manifest
from tests.longform_fixtures import longform  # noqa: F401

SR = 16000


def test_scarcity_weights_at_the_boundaries():
    assert [scarcity_weight(h) for h in (5000, 1000, 100, 99.9, 10, 9.99, 0)] == [
        1, 2, 2, 3, 3, 4, 4,
    ]  # fmt: skip


def _file(fileid, archive, seconds, segments, languages=None):
    offset = 0 if archive else None
    row = ManifestRow(fileid, f"{fileid}.wav", seconds * SR, archive, offset, offset)
    speech = FileSpeech(fileid, float(seconds), tuple(segments), archive)
    lid = FileSpeech(fileid, float(seconds), tuple(segments), archive,
                     languages=tuple(languages or ()))  # fmt: skip
    return speech, row, lid


def _corpus():
    # Archive "common": dense English; "rare": less dense Welsh; "sparse": density 0.3.
    files = [
        _file("c/a", "common", 60, [(0, 60)], ["en"]),
        _file("c/b", "common", 40, [(0, 40)], ["en"]),
        _file("r/a", "rare", 60, [(0, 18), (20, 29.5), (30, 39), (40, 60)], ["cy"] * 4),
        _file("s/a", "sparse", 100, [(0, 30)], ["en"]),
    ]
    pairs = [(s, r) for s, r, _ in files]
    lid = {s.fileid: lid for s, _, lid in files}
    return pairs, lid


def test_rare_language_first_and_budget_met_with_whole_chunks():
    pairs, lid = _corpus()
    table = {"en": 5000.0, "cy": 3.0}
    cfg = CurationConfig(hours=75 / 3600)  # 7.5 chunks: 8 whole ones
    rows, summary = curate(pairs, cfg, lid=lid, hours_table=table)
    # rare: density 56.5/60 * weight 4 > common: 1.0 * weight 1. rare's chunk 20-30 has
    # 9.5 s of speech, 30-40 9 s: all 6 chunks qualify; then common's.
    assert [r.fileid for r in rows[:6]] == [
        f"r/a_{k * 160000}_{(k + 1) * 160000}" for k in range(6)
    ]
    assert rows[6].fileid == "c/a_0_160000"
    assert rows[7].num_samples == 10 * SR and rows[7].start == 10 * SR  # whole, not cut
    assert sum(r.num_samples for r in rows) == 80 * SR
    assert summary["budget_met"] and summary["counts"]["groups_below_density"] == 1
    assert summary["hours_after"] == pytest.approx({"cy": 60 / 3600, "en": 20 / 3600})
    assert all(r.archive in ("rare", "common") for r in rows)


def test_whole_chunks_at_the_budget():
    pairs, lid = _corpus()
    # 7 chunks and 300 samples: the 8th chunk is taken whole, never a 300-sample sliver.
    rows, summary = curate(pairs, CurationConfig(hours=(70 * SR + 300) / SR / 3600), lid=lid)
    assert [r.num_samples for r in rows] == [10 * SR] * 8
    assert summary["budget_met"] and summary["picked_hours"] == pytest.approx(80 / 3600)
    rows, summary = curate(pairs, CurationConfig(hours=70 / 3600), lid=lid)
    assert len(rows) == 7 and summary["budget_met"]


@pytest.mark.parametrize("chunk_s", [0.01, 0.00001, 0.99, float("nan"), float("inf"), -10])
def test_chunks_shorter_than_a_second_are_refused(chunk_s):
    with pytest.raises(ValueError, match="chunk_s must be at least 1.0 s"):
        CurationConfig(hours=1.0, chunk_s=chunk_s, min_speech_s=0.001)


@pytest.mark.parametrize("hours", [0.0, -1.0, float("nan"), float("inf")])
def test_a_budget_that_is_not_a_positive_number_is_refused(hours):
    with pytest.raises(ValueError, match="hours must be > 0"):
        CurationConfig(hours=hours)


def test_deterministic_whatever_the_input_order():
    pairs, lid = _corpus()
    cfg = CurationConfig(hours=1.0)
    a, summary = curate(pairs, cfg, lid=lid)
    b, _ = curate(pairs[::-1], cfg, lid=dict(reversed(list(lid.items()))))
    assert a == b
    assert not summary["budget_met"]  # the corpus has less than an hour
    # Without a table, hours come from the language-ID: cy (56.5 s) is scarcer than en.
    assert summary["speech_hours_before"] == pytest.approx({"cy": 56.5 / 3600, "en": 130 / 3600})


def test_chunks_need_enough_speech_and_a_known_language():
    speech, row, _ = _file("x", None, 40, [(0, 7.9), (10, 20), (20, 30), (30, 40)])
    lid = FileSpeech("x", 40.0, ((0, 10), (10, 20), (30, 40)), languages=("en", "unknown", "fr"))
    rows, summary = curate([(speech, row)], CurationConfig(hours=1.0, group="file"), lid={"x": lid})
    counts = summary["counts"]
    assert counts["chunks_below_min_speech"] == 1  # 0-10: 7.9 s
    assert counts["chunks_dropped_unknown"] == 1  # 10-20
    assert counts["chunks_dropped_nospeech"] == 1  # 20-30: no language-ID speech
    assert [r.fileid for r in rows] == ["x_480000_640000"]
    assert summary["hours_after"] == {"fr": pytest.approx(10 / 3600)}


def test_curate_and_segments_cli_on_the_long_form_demo(longform, tmp_path, capsys):  # noqa: F811
    # The demo's truth doubles as VAD and language-ID results.
    truth = str(longform / "speech.jsonl")
    out = tmp_path / "picked"
    args = ["curate", truth, str(longform / "manifest.csv"), str(out), "--hours", "0.008",
            "--lid", truth, "--group", "file", "--min-speech-seconds", "6"]  # fmt: skip
    assert main(args) == 0
    assert "(met)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget_met"] and (out / "density.png").stat().st_size > 1000
    manifest = read_manifest(out / "manifest.csv")
    assert manifest.total_samples == 3 * 10 * SR  # 28.8 s of budget: 3 whole 10 s chunks
    wav = manifest.read_audio(len(manifest) - 1)
    assert wav.shape == (manifest[-1].num_samples,) and np.abs(wav).max() > 0.01

    spans = tmp_path / "spans" / "segments.jsonl"
    assert main(["segments", truth, str(longform / "manifest.csv"), str(spans)]) == 0
    rows = read_manifest(spans)
    lengths = [r.num_samples / SR for r in rows]
    assert len(rows) > 2 and min(lengths) >= 2.0 - 1e-3 and max(lengths) <= 30.0
    assert rows.read_audio(0).shape == (rows[0].num_samples,)

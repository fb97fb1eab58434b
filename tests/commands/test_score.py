"""`hubertlab score vtc|asr`: tables, JSON and PNG; the VTC chain reference -> frame targets ->
decoded turns -> RTTM scores near 100 %."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyannote.metrics")
pytest.importorskip("jiwer")

from hubertlab import cli  # noqa: E402
from hubertlab.constants import num_frames  # noqa: E402
from hubertlab.data.frame_targets import frame_targets  # noqa: E402
from hubertlab.data.rttm import VTC_CLASSES, Turn, read_rttm_files, write_rttm  # noqa: E402
from hubertlab.data.text import write_transcripts  # noqa: E402
from hubertlab.finetune.postprocess import frames_to_turns  # noqa: E402


def _reference(tmp_path: Path) -> dict[str, list[Turn]]:
    rng = np.random.default_rng(0)
    turns = {}
    for f in ("rec1", "rec2"):
        t, turns[f] = 0.5, []
        for _ in range(30):
            duration = float(rng.uniform(0.3, 2.5))
            label = VTC_CLASSES[int(rng.integers(4))]
            turns[f].append(Turn(f, round(t, 3), round(duration, 3), label))
            t += float(rng.uniform(-0.5, 2.0)) + duration * (rng.random() < 0.7)
    write_rttm([t for ts in turns.values() for t in ts], tmp_path / "ref" / "all.rttm")
    return turns


def test_score_vtc(tmp_path: Path, capsys):
    reference = _reference(tmp_path)
    decoded = []
    for fileid, turns in reference.items():
        end = max(t.offset_s for t in turns) + 1
        active = frame_targets(turns, num_frames(int(end * 16000)), VTC_CLASSES) > 0
        decoded += frames_to_turns(active, VTC_CLASSES, fileid, min_gap_s=0, min_duration_s=0)
    write_rttm(decoded, tmp_path / "hyp.rttm")
    argv = ["score", "vtc", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp.rttm")]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "vtc_scores.json").read_text())
    assert [c["label"] for c in report["classes"]] == list(VTC_CLASSES)
    assert 0.98 < report["macro_f1"] < 1.0  # decoded turns are within 10 ms of the reference
    assert (tmp_path / "out" / "vtc_f1.png").stat().st_size > 1000
    assert "| **macro** |" in capsys.readouterr().out
    # a hypothesis that misses every FEM turn: FEM F1 0, macro drops by a quarter
    without_fem = [t for t in decoded if t.label != "FEM"]
    write_rttm(without_fem, tmp_path / "nofem.rttm")
    argv[-1] = str(tmp_path / "nofem.rttm")
    assert cli.main([*argv, "--out", str(tmp_path / "out2")]) == 0
    report2 = json.loads((tmp_path / "out2" / "vtc_scores.json").read_text())
    assert report2["classes"][3]["f1"] == 0
    assert report2["macro_f1"] == pytest.approx(report["macro_f1"] - report["classes"][3]["f1"] / 4)
    # a label outside the classes is an error naming file and line
    (tmp_path / "bad.rttm").write_text("SPEAKER rec1 1 0.0 1.0 <NA> <NA> SPEECH <NA> <NA>\n")
    argv[-1] = str(tmp_path / "bad.rttm")
    assert cli.main([*argv, "--out", str(tmp_path / "out3")]) == 1
    assert "bad.rttm:1: unknown class 'SPEECH'" in capsys.readouterr().err
    assert read_rttm_files(tmp_path / "ref") == {k: sorted(v) for k, v in reference.items()}


def test_score_asr(tmp_path: Path, capsys):
    reference = {f"u{i}": " ".join(["word"] * (i + 1)) for i in range(25)}
    hypothesis = {
        k: v.rsplit(" ", 1)[0] if len(v.split()) > 10 else v for k, v in reference.items()
    }
    write_transcripts(reference, tmp_path / "ref.tsv")
    write_transcripts(hypothesis, tmp_path / "hyp.tsv")
    argv = ["score", "asr", "--ref", str(tmp_path / "ref.tsv"), "--hyp", str(tmp_path / "hyp.tsv")]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    rates = json.loads((tmp_path / "out" / "asr_scores.json").read_text())["rates"]
    by_name = {r["name"]: r for r in rates}
    assert by_name["1-5 words"]["wer"] == 0 and by_name["1-5 words"]["utterances"] == 5
    assert by_name["21+ words"]["deletions"] == 5
    assert by_name["all"]["wer"] == pytest.approx(15 / sum(range(1, 26)))
    assert (tmp_path / "out" / "asr_wer_by_length.png").stat().st_size > 1000
    assert "WER 4.6%" in capsys.readouterr().out
    assert cli.main([*argv, "--out", str(tmp_path / "o"), "--buckets", "10,5"]) == 1
    assert "--buckets must be increasing" in capsys.readouterr().err


def test_score_vtc_refuses_a_uem_outside_the_audio(tmp_path: Path, capsys, caplog):
    """A UEM past the audio and an empty hypothesis used to score macro F1 100 %."""
    _reference(tmp_path)
    (tmp_path / "empty.rttm").write_text("")
    (tmp_path / "far.uem").write_text("rec1 1 5000.0 6000.0\nrec2 1 5000.0 6000.0\n")
    argv = ["score", "vtc", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "empty.rttm"),
            "--uem", str(tmp_path / "far.uem"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"UEM regions of {tmp_path / 'far.uem'}" in err and "nothing to score" in err
    assert "rec1: no reference or hypothesis speech in its 1 UEM regions" in caplog.text
    assert not (tmp_path / "out").exists()

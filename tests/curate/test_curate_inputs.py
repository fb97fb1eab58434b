"""What curate, segments and the speech readers refuse or warn about: non-finite or
out-of-range floats in flags and files, segments past the audio, UPS timestamps in the wrong
unit; and the UPS recipe run from its own VAD and language-ID files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.curate.speech import read_speech
from hubertlab.curate.ups import read_hours_table
from hubertlab.data.audio import write_audio

SR = 16000


def _write_jsonl(path, objects):
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four 30 s noise recordings in two language folders, and their manifest."""
    root = tmp_path_factory.mktemp("ups")
    rng = np.random.default_rng(0)
    for name in ("es/a", "es/b", "cy/a", "cy/b"):
        write_audio(root / "audio" / f"{name}.wav", 0.1 * rng.standard_normal(30 * SR))
    assert main(["manifest", str(root / "audio"), str(root / "manifest.csv")]) == 0
    return root


def _ups_vad(corpus, name="vad.jsonl", *, scale=SR, end=None):
    """UPS VAD results: speech 0-28 s in every file; es/* in tar 1, cy/* in tar 2."""
    objects = []
    for path, tar in (("es/a.wav", 1), ("es/b.wav", 1), ("cy/a.wav", 2), ("cy/b.wav", 2)):
        stamps = [{"start": 0, "end": (28 if end is None else end) * scale}]
        objects.append({path: {"tar_number": tar, "duration": 30.0, "timestamps": stamps}})
    return _write_jsonl(corpus / name, objects)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_speech_files_are_refused(tmp_path, bad):
    ours = tmp_path / "ours.jsonl"
    ours.write_text(f'{{"fileid": "a", "duration": 10, "segments": [[1, {bad}]]}}\n')
    with pytest.raises(ValueError, match=r"ours.jsonl:1: 'end' must be a finite number"):
        read_speech(ours)
    ups = tmp_path / "ups.jsonl"
    ups.write_text(
        '{"a.wav": {"duration": 10, "timestamps": []}}\n'
        f'{{"b.wav": {{"duration": {bad}, "timestamps": []}}}}\n'
    )
    with pytest.raises(ValueError, match=r"ups.jsonl:2: 'duration' must be a finite number"):
        read_speech(ups)


@pytest.mark.parametrize("bad", ["nan", "-5", "inf"])
def test_hours_table_values_must_be_finite_and_not_negative(tmp_path, bad):
    table = tmp_path / "hours.csv"
    table.write_text(f"language,hours\nen,5000\ncy,{bad}\n")
    with pytest.raises(ValueError, match=r"hours.csv:3: hours must be a finite number in \[0"):
        read_hours_table(table)


@pytest.mark.parametrize(
    "flag, value",
    [("--chunk-seconds", "0.01"), ("--chunk-seconds", "0.00001"), ("--chunk-seconds", "nan"),
     ("--hours", "nan"), ("--hours", "-1"), ("--min-density", "nan"),
     ("--min-speech-seconds", "nan"), ("--min-speech-seconds", "11")],
)  # fmt: skip
def test_curate_flags_are_checked_before_any_work(corpus, tmp_path, capsys, flag, value):
    args = ["curate", str(_ups_vad(corpus)), str(corpus / "manifest.csv"), str(tmp_path / "o"),
            "--hours", "0.01", flag, value]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"error: {flag} must be a finite number" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--merge-gap-seconds", "--min-seconds", "--max-seconds"])
def test_segments_flags_must_be_finite(corpus, tmp_path, capsys, flag):
    args = ["segments", str(_ups_vad(corpus)), str(corpus / "manifest.csv"),
            str(tmp_path / "spans.csv"), flag, "nan"]  # fmt: skip
    assert main(args) == 1
    assert f"error: {flag} must be a finite number" in capsys.readouterr().err


def test_summary_json_never_holds_nan(corpus, tmp_path, monkeypatch, capsys):
    from hubertlab.curate import select

    real = select.curate

    def with_nan(*args, **kwargs):
        rows, summary = real(*args, **kwargs)
        return rows, {**summary, "densities": {"1": float("nan")}}

    monkeypatch.setattr(select, "curate", with_nan)
    args = ["curate", str(_ups_vad(corpus)), str(corpus / "manifest.csv"), str(tmp_path / "o"),
            "--hours", "0.01"]  # fmt: skip
    assert main(args) == 1
    assert "Out of range float values are not JSON compliant" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_segments_past_the_duration_are_named(tmp_path, caplog):
    ours = _write_jsonl(tmp_path / "ours.jsonl", [
        {"fileid": "a", "duration": 10, "segments": [[1, 2], [8, 10.5], [11, 12]]},
    ])  # fmt: skip
    read_speech(ours)
    assert "ours.jsonl:1: segment 1 (8.000-10.500 s) and 1 more end past the duration" in (
        caplog.text
    )


def test_timestamps_in_the_wrong_unit_are_named(corpus, tmp_path, caplog):
    # UPS timestamps are samples: 0-28 "samples" in a 30 s file are seconds written as is.
    read_speech(_ups_vad(tmp_path, scale=1))
    assert "vad.jsonl:1: every timestamp is <= 30, the duration in seconds" in caplog.text
    caplog.clear()
    read_speech(_ups_vad(tmp_path))
    assert "look like" not in caplog.text
    ours = _write_jsonl(tmp_path / "ours.jsonl", [
        {"fileid": "a", "duration": 30, "segments": [[0, 28 * SR]]},
    ])  # fmt: skip
    read_speech(ours)
    assert "ours.jsonl:1: segments end at up to 448000 in a 30 s file: they look like samples" in (
        caplog.text
    )


def test_vad_past_the_audio_is_named_and_clipped(corpus, caplog):
    from hubertlab.curate.select import join_rows
    from hubertlab.data.manifest import read_manifest

    vad = _write_jsonl(corpus / "long.jsonl", [
        {"es/a.wav": {"duration": 40.0, "timestamps": [
            {"start": 0, "end": 10 * SR}, {"start": 20 * SR, "end": 35 * SR},
            {"start": 36 * SR, "end": 39 * SR}]}},
    ])  # fmt: skip
    ((speech, row),) = join_rows(read_speech(vad), read_manifest(corpus / "manifest.csv"), "v")
    assert "v: es/a.wav: duration 40.000 s, but its audio has 30.000 s" in caplog.text
    assert "v: es/a.wav: segment 1 (20.000-35.000 s) and 1 more end past its 30.000 s" in (
        caplog.text
    )
    assert speech.segments == ((0.0, 10.0), (20.0, 30.0)) and row.fileid == "es/a"


def _recipe(corpus, tmp_path, lid, out):
    table = tmp_path / "hours.csv"
    table.write_text("language,hours\nes,5000\ncy,3\n")
    args = ["curate", str(_ups_vad(corpus)), str(corpus / "manifest.csv"), str(tmp_path / out),
            "--hours", "0.01", "--lid", str(lid), "--hours-table", str(table)]  # fmt: skip
    assert main(args) == 0
    return tmp_path / out


@pytest.mark.parametrize("form", ["per-file", "rows"])
def test_the_ups_recipe_runs_from_its_own_files_deterministically(corpus, tmp_path, form):
    # cy/b is missing from the results: "unknown", dropped. Rows name files by tar and
    # file name as UPS's index does: "a.wav" of tar 2 is cy/a, not es/a (tar 1).
    if form == "per-file":
        results = [{"es/a.wav": {"language": "es", "tar_number": 1}},
                   {"es/b.wav": {"language": "es", "tar_number": 1}},
                   {"cy/a.wav": {"language": "cy", "tar_number": 2}}]  # fmt: skip
    else:
        results = [{"tar_number": 1, "filepath": "/x/a.wav", "prediction": "es"},
                   {"tar_number": 1, "filepath": "/x/b.wav", "prediction": "es"},
                   {"tar_number": 2, "filepath": "/y/a.wav", "prediction": "cy"}]  # fmt: skip
    lid = _write_jsonl(tmp_path / "lid.jsonl", results)
    first, second = (_recipe(corpus, tmp_path, lid, out) for out in ("o1", "o2"))
    for name in ("manifest.csv", "summary.json", "density.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    summary = json.loads((first / "summary.json").read_text())
    # tar 2 (Welsh, weight 4) first: cy/a's three chunks (20-30 s holds 8 s of speech), then
    # one of tar 1's Spanish chunks reaches the 36 s budget.
    assert summary["hours_after"] == pytest.approx({"cy": 30 / 3600, "es": 10 / 3600})
    assert summary["counts"]["chunks_dropped_unknown"] == 3
    assert summary["speech_hours_before"] == pytest.approx({"cy": 28 / 3600, "es": 56 / 3600})
    lines = (first / "manifest.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == [
        "cy/a_0_160000", "cy/a_160000_320000", "cy/a_320000_480000", "es/a_0_160000",
    ]  # fmt: skip


def test_language_id_results_in_no_known_form_are_named(corpus, tmp_path, capsys):
    lid = _write_jsonl(tmp_path / "lid.jsonl", [
        {"tar_number": 1, "filepath": "a.wav", "prediction": ["es", 0.9]},
    ])  # fmt: skip
    args = ["curate", str(_ups_vad(corpus)), str(corpus / "manifest.csv"), str(tmp_path / "o"),
            "--hours", "0.01", "--lid", str(lid)]  # fmt: skip
    assert main(args) == 1
    assert "lid.jsonl:1: 'prediction' must be a language code" in capsys.readouterr().err

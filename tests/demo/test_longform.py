"""The long-form demo: recordings, manifest and true speech islands that match the audio."""

import numpy as np
import pytest

from hubertlab.cli import main
from hubertlab.curate.speech import read_speech
from hubertlab.data.manifest import read_manifest


def test_long_form_demo_corpus_and_its_truth(tmp_path, capsys):
    out = tmp_path / "lf"
    args = ["demo-corpus", str(out), "--long-form", "--hours", str(1 / 60),
            "--recording-minutes", "0.5", "--speakers", "3", "--seed", "3"]  # fmt: skip
    assert main(args) == 0
    assert "2 recordings" in capsys.readouterr().out
    manifest = read_manifest(out / "manifest.csv")
    truth = {s.fileid: s for s in read_speech(out / "speech.jsonl")}
    rttm = (out / "speech.rttm").read_text().splitlines()
    assert len(rttm) == sum(len(s.segments) for s in truth.values())
    for i, row in enumerate(manifest):
        speech = truth[row.fileid]
        assert speech.duration_s == row.num_samples / 16000 == 30.0
        assert len(speech.languages) == len(speech.segments) > 0
        assert set(speech.languages) <= {"en", "fr", "es"}
        wav = manifest.read_audio(i)
        inside = np.zeros(len(wav), bool)
        for s, e in speech.segments:
            assert 0 <= s < e <= speech.duration_s
            inside[int(s * 16000) : int(e * 16000)] = True
        # Speech islands are far louder than the background between them.
        ratio_db = 10 * np.log10(np.mean(wav[inside] ** 2) / np.mean(wav[~inside] ** 2))
        assert ratio_db > 20
    # Same settings: kept; other settings: refused.
    assert main(args) == 0
    with pytest.raises(ValueError, match="other settings"):
        from hubertlab.demo.longform import LongFormConfig, build_longform_corpus

        build_longform_corpus(out, LongFormConfig(hours=1 / 60, recording_minutes=0.5))


def test_bad_long_form_settings_are_named():
    from hubertlab.demo.longform import LongFormConfig

    with pytest.raises(ValueError, match="recording_minutes"):
        LongFormConfig(recording_minutes=0)
    with pytest.raises(ValueError, match="speakers"):
        LongFormConfig(speakers=0)

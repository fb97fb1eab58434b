"""The demo VTC corpus: RTTM equal to the synthesised turns, overlaps, silence outside turns,
speakers disjoint across splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from hubertlab.data.manifest import read_manifest  # noqa: E402
from hubertlab.data.rttm import VTC_CLASSES, read_rttm_files, read_uem  # noqa: E402
from hubertlab.demo.vtc import (  # noqa: E402
    VTC_SPLITS,
    VtcCorpusConfig,
    build_vtc_corpus,
    make_vtc_speakers,
    render_recording,
)

CFG = VtcCorpusConfig(minutes=2.0, recording_minutes=0.5, seed=5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vtc") / "corpus"
    build_vtc_corpus(out, CFG, workers=2)
    return out


def _overlap_s(turns) -> float:
    total = 0.0
    for i, a in enumerate(turns):
        for b in turns[i + 1 :]:
            if a.label != b.label:
                total += max(0.0, min(a.offset_s, b.offset_s) - max(a.onset_s, b.onset_s))
    return total


def test_rttm_matches_synthesised_turns(corpus: Path):
    summary = json.loads((corpus / "vtc.json").read_text())
    speakers = make_vtc_speakers(CFG)
    overlap_s, labels = 0.0, set()
    for split in VTC_SPLITS:
        manifest = read_manifest(corpus / split / "manifest.csv")
        rttm = read_rttm_files(corpus / split / "reference.rttm", classes=VTC_CLASSES)
        uem = read_uem(corpus / split / "all.uem")
        assert len(manifest) == summary["splits"][split]["recordings"] >= 1
        for i, row in enumerate(manifest):
            again = render_recording(CFG, speakers[split], split, i, row.num_samples / 16000)
            wav, rate = sf.read(corpus / split / row.path, dtype="int16")
            assert rate == 16000 and np.array_equal(wav, again.samples)
            written = [(t.onset_s, t.duration_s, t.label) for t in rttm[row.fileid]]
            expected = [(round(t.onset_s, 3), round(t.duration_s, 3), t.label) for t in again.turns]
            assert written == expected
            assert uem[row.fileid] == [(0.0, round(row.num_samples / 16000, 3))]
            overlap_s += _overlap_s(again.turns)
            labels |= {t.label for t in again.turns}
    assert overlap_s > 1.0  # several seconds of overlapping voice types
    assert labels == set(VTC_CLASSES)


def test_every_variant_is_an_espeak_variant_file():
    """eSpeak falls back to its default voice for an unknown variant, silently."""
    import espeakng_loader

    from hubertlab.demo.vtc import FEMALE_VARIANTS, MALE_VARIANTS

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    for variants, gender in ((FEMALE_VARIANTS, "female"), (MALE_VARIANTS, "male")):
        for variant in variants:
            text = (folder / variant).read_text(errors="replace").lower()
            assert f"gender {gender}" in " ".join(text.split()), variant


def test_every_accepted_speaker_count_has_its_own_voices():
    from hubertlab.demo.vtc import MAX_SPEAKERS_PER_CLASS

    speakers = make_vtc_speakers(VtcCorpusConfig(speakers_per_class=MAX_SPEAKERS_PER_CLASS))
    voices = [s.voice for split in VTC_SPLITS for s in speakers[split]]
    assert len(voices) == len(set(voices)) == 3 * 4 * MAX_SPEAKERS_PER_CLASS
    with pytest.raises(ValueError, match=f"must be in 1..{MAX_SPEAKERS_PER_CLASS}"):
        VtcCorpusConfig(speakers_per_class=MAX_SPEAKERS_PER_CLASS + 1)


def test_speakers_differ_across_splits():
    speakers = make_vtc_speakers(CFG)
    voices = [{s.voice for s in speakers[split]} for split in VTC_SPLITS]
    assert all(len(v) == 4 * CFG.speakers_per_class for v in voices)
    assert (
        not (voices[0] & voices[1]) and not (voices[0] & voices[2]) and not (voices[1] & voices[2])
    )
    child = [s for s in speakers["train"] if s.label in ("KCHI", "OCH")]
    adult = [s for s in speakers["train"] if s.label in ("MAL", "FEM")]
    assert min(s.pitch for s in child) > max(s.pitch for s in adult)
    assert min(s.rate_wpm for s in child) > max(s.rate_wpm for s in adult)


def test_clean_audio_is_silent_outside_turns_and_kchi_is_nearer():
    cfg = VtcCorpusConfig(minutes=1.0, recording_minutes=1.0, augment=False, seed=1)
    recording = render_recording(cfg, make_vtc_speakers(cfg)["train"], "train", 0, 60.0)
    x = recording.samples.astype(np.float64)
    voiced = np.zeros(len(x), dtype=bool)
    levels: dict[str, list[float]] = {c: [] for c in VTC_CLASSES}
    for t in recording.turns:
        a, b = round(t.onset_s * 16000), round(t.offset_s * 16000)
        voiced[a:b] = True
        others = [u for u in recording.turns if u is not t]
        if not any(u.onset_s < t.offset_s and t.onset_s < u.offset_s for u in others):
            levels[t.label].append(10 * np.log10(np.mean(x[a:b] ** 2)))
        assert np.abs(x[a : a + 1600]).max() > 0 and np.abs(x[b - 1600 : b]).max() > 0
    assert not x[~voiced].any()
    assert np.mean(levels["KCHI"]) - np.mean(levels["OCH"]) > 4  # OCH farther away


def test_kept_when_done_and_refused_with_other_settings(corpus: Path):
    mtime = (corpus / "vtc.json").stat().st_mtime_ns
    build_vtc_corpus(corpus, CFG)
    assert (corpus / "vtc.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings; pass force=True"):
        build_vtc_corpus(corpus, VtcCorpusConfig(minutes=2.0, recording_minutes=0.5, seed=6))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"minutes": 0}, "minutes must be > 0"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"speakers_per_class": 99}, "speakers_per_class"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VtcCorpusConfig(**kwargs)


def test_cli(tmp_path: Path, capsys):
    from hubertlab import cli

    argv = ["demo-corpus", str(tmp_path / "v"), "--vtc", "--minutes", "0.6"]
    assert cli.main([*argv, "--recording-minutes", "0.2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"v/{split}: 1 recordings" in out for split in VTC_SPLITS)
    assert (tmp_path / "v" / "test" / "reference.rttm").is_file()
    argv = ["demo-corpus", str(tmp_path / "c"), "--minutes", "0.1", "--speakers", "2"]
    assert cli.main(argv) == 0
    assert (tmp_path / "c" / "transcripts.tsv").is_file()

"""The eSpeak demo corpus: layout, determinism, and phone alignments that agree with the audio."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from hubertlab import cli  # noqa: E402
from hubertlab.data.alignments import (  # noqa: E402
    ITEM_HEADER,
    SIL,
    read_item_file,
    read_phone_records,
)
from hubertlab.data.manifest import read_manifest  # noqa: E402
from hubertlab.demo.corpus import (  # noqa: E402
    DemoCorpusConfig,
    build_demo_corpus,
    make_speakers,
    max_speakers,
    move_stop_onsets,
    normalize_phone,
    phone_segments,
)
from hubertlab.demo.espeak import synthesize  # noqa: E402
from hubertlab.demo.sentences import LANGUAGES, make_text, sentence_split  # noqa: E402

MINUTES = 0.3
CFG = DemoCorpusConfig(minutes=MINUTES, speakers=6, languages=("en", "fr", "es"), seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    build_demo_corpus(out, CFG, workers=2)
    return out


@pytest.fixture(scope="module")
def clean_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "clean"
    cfg = DemoCorpusConfig(minutes=1.0, speakers=6, languages=("en", "fr", "de"), augment=False)
    build_demo_corpus(out, cfg, workers=1)
    return out


def _bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_manifest_match_files(corpus: Path):
    manifest = read_manifest(corpus / "manifest.csv")
    assert len(manifest) >= 3
    total_s = manifest.total_samples / 16000
    assert MINUTES * 60 <= total_s < MINUTES * 60 + 10
    speakers = set()
    for row in manifest:
        speaker, utt = row.fileid.split("/")
        speakers.add(speaker)
        assert row.path == f"wav/{row.fileid}.wav"
        info = sf.info(corpus / row.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == row.num_samples
        assert 1.5 * 16000 < row.num_samples < 10 * 16000  # utterances of ~2-8 s
        assert np.abs(row.read_audio(corpus)).max() > 0.1
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["settings"]["seed"] == 3 and summary["settings"]["sample_rate"] == 16000
    assert {s["name"] for s in summary["speakers"]} >= speakers
    assert summary["num_files"] == len(manifest)
    files = {str(p.relative_to(corpus)) for p in (corpus / "wav").rglob("*.wav")}
    assert files == {row.path for row in manifest}


def test_same_seed_same_bytes_other_seed_differs(corpus: Path, tmp_path: Path):
    build_demo_corpus(tmp_path / "again", CFG, workers=1)
    assert _bytes(tmp_path / "again") == _bytes(corpus)
    other = DemoCorpusConfig(**{**CFG.__dict__, "seed": 4})
    build_demo_corpus(tmp_path / "other", other, workers=1)
    a, b = _bytes(tmp_path / "other"), _bytes(corpus)
    assert a["manifest.csv"] != b["manifest.csv"]
    assert not any(a[k] == b[k] for k in a.keys() & b.keys() if k.endswith(".wav"))


def test_phones_cover_each_file(corpus: Path):
    manifest = read_manifest(corpus / "manifest.csv")
    records = read_phone_records(corpus / "phones.jsonl")
    assert list(records) == [row.fileid for row in manifest]
    for row in manifest:
        rec = records[row.fileid]
        assert rec.speaker == row.fileid.split("/")[0] and rec.language in LANGUAGES
        segs = rec.segments
        assert segs[0][0] == 0 and segs[0][2] == SIL and segs[-1][2] == SIL
        assert segs[-1][1] == pytest.approx(row.num_samples / 16000, abs=1e-4)
        for (_, end, p), (start, _, q) in zip(segs, segs[1:], strict=False):
            assert start == pytest.approx(end, abs=1e-9)
            assert not (p == SIL and q == SIL)
        phones = [p for _, _, p in segs if p != SIL]
        assert len(phones) > 10 and all(" " not in p and "'" not in p for p in phones)


VOWEL_INITIALS = "aeiouyAEIOUVY@03"  # eSpeak vowel mnemonics start with one of these


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x**2) + 1e-12))


def _segment_audio(wav, sr, segs, i, frac=1.0):
    """The first `frac` of segment i's samples."""
    a, b = int(segs[i][0] * sr), int(segs[i][1] * sr)
    return wav[a : a + max(1, int(frac * (b - a)))]


def _energies(root: Path):
    """dB of inner pauses, vowels, and (stop onset part - next vowel) for unvoiced stops."""
    pauses, vowels, closures = [], [], []
    for fileid, rec in read_phone_records(root / "phones.jsonl").items():
        wav, sr = sf.read(root / "wav" / f"{fileid}.wav")
        segs = rec.segments
        seg = partial(_segment_audio, wav, sr, segs)
        for i, (_, _, p) in enumerate(segs):
            if p == SIL and 0 < i < len(segs) - 1:
                pauses.append(_db(seg(i)))
            elif p[0] in VOWEL_INITIALS:
                vowels.append(_db(seg(i)))
            is_stop = p in ("p", "t", "k") and 0 < i < len(segs) - 1
            if is_stop and segs[i - 1][2] != SIL and segs[i + 1][2][0] in VOWEL_INITIALS:
                closures.append(_db(seg(i, 0.3)) - _db(seg(i + 1)))
    return np.array(pauses), np.array(vowels), np.array(closures)


def test_alignments_agree_with_clean_audio(clean_corpus: Path):
    pauses, vowels, closures = _energies(clean_corpus)
    assert len(pauses) >= 3 and len(vowels) > 100 and len(closures) >= 15
    # Pauses are (near) digital silence, or a faint echo for the echo variants; vowels loud.
    assert np.median(pauses) < np.median(vowels) - 40
    assert np.max(pauses) < np.median(vowels) - 20
    # A stop starts at its silent closure: the first 30% of [p t k] is far below the vowel after.
    assert np.median(closures) < -20
    assert np.mean(closures < -10) > 0.9


def test_alignments_agree_with_degraded_audio(corpus: Path):
    pauses, vowels, closures = _energies(corpus)
    assert len(pauses) >= 2 and len(closures) >= 8
    assert np.median(pauses) < np.median(vowels) - 12  # reverb tails and noise fill pauses a bit
    assert np.median(closures) < -8


def test_stop_onset_moves_back_to_closure():
    sr = 22050
    t = np.arange(int(0.1 * sr)) / sr
    vowel = 8000 * np.sin(2 * np.pi * 150 * t)
    closure = np.zeros(int(0.05 * sr))
    burst = np.random.default_rng(0).normal(0, 3000, int(0.03 * sr))
    samples = np.concatenate([vowel, closure, burst, vowel]).astype(np.int16)
    release = len(vowel) + len(closure)
    events = ((0, "'a"), (release, "t"), (release + len(burst), "a"))
    segments = move_stop_onsets(phone_segments(events, len(samples)), samples, sr)
    assert [p for *_, p in segments] == ["a", "t", "a"]
    assert abs(segments[1][0] - len(vowel)) <= int(0.002 * sr)
    assert segments[0][1] == segments[1][0]
    # After a pause the closure cannot be told from the pause: left alone.
    events = ((0, "_:"), (release, "t"), (release + len(burst), "a"))
    segments = move_stop_onsets(phone_segments(events, len(samples)), samples, sr)
    assert segments[1] == (release, release + len(burst), "t")


def test_normalize_phone():
    assert normalize_phone("'a") == "a"
    assert normalize_phone(",O2") == "O2"
    assert normalize_phone("i:") == "i:"
    assert normalize_phone("_:") == SIL and normalize_phone("_") == SIL


def test_item_file(corpus: Path):
    assert (corpus / "abx.item").read_text().splitlines()[0] == ITEM_HEADER
    items = read_item_file(corpus / "abx.item")
    records = read_phone_records(corpus / "phones.jsonl")
    assert len(items) > 100
    for it in items:
        rec = records[it.fileid]
        assert SIL not in (it.phone, it.prev_phone, it.next_phone)
        assert it.speaker == rec.speaker
        assert 0 <= it.onset_s < it.offset_s <= rec.segments[-1][1]
        real = [s for s in rec.segments if s[2] != SIL]
        i = min(range(len(rec.segments)), key=lambda k: abs(rec.segments[k][0] - it.onset_s))
        assert rec.segments[i][2] == it.phone
        assert (rec.segments[i - 1][2], rec.segments[i + 1][2]) == (it.prev_phone, it.next_phone)
        assert abs(it.onset_s - real[0][0]) > 1e-3 and abs(it.offset_s - real[-1][1]) > 1e-3


def test_eval_split_uses_other_sentences(tmp_path: Path):
    rng = np.random.default_rng(0)
    for language in LANGUAGES:
        for split in ("train", "eval"):
            assert {sentence_split(make_text(language, rng, split=split)) for _ in range(50)} == {
                split
            }
    cfg = DemoCorpusConfig(minutes=0.1, speakers=2, languages=("en", "de"), split="eval")
    build_demo_corpus(tmp_path / "eval", cfg, workers=1)
    rows = read_manifest(tmp_path / "eval" / "manifest.csv")
    assert all(r.fileid.split("/")[1].startswith("eval_") for r in rows)


def test_synthesis_is_independent_of_history():
    a = synthesize("The cat sat on a big table.", "en-us+f3", seed=1)
    b = synthesize("Le chien mange.", "fr+m2", seed=1)
    again = synthesize("The cat sat on a big table.", "en-us+f3", seed=1)
    assert a.samples.tobytes() == again.samples.tobytes() and a.events == again.events
    assert len(b.samples) > 0 and a.sample_rate == 22050
    assert [p for _, p in a.events if not p.startswith("_")][:4] == ["D", "@2", "k", "'a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"languages": ("en", "xx")}, "unknown language 'xx'"),
        ({"minutes": 0}, "minutes must be > 0"),
        ({"minutes": -1.0}, "minutes must be > 0"),
        ({"speakers": 0}, "speakers must be >= 1"),
        ({"speakers": 1000}, "more than the"),
        ({"split": "test"}, "split must be one of"),
        ({"languages": ()}, "at least one language"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemoCorpusConfig(**kwargs)


def test_men_speak_lower_than_women():
    # A pitch drawn regardless of sex taught the demo model to drop it (docs/results.md).
    speakers = make_speakers(DemoCorpusConfig(speakers=24, seed=5))
    men = [s.pitch for s in speakers if s.voice.split("+")[1].startswith("m")]
    women = [s.pitch for s in speakers if s.voice.split("+")[1].startswith("f")]
    assert men and women and max(men) < min(women)


def test_max_speakers():
    assert max_speakers(("fr",)) == 12
    assert max_speakers(("en", "fr")) == 24 + 1  # fr runs out at its 13th speaker (n = 25)
    DemoCorpusConfig(speakers=max_speakers(("en", "fr", "es")), languages=("en", "fr", "es"))


def test_unknown_voice():
    with pytest.raises(ValueError, match="no voice 'xx-nope'"):
        synthesize("hello", "xx-nope")


def test_cli(tmp_path: Path, capsys):
    out = tmp_path / "c"
    argv = ["demo-corpus", str(out), "--minutes", "0.1", "--speakers", "2", "--workers", "1"]
    assert cli.main(argv) == 0
    assert "files" in capsys.readouterr().out
    before = (out / "corpus.json").stat().st_mtime_ns
    assert cli.main(argv) == 0  # same settings: kept
    assert (out / "corpus.json").stat().st_mtime_ns == before
    assert cli.main([*argv, "--seed", "1"]) == 1  # other settings without --force
    assert "other settings" in capsys.readouterr().err
    assert cli.main([*argv, "--seed", "1", "--force"]) == 0
    assert cli.main(["demo-corpus", str(tmp_path / "d"), "--languages", "en,klingon"]) == 1
    assert "unknown language 'klingon'" in capsys.readouterr().err
    assert cli.main(["demo-corpus", str(tmp_path / "d"), "--minutes", "0"]) == 1


def test_refuses_to_delete_foreign_files(tmp_path: Path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not ours"):
        build_demo_corpus(tmp_path, DemoCorpusConfig(minutes=0.05, speakers=1), workers=1)
    assert (tmp_path / "wav" / "notes.txt").read_text() == "mine"

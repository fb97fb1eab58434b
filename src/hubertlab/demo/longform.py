"""Long-form demo recordings: speech islands of several speakers, silences, background noise
and non-speech noise bursts, with the true speech islands written down, so VAD (and the
segment policy and curation downstream) can be scored.

Layout of OUT: longform/rec_XXXX.flac (16 kHz PCM16), manifest.csv (fileid "longform/rec_XXXX"),
speech.jsonl (truth, our VAD format with one language per segment: it doubles as language-ID
results), speech.rttm (one SPEAKER line per island), longform.json (settings; written last).

An island is 1-3 utterances of one speaker (the demo corpus's eSpeak synthesis, clean, scaled
to a speaker-dependent level) with short pauses; the truth spans each utterance's phones
(first non-silence to last), internal pauses under 0.3 s included. Recording i is a pure
function of (seed, i)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.speech import FileSpeech, speech_lines
from hubertlab.data.alignments import SIL
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.demo.augment import coloured_noise
from hubertlab.demo.corpus import DemoCorpusConfig, make_speakers, render_utterance
from hubertlab.fileio import atomic_open, atomic_write_json

log = logging.getLogger(__name__)

_TRUTH_GAP_S = 0.3  # pauses inside an utterance shorter than this stay inside the island


@dataclass(frozen=True)
class LongFormConfig:
    hours: float = 0.1
    """Total audio, split into recordings of `recording_minutes`."""
    recording_minutes: float = 10.0
    speakers: int = 4
    languages: tuple[str, ...] = ("en", "fr", "es")
    seed: int = 0
    mean_silence_s: float = 4.0
    """Silences between islands are exponential with this mean (plus 0.5 s)."""
    noise_dbfs: float = -50.0
    """Level of the stationary background noise (speech peaks at -10 to -1 dBFS)."""
    burst_rate_per_min: float = 1.0
    """Non-speech noise bursts (0.2-1 s, in silences) per minute."""

    def __post_init__(self) -> None:
        for name in ("hours", "recording_minutes", "mean_silence_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.burst_rate_per_min < 0:
            raise ValueError(f"burst_rate_per_min must be >= 0, got {self.burst_rate_per_min}")
        DemoCorpusConfig(speakers=self.speakers, languages=self.languages, seed=self.seed)


def _utterance_span(segments, gap_s: float) -> list[tuple[float, float]]:
    """Non-silence spans of an utterance's phones, pauses shorter than gap_s bridged."""
    spans: list[tuple[float, float]] = []
    for start, end, phone in segments:
        if phone == SIL:
            continue
        if spans and start - spans[-1][1] < gap_s:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def render_recording(cfg: LongFormConfig, index: int) -> tuple[np.ndarray, FileSpeech]:
    """Recording `index`: (num_samples,) float32 and its true speech segments."""
    corpus = DemoCorpusConfig(
        speakers=cfg.speakers, languages=cfg.languages, seed=cfg.seed, augment=False
    )
    speakers = make_speakers(corpus)
    rng = np.random.default_rng([cfg.seed, 7_000_001, index])
    num_samples = int(round(cfg.recording_minutes * 60 * SAMPLE_RATE))
    wav = coloured_noise(rng, num_samples, exponent=float(rng.uniform(0.5, 1.5)))
    wav *= 10 ** (cfg.noise_dbfs / 20)
    levels = rng.uniform(-10, -1, len(speakers))  # peak dBFS per speaker
    truth: list[tuple[float, float, str]] = []
    utt_index = index * 100_000
    pos = int(rng.exponential(cfg.mean_silence_s) * SAMPLE_RATE)
    while True:
        k = int(rng.integers(len(speakers)))
        island = []
        for _ in range(int(rng.integers(1, 4))):
            while True:  # the utterance's speaker must be k: take the next index of k
                utt_index += 1
                if utt_index % len(speakers) == k:
                    break
            island.append(render_utterance(corpus, speakers, utt_index))
        length = sum(len(u.samples) for u in island) + int(0.4 * SAMPLE_RATE) * len(island)
        if pos + length > num_samples:
            break
        for utt in island:
            x = utt.samples.astype(np.float32) / 32768
            x *= 10 ** (levels[k] / 20) / max(float(np.max(np.abs(x))), 1e-9)
            wav[pos : pos + len(x)] += x
            for start, end in _utterance_span(utt.record.segments, _TRUTH_GAP_S):
                truth.append((pos / SAMPLE_RATE + start, pos / SAMPLE_RATE + end,
                              speakers[k].language))  # fmt: skip
            pos += len(x) + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
        silence = int((0.5 + rng.exponential(cfg.mean_silence_s)) * SAMPLE_RATE)
        _add_bursts(wav, rng, pos, min(pos + silence, num_samples), cfg.burst_rate_per_min)
        pos += silence
    fileid = f"longform/rec_{index:04d}"
    speech = FileSpeech(
        fileid, num_samples / SAMPLE_RATE, tuple((s, e) for s, e, _ in truth),
        languages=tuple(lang for _, _, lang in truth),
    )  # fmt: skip
    return np.clip(wav, -1, 1).astype(np.float32), speech


def _add_bursts(wav, rng, start: int, stop: int, rate_per_min: float) -> None:
    """Noise bursts (door slam, rustle: band-limited noise, 0.2-1 s) inside [start, stop)."""
    count = rng.poisson(rate_per_min * (stop - start) / SAMPLE_RATE / 60)
    for _ in range(count):
        length = int(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
        if stop - start <= length:
            return
        at = int(rng.integers(start, stop - length))
        burst = coloured_noise(rng, length, exponent=float(rng.uniform(0, 2)))
        envelope = np.exp(-np.arange(length) / (0.3 * length))
        wav[at : at + length] += burst * envelope * 10 ** (rng.uniform(-30, -15) / 20)


def build_longform_corpus(out_dir: str | Path, cfg: LongFormConfig = LongFormConfig()) -> dict:
    """Write the recordings, manifest and truth into `out_dir`; returns the summary. A
    finished corpus with the same settings is kept as is."""
    out = Path(out_dir)
    settings = json.loads(json.dumps({**asdict(cfg), "languages": list(cfg.languages)}))
    done = out / "longform.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if previous.get("settings") == settings:
            log.info("%s: long-form corpus already built with these settings", out)
            return previous
        raise ValueError(f"{out} holds a long-form corpus with other settings; use another folder")
    count = max(1, math.ceil(cfg.hours * 60 / cfg.recording_minutes))
    rows, truths = [], []
    for i in range(count):
        wav, speech = render_recording(cfg, i)
        rel = f"{speech.fileid}.flac"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, wav, SAMPLE_RATE, subtype="PCM_16")
        rows.append(ManifestRow(speech.fileid, rel, len(wav)))
        truths.append(speech)
    write_manifest(rows, out / "manifest.csv")
    with atomic_open(out / "speech.jsonl", "w", encoding="utf-8") as f:
        f.writelines(speech_lines(truths))
    with atomic_open(out / "speech.rttm", "w", encoding="utf-8") as f:
        for speech in truths:
            for (s, e), lang in zip(speech.segments, speech.languages, strict=True):
                f.write(
                    f"SPEAKER {speech.fileid} 1 {s:.3f} {e - s:.3f} <NA> <NA> {lang} <NA> <NA>\n"
                )
    total_s = sum(r.num_samples for r in rows) / SAMPLE_RATE
    summary = {
        "settings": settings, "num_files": len(rows), "total_seconds": total_s,
        "speech_seconds": round(sum(t.speech_s for t in truths), 3),
    }  # fmt: skip
    atomic_write_json(done, summary)
    return summary

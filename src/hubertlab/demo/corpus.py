"""The demo corpus: multi-speaker speech synthesised offline with eSpeak NG, with exact phone
alignments, so the whole pipeline (units, PNMI, ABX) can run without downloads.

Layout of OUT: wav/<speaker>/<utt>.wav (16 kHz PCM16), manifest.csv (fileid "<speaker>/<utt>"),
phones.jsonl, abx.item, corpus.json (settings and speakers; written last, marks completion).

A speaker is an eSpeak voice + variant (en-us+m3, fr+f2, ...) with its own base rate, pitch,
microphone EQ and room; each file adds rate/pitch jitter, reverberation and noise. File i is a
pure function of (seed, split, i), so the corpus is the same for any number of workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.alignments import (
    SIL,
    PhoneRecord,
    abx_items,
    write_item_file,
    write_phone_records,
)
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.demo.augment import Channel, degrade
from hubertlab.demo.espeak import ESPEAK_SAMPLE_RATE, synthesize
from hubertlab.demo.sentences import LANGUAGES, SPLITS, make_text
from hubertlab.fileio import atomic_write_json

log = logging.getLogger(__name__)

# eSpeak voice -> label used in speaker names ("en" is British English in eSpeak NG).
LANGUAGE_VOICES: dict[str, dict[str, str]] = {
    "en": {"en-us": "en-us", "en": "en-gb"},
    "fr": {"fr": "fr"},
    "es": {"es": "es", "es-419": "es-la"},
    "de": {"de": "de"},
}
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
# eSpeak base pitch (0-100) of a speaker by the sex of its variant, as rng.integers bounds
# (15-45 for men, 50-80 for women; demo/vtc.py's MAL and FEM bounds are one lower at the top,
# kept so that neither corpus's draws change). Real voices differ by sex in pitch; a corpus
# that drew every speaker from one range taught the demo model to drop pitch, and its
# fine-tuning could not tell men from women (docs/results.md, fine-tuning).
ADULT_PITCH = {"m": (15, 46), "f": (50, 81)}
# eSpeak mnemonics of plosives and affricates start with one of these (case matters: "D" is a
# fricative); their closure precedes eSpeak's event.
_STOP_INITIALS = frozenset("ptkbdgcq?")
_STRESS_MARKS = "',%="
_SPLIT_IDS = {"train": 0, "eval": 1}


@dataclass(frozen=True)
class DemoCorpusConfig:
    minutes: float = 1.0
    """Total audio to synthesise (pauses included), in minutes."""
    speakers: int = 8
    """Number of speakers; assigned to languages in turn."""
    languages: tuple[str, ...] = ("en", "fr", "es")
    seed: int = 0
    """Speakers and files are drawn from this seed."""
    split: str = "train"
    """"train" or "eval": disjoint sentence sets, same speakers."""
    augment: bool = True
    """Channel EQ, reverberation and noise; off gives clean eSpeak audio."""

    def __post_init__(self) -> None:
        if not (isinstance(self.minutes, int | float) and math.isfinite(self.minutes)):
            raise ValueError(f"minutes must be a number, got {self.minutes!r}")
        if self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.speakers < 1:
            raise ValueError(f"speakers must be >= 1, got {self.speakers}")
        if not self.languages:
            raise ValueError("languages must name at least one language")
        for language in self.languages:
            if language not in LANGUAGE_VOICES or language not in LANGUAGES:
                known = ", ".join(LANGUAGE_VOICES)
                raise ValueError(f"languages: unknown language {language!r} (known: {known})")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages: repeated language in {self.languages}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        most = max_speakers(self.languages)
        if self.speakers > most:
            raise ValueError(
                f"speakers: {self.speakers} is more than the {most} voice+variant speakers "
                f"of {', '.join(self.languages)}"
            )


def max_speakers(languages: tuple[str, ...]) -> int:
    """Most distinct voice+variant speakers when speakers take the languages in turn."""
    sizes = [len(LANGUAGE_VOICES[lang]) * len(VARIANTS) for lang in languages]
    n = 0
    while sizes[n % len(sizes)] > n // len(sizes):  # speaker n is voice n // L of language n % L
        n += 1
    return n


@dataclass(frozen=True)
class Speaker:
    name: str
    language: str
    voice: str  # eSpeak voice name with variant, e.g. "en-us+m3"
    rate_wpm: int
    pitch: int
    pitch_range: int
    channel: Channel
    rt60_s: float


@dataclass(frozen=True)
class Utterance:
    record: PhoneRecord
    text: str
    samples: np.ndarray  # (num_samples,) int16 at 16 kHz


def make_speakers(cfg: DemoCorpusConfig) -> list[Speaker]:
    """Speakers from the seed (independent of the split): language k mod L, a voice+variant not
    used before, base rate, pitch, microphone and room."""
    rng = np.random.default_rng([cfg.seed, 1_000_003])
    pools = {}
    for language in cfg.languages:
        pool = [(v, var) for v in LANGUAGE_VOICES[language] for var in VARIANTS]
        pools[language] = [pool[i] for i in rng.permutation(len(pool))]
    speakers = []
    for k in range(cfg.speakers):
        language = cfg.languages[k % len(cfg.languages)]
        if not pools[language]:  # validated in the config; cannot happen for legal sizes
            raise ValueError(f"speakers: no voice left for {language}")
        voice, variant = pools[language].pop(0)
        speakers.append(
            Speaker(
                name=f"{LANGUAGE_VOICES[language][voice]}-{variant}",
                language=language,
                voice=f"{voice}+{variant}",
                rate_wpm=int(rng.integers(135, 200)),
                pitch=int(rng.integers(*ADULT_PITCH[variant[0]])),
                pitch_range=int(rng.integers(30, 81)),
                channel=Channel.random(rng),
                rt60_s=float(rng.uniform(0.1, 0.4)),
            )
        )
    return speakers


def normalize_phone(mnemonic: str) -> str:
    """eSpeak mnemonic -> label: stress marks dropped, pauses ("_", "_:", "_!") -> SIL."""
    phone = mnemonic.strip().lstrip(_STRESS_MARKS)
    phone = "".join(c for c in phone if c not in _STRESS_MARKS and not c.isspace())
    return SIL if not phone or phone.startswith("_") else phone


def phone_segments(
    events: tuple[tuple[int, str], ...], num_samples: int
) -> list[tuple[int, int, str]]:
    """(start, end, phone) in samples covering [0, num_samples): each phone lasts until the next
    event, SIL before the first; consecutive SILs merged, empty segments dropped."""
    bounds = [(0, SIL)] + [(min(max(s, 0), num_samples), normalize_phone(p)) for s, p in events]
    segments: list[tuple[int, int, str]] = []
    for i, (start, phone) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else num_samples
        if end <= start:
            continue
        if segments and phone == SIL and segments[-1][2] == SIL:
            segments[-1] = (segments[-1][0], end, SIL)
        else:
            segments.append((start, end, phone))
    return segments


def move_stop_onsets(
    segments: list[tuple[int, int, str]], samples: np.ndarray, sample_rate: int
) -> list[tuple[int, int, str]]:
    """Move each stop's onset back from its release (eSpeak's event) to the start of the quiet
    closure at the end of the previous phone. Quiet: 2 ms frames 12 dB under that phone's
    loud part (eSpeak's echo variants leave a faint echo in the closure), or 40 dB under the
    utterance. The previous phone keeps at least 10 ms; a SIL before a stop is left alone."""
    x = samples.astype(np.float64)
    hop = max(1, int(0.002 * sample_rate))
    loud = np.percentile(np.abs(x), 99) if x.size else 0.0
    out = list(segments)
    for i in range(1, len(out)):
        start, end, phone = out[i]
        p_start, _, p_phone = out[i - 1]
        if phone[0] not in _STOP_INITIALS or p_phone == SIL:
            continue
        prev = x[p_start:start]
        frames = len(prev) // hop
        if frames < 2:
            continue
        rms = np.sqrt(np.mean(prev[len(prev) - frames * hop :].reshape(frames, hop) ** 2, axis=1))
        threshold = max(np.percentile(rms, 90) * 10 ** (-12 / 20), loud * 10 ** (-40 / 20))
        min_keep = int(0.010 * sample_rate)
        onset = start
        for k in range(frames - 1, -1, -1):  # frame k covers the k-th hop before `start`
            frame_start = start - (frames - k) * hop
            if rms[k] >= threshold or frame_start - p_start < min_keep:
                break
            onset = frame_start
        if onset < start:
            out[i - 1] = (p_start, onset, p_phone)
            out[i] = (onset, end, phone)
    return out


def render_utterance(cfg: DemoCorpusConfig, speakers: list[Speaker], index: int) -> Utterance:
    """File `index`: speaker index mod N, its own sentence, prosody, room and noise."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[cfg.split], index])
    speaker = speakers[index % len(speakers)]
    text = make_text(speaker.language, rng, split=cfg.split, num_clauses=int(rng.integers(1, 3)))
    synth = synthesize(
        text,
        speaker.voice,
        rate_wpm=int(np.clip(speaker.rate_wpm * rng.uniform(0.9, 1.1), 80, 450)),
        pitch=int(np.clip(speaker.pitch + rng.integers(-6, 7), 0, 100)),
        pitch_range=int(np.clip(speaker.pitch_range + rng.integers(-10, 11), 0, 100)),
        seed=int(rng.integers(2**31)),
    )
    segments = phone_segments(synth.events, len(synth.samples))
    segments = move_stop_onsets(segments, synth.samples, synth.sample_rate)

    wav = soxr.resample(synth.samples.astype(np.float32) / 32768, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)
    lead, trail = (int(rng.uniform(0.15, 0.45) * SAMPLE_RATE) for _ in range(2))
    wav = np.concatenate([np.zeros(lead), wav, np.zeros(trail)])  # (num_samples,) float64
    if cfg.augment:
        rt60_s = speaker.rt60_s * rng.uniform(0.8, 1.2)
        speech = slice(lead, len(wav) - trail)
        wav = degrade(wav, rng, channel=speaker.channel, rt60_s=rt60_s, speech=speech)
    peak = max(float(np.max(np.abs(wav))), 1e-9)
    samples = np.round(wav * (rng.uniform(0.3, 0.9) / peak) * 32767).astype(np.int16)

    duration_s = len(samples) / SAMPLE_RATE
    to_s = lead / SAMPLE_RATE
    timed = [(0.0, to_s, SIL)] + [
        (to_s + a / synth.sample_rate, to_s + b / synth.sample_rate, p) for a, b, p in segments
    ]
    timed.append((timed[-1][1], duration_s, SIL))
    merged: list[tuple[float, float, str]] = []
    for a, b, p in timed:
        if merged and p == SIL and merged[-1][2] == SIL:
            merged[-1] = (merged[-1][0], b, SIL)
        elif b > a:
            merged.append((a, b, p))
    fileid = f"{speaker.name}/{cfg.split}_{index:05d}"
    record = PhoneRecord(fileid, speaker.name, speaker.language, tuple(merged))
    return Utterance(record=record, text=text, samples=samples)


def _render_batch(cfg: DemoCorpusConfig, speakers: list[Speaker], indices: range):
    return [render_utterance(cfg, speakers, i) for i in indices]


def _settings(cfg: DemoCorpusConfig, speakers: list[Speaker]) -> dict:
    """What corpus.json records (JSON-normalised, so it compares equal to a re-read file)."""
    settings = {**asdict(cfg), "languages": list(cfg.languages), "sample_rate": SAMPLE_RATE}
    return json.loads(json.dumps({"settings": settings, "speakers": [asdict(s) for s in speakers]}))


def _render_all(cfg, speakers, workers: int):
    """Utterances in index order until their total reaches cfg.minutes."""
    target_samples = cfg.minutes * 60 * SAMPLE_RATE
    batch = 4
    if workers <= 1:
        pool = None
    else:
        context = get_context("fork") if hasattr(os, "fork") else None
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    total, index = 0, 0
    pending = []
    try:
        while total < target_samples:
            while pool is not None and len(pending) < 2 * workers:
                pending.append(
                    pool.submit(_render_batch, cfg, speakers, range(index, index + batch))
                )
                index += batch
            if pool is None:
                utts = _render_batch(cfg, speakers, range(index, index + batch))
                index += batch
            else:
                utts = pending.pop(0).result()
            for utt in utts:
                if total >= target_samples:
                    break
                total += len(utt.samples)
                yield utt
    finally:
        if pool is not None:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def build_demo_corpus(
    out_dir: str | Path, cfg: DemoCorpusConfig, *, workers: int | None = None, force: bool = False
) -> dict:
    """Synthesise the corpus into `out_dir`; returns its corpus.json summary. A finished corpus
    with the same settings is kept as is; one with other settings needs force=True."""
    out = Path(out_dir)
    speakers = make_speakers(cfg)
    settings = _settings(cfg, speakers)
    done = out / "corpus.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if all(previous.get(k) == v for k, v in settings.items()):
            log.info("%s: corpus already built with these settings", out)
            return previous
        if not force:
            raise ValueError(
                f"{out} holds a demo corpus with other settings or speakers (an older hubertlab "
                "drew speakers otherwise): delete it or use another folder (demo-corpus: --force)"
            )
    stray = [p for p in (out / "wav").rglob("*") if p.is_file() and p.suffix != ".wav"]
    if stray:  # wav/ of an unfinished build holds only .wav files; never delete anything else
        raise ValueError(f"{out / 'wav'} holds files that are not ours, e.g. {stray[0]}")
    for name in ("corpus.json", "manifest.csv", "phones.jsonl", "abx.item"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "wav", ignore_errors=True)
    (out / "wav").mkdir(parents=True)

    if workers is None:  # a pool costs more than it saves for the smallest corpora
        workers = min(os.cpu_count() or 1, 16, math.ceil(cfg.minutes / 2))
    start = time.perf_counter()
    rows, records, items = [], [], []
    for utt in _render_all(cfg, speakers, workers):
        rel = f"wav/{utt.record.fileid}.wav"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, utt.samples, SAMPLE_RATE, subtype="PCM_16")
        rows.append(ManifestRow(fileid=utt.record.fileid, path=rel, num_samples=len(utt.samples)))
        records.append(utt.record)
        items += abx_items(utt.record.segments, utt.record.fileid, utt.record.speaker)
    write_manifest(rows, out / "manifest.csv")
    write_phone_records(records, out / "phones.jsonl")
    write_item_file(items, out / "abx.item")
    total_s = sum(r.num_samples for r in rows) / SAMPLE_RATE
    summary = {
        **settings,
        "num_files": len(rows),
        "total_seconds": round(total_s, 3),
        "num_abx_items": len(items),
        "phones": sorted({p for r in records for _, _, p in r.segments}),
    }
    atomic_write_json(done, summary)
    log.info(
        "%s: %d files, %.1f s of audio, %d ABX items in %.1f s",
        out, len(rows), total_s, len(items), time.perf_counter() - start,
    )  # fmt: skip
    return summary

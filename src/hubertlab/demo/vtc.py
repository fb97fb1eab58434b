"""The demo voice type classification (VTC) corpus: multi-talker recordings of a few minutes
with overlapping turns of four voice types, synthesised offline with eSpeak NG, with RTTM
ground truth and UEM.

KCHI (the child wearing the recorder) and OCH (other children) are child-like voices: female
eSpeak variants with high pitch, wide pitch range, fast rate and short utterances; KCHI is near
the microphone (loud, little reverberation), OCH farther away (6-12 dB quieter, mostly
reverberant). MAL and FEM are adult male and female voices. train/dev/test have different
speakers and recordings. Recording i of a split is a pure function of (seed, split, i).

Layout of OUT: <split>/wav/<fileid>.wav (16 kHz PCM16), <split>/manifest.csv,
<split>/reference.rttm, <split>/all.uem, vtc.json (settings and speakers; written last).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.data.rttm import VTC_CLASSES, Turn, write_rttm, write_uem
from hubertlab.demo.augment import Channel, coloured_noise, fft_convolve, room_impulse_response
from hubertlab.demo.corpus import LANGUAGE_VOICES
from hubertlab.demo.espeak import ESPEAK_SAMPLE_RATE, synthesize
from hubertlab.demo.sentences import make_text
from hubertlab.fileio import atomic_write_json

log = logging.getLogger(__name__)

VTC_SPLITS = ("train", "dev", "test")
_SPLIT_IDS = {"train": 0, "dev": 1, "test": 2}
_LANGUAGES = ("en", "fr", "es", "de")
# Share of turns per class (KCHI, OCH, MAL, FEM), roughly as in daylong child recordings.
_CLASS_SHARES = (0.35, 0.15, 0.2, 0.3)
# (level dB, direct-to-reverberant dB) ranges per class: distance to the microphone.
_PLACEMENT = {
    "KCHI": ((-1.0, 1.0), (14.0, 20.0)),
    "OCH": ((-12.0, -6.0), (-2.0, 3.0)),
    "MAL": ((-6.0, -2.0), (4.0, 10.0)),
    "FEM": ((-6.0, -2.0), (4.0, 10.0)),
}


# eSpeak pitch (0-100) per class: children highest, men lowest.
_PITCH = {"KCHI": (85, 100), "OCH": (85, 100), "MAL": (15, 45), "FEM": (50, 80)}
# eSpeak NG variants (espeak-ng-data/voices/!v) whose file says "gender female" or "male" and
# that sound like a person (no robot, whisper or croak): children and women share the female
# ones. Many voices per class, as in real recordings, so that a classifier must learn the voice
# type rather than a few speakers.
FEMALE_VARIANTS = (
    *(f"f{i}" for i in range(1, 6)),
    *("Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "grandma", "linda"),
    *("steph", "steph2", "steph3"),
)
MALE_VARIANTS = (
    *(f"m{i}" for i in range(1, 9)),
    *("Andy", "Denis", "Diogo", "Henrique", "Hugo", "Lee", "Marco", "antonio", "michel"),
    *("miguel", "sandro", "travis", "victor"),
)
_NUM_VOICES = sum(len(LANGUAGE_VOICES[language]) for language in _LANGUAGES)
# No voice+variant twice: 3 splits x 3 female-variant classes (KCHI, OCH, FEM) draw from one pool.
MAX_SPEAKERS_PER_CLASS = min(
    _NUM_VOICES * len(FEMALE_VARIANTS) // (3 * 3), _NUM_VOICES * len(MALE_VARIANTS) // 3
)


@dataclass(frozen=True)
class VtcCorpusConfig:
    minutes: float = 12.0
    """Total audio over the three splits, in minutes."""
    recording_minutes: float = 3.0
    """Length of one recording (the last of a split may be shorter)."""
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Shares of train, dev and test."""
    speakers_per_class: int = 2
    """Speakers of each voice type in each split (every split has its own)."""
    overlap_probability: float = 0.3
    """Chance that a turn starts before the previous one ends."""
    seed: int = 0
    augment: bool = True
    """Room reverberation, microphone EQ and noise; off gives dry voices at their levels."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if not (math.isfinite(self.recording_minutes) and self.recording_minutes >= 0.1):
            raise ValueError(f"recording_minutes must be >= 0.1, got {self.recording_minutes}")
        fractions = tuple(self.split_fractions)
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 shares > 0 summing to 1, got {fractions}")
        if not 1 <= self.speakers_per_class <= MAX_SPEAKERS_PER_CLASS:
            raise ValueError(
                f"speakers_per_class must be in 1..{MAX_SPEAKERS_PER_CLASS} (every split has its "
                f"own eSpeak voices), got {self.speakers_per_class}"
            )
        if not 0 <= self.overlap_probability <= 1:
            raise ValueError(
                f"overlap_probability must be in [0, 1], got {self.overlap_probability}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class VtcSpeaker:
    name: str
    label: str  # KCHI, OCH, MAL or FEM
    language: str
    voice: str  # eSpeak voice+variant
    rate_wpm: int
    pitch: int
    pitch_range: int


def make_vtc_speakers(cfg: VtcCorpusConfig) -> dict[str, list[VtcSpeaker]]:
    """Speakers per split, no voice+variant used twice: children and women share the female
    variants (children get higher pitch and faster speech), men take the male variants."""
    rng = np.random.default_rng([cfg.seed, 2_000_003])
    pools = {"f": [], "m": []}
    for language in _LANGUAGES:
        for voice in LANGUAGE_VOICES[language]:
            pools["f"] += [(language, voice, variant) for variant in FEMALE_VARIANTS]
            pools["m"] += [(language, voice, variant) for variant in MALE_VARIANTS]
    for key in pools:
        pools[key] = [pools[key][i] for i in rng.permutation(len(pools[key]))]
    speakers: dict[str, list[VtcSpeaker]] = {}
    for split in VTC_SPLITS:
        speakers[split] = []
        for label in VTC_CLASSES:
            for _ in range(cfg.speakers_per_class):
                language, voice, variant = pools["m" if label == "MAL" else "f"].pop()
                child = label in ("KCHI", "OCH")
                speakers[split].append(
                    VtcSpeaker(
                        name=f"{split}-{label}-{LANGUAGE_VOICES[language][voice]}-{variant}",
                        label=label,
                        language=language,
                        voice=f"{voice}+{variant}",
                        rate_wpm=int(rng.integers(210, 280) if child else rng.integers(140, 190)),
                        pitch=int(rng.integers(*_PITCH[label])),
                        pitch_range=int(rng.integers(70, 101) if child else rng.integers(30, 70)),
                    )
                )
    return speakers


def _speech_extent(wav: np.ndarray) -> tuple[int, int]:
    """[start, end) of the part louder than 35 dB under the loudest 10 ms (eSpeak pads its
    output with silence; annotators mark the voice, not the silence)."""
    hop = SAMPLE_RATE // 100
    frames = -(-len(wav) // hop)
    if frames == 0:
        return 0, 0
    padded = np.pad(wav, (0, frames * hop - len(wav)))
    rms = np.sqrt(np.mean(padded.reshape(frames, hop) ** 2, axis=1))  # (frames,)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-35 / 20))
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), int(min((loud[-1] + 1) * hop, len(wav)))


def _voice(speaker: VtcSpeaker, rng: np.random.Generator) -> np.ndarray:
    """One dry utterance at 16 kHz, trimmed to its speech: (num_samples,) float64."""
    words = make_text(speaker.language, rng).rstrip(".").split()
    if speaker.label in ("KCHI", "OCH"):  # children: a few words
        words = words[: int(rng.integers(1, 5))]
    text = " ".join(words[: int(rng.integers(3, 12))])
    synth = synthesize(
        text,
        speaker.voice,
        rate_wpm=int(np.clip(speaker.rate_wpm * rng.uniform(0.9, 1.1), 80, 450)),
        pitch=int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 100)),
        pitch_range=int(np.clip(speaker.pitch_range + rng.integers(-10, 11), 0, 100)),
        seed=int(rng.integers(2**31)),
    )
    wav = soxr.resample(synth.samples.astype(np.float64) / 32768, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)
    start, end = _speech_extent(wav)
    return wav[start:end]


@dataclass(frozen=True)
class VtcRecording:
    fileid: str
    samples: np.ndarray  # (num_samples,) int16
    turns: tuple[Turn, ...]  # sorted by onset
    speakers: tuple[str, ...]


def render_recording(
    cfg: VtcCorpusConfig, speakers: list[VtcSpeaker], split: str, index: int, seconds: float
) -> VtcRecording:
    """Recording `index` of `split`: one speaker per voice type, turns drawn one after the
    other, each starting after a pause or (with overlap_probability) before the previous
    turn ends; a speaker never overlaps itself."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], index])
    fileid = f"{split}_{index:03d}"
    cast = {}
    for label in VTC_CLASSES:
        pool = [s for s in speakers if s.label == label]
        cast[label] = pool[int(rng.integers(len(pool)))]
    num_samples = int(seconds * SAMPLE_RATE)
    room_rt60_s = float(rng.uniform(0.3, 0.6))
    mix = np.zeros(num_samples + SAMPLE_RATE, dtype=np.float64)  # room for reverb tails
    turns: list[Turn] = []
    cursor, busy_until = float(rng.uniform(0.3, 1.5)), dict.fromkeys(VTC_CLASSES, 0.0)
    while True:
        label = VTC_CLASSES[int(rng.choice(4, p=_CLASS_SHARES))]
        if rng.random() < cfg.overlap_probability and turns:
            start_s = cursor - float(rng.uniform(0.3, 1.5))
        else:
            start_s = cursor + float(rng.uniform(0.2, 1.5))
        start_s = max(start_s, busy_until[label] + 0.3, 0.0)
        wav = _voice(cast[label], rng)
        level_db, drr_db = (float(rng.uniform(*r)) for r in _PLACEMENT[label])
        start = int(round(start_s * SAMPLE_RATE))
        if start + len(wav) > num_samples - int(0.3 * SAMPLE_RATE) or len(wav) == 0:
            break
        wav = wav * (0.05 * 10 ** (level_db / 20) / max(np.sqrt(np.mean(wav**2)), 1e-9))
        if cfg.augment:
            rir = room_impulse_response(rng, rt60_s=room_rt60_s, direct_to_reverb_db=drr_db)
            wav = fft_convolve(np.concatenate([wav, np.zeros(len(rir))]), rir)
            dry_samples = len(wav) - len(rir)
        else:
            dry_samples = len(wav)
        mix[start : start + len(wav)] += wav
        turns.append(Turn(fileid, start / SAMPLE_RATE, dry_samples / SAMPLE_RATE, label))
        busy_until[label] = turns[-1].offset_s
        cursor = max(cursor, turns[-1].offset_s)
    mix = mix[:num_samples]
    if cfg.augment:
        channel = Channel.random(rng)
        mix = fft_convolve(mix, channel.fir(), delay=127)
        noise = coloured_noise(rng, num_samples, exponent=float(rng.uniform(0.0, 1.5)))
        mix += noise * 0.05 * 10 ** (-float(rng.uniform(20, 35)) / 20)
    peak = max(float(np.max(np.abs(mix))), 1e-9)
    samples = np.round(mix * (float(rng.uniform(0.5, 0.9)) / peak) * 32767).astype(np.int16)
    names = tuple(cast[label].name for label in VTC_CLASSES)
    return VtcRecording(fileid, samples, tuple(sorted(turns)), names)


def recording_plan(cfg: VtcCorpusConfig) -> dict[str, list[float]]:
    """Seconds of each recording per split."""
    plan = {}
    for split, fraction in zip(VTC_SPLITS, cfg.split_fractions, strict=True):
        total_s = cfg.minutes * fraction * 60
        full = int(total_s // (cfg.recording_minutes * 60))
        lengths = [cfg.recording_minutes * 60] * full
        rest = total_s - sum(lengths)
        if rest >= 10 or not lengths:
            lengths.append(rest)
        plan[split] = lengths
    return plan


def _render(args) -> VtcRecording:
    return render_recording(*args)


def _settings(cfg: VtcCorpusConfig, speakers: dict[str, list[VtcSpeaker]]) -> dict:
    settings = {**asdict(cfg), "split_fractions": list(cfg.split_fractions)}
    speakers_json = {split: [asdict(s) for s in ss] for split, ss in speakers.items()}
    return json.loads(json.dumps({"settings": settings, "speakers": speakers_json}))


def build_vtc_corpus(
    out_dir: str | Path,
    cfg: VtcCorpusConfig | None = None,
    *,
    workers: int | None = None,
    force: bool = False,
) -> dict:
    """Synthesise the VTC corpus into out_dir; returns its vtc.json summary. A finished corpus
    with the same settings is kept; one with other settings needs force=True."""
    cfg = cfg or VtcCorpusConfig()
    out = Path(out_dir)
    speakers = make_vtc_speakers(cfg)
    settings = _settings(cfg, speakers)
    done = out / "vtc.json"
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if all(previous.get(k) == v for k, v in settings.items()):
            log.info("%s: VTC corpus already built with these settings", out)
            return previous
        if not force:
            raise ValueError(f"{out} holds a VTC corpus with other settings; pass force=True")
        done.unlink()
    plan = recording_plan(cfg)
    jobs = [
        (cfg, speakers[split], split, i, seconds)
        for split, lengths in plan.items()
        for i, seconds in enumerate(lengths)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(jobs))
    summary = {**settings, "splits": {}}
    context = get_context("fork") if hasattr(os, "fork") else None
    pool = ProcessPoolExecutor(workers, mp_context=context) if workers > 1 else None
    try:
        recordings = pool.map(_render, jobs) if pool else map(_render, jobs)
        by_split: dict[str, list[VtcRecording]] = {s: [] for s in VTC_SPLITS}
        for (_, _, split, _, _), recording in zip(jobs, recordings, strict=True):
            by_split[split].append(recording)
    finally:
        if pool is not None:
            pool.shutdown()
    for split, recordings in by_split.items():
        _write_split(out / split, recordings)
        summary["splits"][split] = {
            "recordings": len(recordings),
            "seconds": round(sum(len(r.samples) for r in recordings) / SAMPLE_RATE, 3),
            "turns": {
                c: sum(t.label == c for r in recordings for t in r.turns) for c in VTC_CLASSES
            },
        }
    atomic_write_json(done, summary)
    log.info("%s: VTC corpus %s", out, summary["splits"])
    return summary


def _write_split(folder: Path, recordings: list[VtcRecording]) -> None:
    stray = [p for p in (folder / "wav").rglob("*") if p.is_file() and p.suffix != ".wav"]
    if stray:  # wav/ of an unfinished build holds only .wav files; never delete anything else
        raise ValueError(f"{folder / 'wav'} holds files that are not ours, e.g. {stray[0]}")
    shutil.rmtree(folder / "wav", ignore_errors=True)
    (folder / "wav").mkdir(parents=True)
    rows = []
    for r in recordings:
        rel = f"wav/{r.fileid}.wav"
        sf.write(folder / rel, r.samples, SAMPLE_RATE, subtype="PCM_16")
        rows.append(ManifestRow(fileid=r.fileid, path=rel, num_samples=len(r.samples)))
    write_manifest(rows, folder / "manifest.csv")
    write_rttm([t for r in recordings for t in r.turns], folder / "reference.rttm")
    write_uem({r.fileid: [(0.0, len(r.samples) / SAMPLE_RATE)] for r in recordings},
              folder / "all.uem")  # fmt: skip

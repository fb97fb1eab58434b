"""UPS-style curation (REFERENCE.md 7.3): speech-dense, scarce-language audio first, cut into
fixed chunks, picked until an hour budget is met exactly.

1. density per group (an archive, or a file) = speech seconds / seconds, from VAD; groups under
   `min_density` are dropped;
2. score = density x the sum of the scarcity weights of the languages present in the group
   (1 for > 1000 h of that language in the corpus, 2 for 100-1000 h, 3 for 10-100 h, 4 for
   < 10 h; hours from a table, else summed from the language-ID segments);
3. every recording of a kept group is cut into non-overlapping `chunk_s` chunks from its start
   (a shorter tail is left out); a chunk needs `min_speech_s` of VAD speech; its language is
   the one with the most language-ID speech inside it ("nospeech" if none); chunks whose
   language is in `drop_languages` are left out;
4. groups best score first (ties: group name), chunks in recording and time order, until the
   budget is reached: chunks stay whole (a training sample is the chunk length, never a sliver
   cut to meet the budget to the sample), so the total exceeds the budget by under one chunk.

Deterministic: no randomness, every sort has a total order."""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.speech import FileSpeech
from hubertlab.data.manifest import Manifest, ManifestRow, fileid_for

log = logging.getLogger(__name__)

UNDETERMINED = "und"
# A chunk is one training sample. 1 s is 50 CNN frames: five of HuBERT's 10-frame mask spans,
# so masking (~55 % of frames) still leaves unmasked context around the masked ones; shorter
# chunks give a handful of frames (160 samples give none) and train nothing worth the audio.
MIN_CHUNK_S = 1.0


@dataclass(frozen=True)
class CurationConfig:
    hours: float
    """Budget: total duration of the picked chunks."""
    min_density: float = 0.5
    chunk_s: float = 10.0
    min_speech_s: float = 8.0
    group: str = "archive"
    """"archive" (a tar, or the UPS tar_number; files outside one count alone) or "file"."""
    drop_languages: tuple[str, ...] = ("nospeech", "unknown")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hours) and self.hours > 0):
            raise ValueError(f"hours must be > 0, got {self.hours}")
        if not (math.isfinite(self.chunk_s) and self.chunk_s >= MIN_CHUNK_S):
            raise ValueError(f"chunk_s must be at least {MIN_CHUNK_S} s, got {self.chunk_s}")
        if not 0 <= self.min_density <= 1:
            raise ValueError(f"min_density must be in [0, 1], got {self.min_density}")
        if not 0 < self.min_speech_s <= self.chunk_s:
            raise ValueError(
                f"min_speech_s must be in (0, chunk_s={self.chunk_s}], got {self.min_speech_s}"
            )
        if self.group not in ("archive", "file"):
            raise ValueError(f"group must be 'archive' or 'file', got {self.group!r}")


def scarcity_weight(hours: float) -> int:
    """1 for > 1000 h, 2 for 100-1000 h, 3 for 10-100 h, 4 for < 10 h."""
    if hours > 1000:
        return 1
    if hours >= 100:
        return 2
    if hours >= 10:
        return 3
    return 4


def row_finder(manifest: Manifest) -> Callable[[str], ManifestRow | None]:
    """name -> its manifest row, matched on fileid, then path, then path without extension
    (UPS keys are paths); None if no row matches."""
    by_key: dict[str, ManifestRow] = {}
    for row in manifest:
        for key in (fileid_for(row.path), row.path, row.fileid):  # fileid wins on a clash
            by_key[key] = row
    return lambda name: by_key.get(name) or by_key.get(fileid_for(name))


def join_rows(
    speeches: Iterable[FileSpeech], manifest: Manifest, source: str = ""
) -> list[tuple[FileSpeech, ManifestRow]]:
    """Each result with its manifest row (see `row_finder`); results without a row are logged
    and left out; segments are fitted to the audio (`fit_to_audio`)."""
    find = row_finder(manifest)
    pairs, missing = [], []
    for speech in speeches:
        row = find(speech.fileid)
        (missing.append(speech.fileid) if row is None else pairs.append((speech, row)))
    if missing:
        log.warning("%s: %d recordings not in %s, left out (e.g. %r)",
                    source, len(missing), manifest.source, missing[0])  # fmt: skip
    if not pairs:
        raise ValueError(f"{source}: no recording matches a row of {manifest.source}")
    return [(fit_to_audio(speech, row, source), row) for speech, row in pairs]


# Durations and segment ends within one 20 ms frame of the audio's end are rounding.
_END_SLACK_S = 0.02


def fit_to_audio(speech: FileSpeech, row: ManifestRow, source: str = "") -> FileSpeech:
    """`speech` with its segments clipped to the row's audio (those starting past it dropped),
    with a warning naming the file and the first segment past the end: VAD results that
    disagree with the audio (another file, or a unit mix-up) should not go unnoticed."""
    if not isinstance(speech, FileSpeech):
        return speech  # per-file language-ID results have no times
    audio_s = row.num_samples / SAMPLE_RATE
    where = f"{source}: {speech.fileid}"
    if speech.duration_s > audio_s + _END_SLACK_S:
        hint = " (samples, not seconds?)" if speech.duration_s > 1000 * max(audio_s, 1) else ""
        log.warning("%s: duration %.3f s, but its audio has %.3f s%s",
                    where, speech.duration_s, audio_s, hint)  # fmt: skip
    past = [i for i, (_, end) in enumerate(speech.segments) if end > audio_s + _END_SLACK_S]
    if not past:
        return speech
    start, end = speech.segments[past[0]]
    log.warning("%s: segment %d (%.3f-%.3f s) and %d more end past its %.3f s of audio: "
                "clipped to the audio, or dropped if they start past it",
                where, past[0], start, end, len(past) - 1, audio_s)  # fmt: skip
    keep = [i for i, (s, _) in enumerate(speech.segments) if s < audio_s]
    return replace(
        speech,
        segments=tuple((s, min(e, audio_s)) for s, e in (speech.segments[i] for i in keep)),
        languages=tuple(speech.languages[i] for i in keep) if speech.languages else (),
    )


def _overlap(segments, start: float, end: float) -> np.ndarray:
    """Seconds of each (s, e) inside [start, end)."""
    if not segments:
        return np.zeros(0)
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    return np.clip(np.minimum(seg[:, 1], end) - np.maximum(seg[:, 0], start), 0, None)


@dataclass(frozen=True)
class Chunk:
    row: ManifestRow
    start: int  # samples at 16 kHz, in the row's audio
    num_samples: int
    language: str
    speech_s: float

    def to_row(self) -> ManifestRow:
        end = self.start + self.num_samples
        return ManifestRow(
            fileid=f"{self.row.fileid}_{self.start}_{end}", path=self.row.path,
            num_samples=self.num_samples, archive=self.row.archive,
            byte_offset=self.row.byte_offset, byte_size=self.row.byte_size,
            start=(self.row.start or 0) + self.start,
        )  # fmt: skip


def language_hours(lid: dict[str, FileSpeech]) -> dict[str, float]:
    """Speech hours per language from language-ID segments."""
    hours: Counter = Counter()
    for speech in lid.values():
        for (s, e), lang in zip(speech.segments, speech.languages, strict=True):
            hours[lang] += (e - s) / 3600
    return dict(hours)


def curate(
    pairs: list[tuple[FileSpeech, ManifestRow]], cfg: CurationConfig, *,
    lid: dict[str, FileSpeech] | None = None, hours_table: dict[str, float] | None = None,
) -> tuple[list[ManifestRow], dict]:  # fmt: skip
    """Picked chunks as span rows, and a summary (hours per language before and after,
    counts, densities). `lid` maps fileid -> language-ID segments; without it, the VAD
    segments' own languages are used if they have any, else every chunk is "und"."""
    if lid is None:
        lid = {s.fileid: s for s, _ in pairs if s.languages}
    for fileid, speech in lid.items():
        if len(speech.languages) != len(speech.segments):
            raise ValueError(f"language-ID results for {fileid!r} have no language per segment")
    corpus_hours = language_hours(lid) if hours_table is None else dict(hours_table)
    groups: dict[str, list[tuple[FileSpeech, ManifestRow]]] = defaultdict(list)
    for speech, row in pairs:
        key = row.fileid
        if cfg.group == "archive":
            key = speech.archive or row.archive or row.fileid
        groups[key].append((speech, row))

    counts: Counter = Counter(groups=len(groups), files=len(pairs))
    scored, densities = [], {}
    for key, members in groups.items():
        duration = sum(r.num_samples for _, r in members) / SAMPLE_RATE
        density = sum(s.speech_s for s, _ in members) / max(duration, 1e-9)
        densities[key] = density
        if density < cfg.min_density:
            counts["groups_below_density"] += 1
            continue
        languages = {lang for s, r in members for lang in _languages(s, r, lid)}
        languages = (languages - set(cfg.drop_languages)) or {UNDETERMINED}
        for lang in sorted(languages - set(corpus_hours) - {UNDETERMINED}):
            log.warning("language %r has no hours in the table: weighted as < 10 h", lang)
            corpus_hours[lang] = 0.0
        weights = sum(scarcity_weight(corpus_hours.get(lang, 0.0)) for lang in languages)
        scored.append((-density * weights, key))
    scored.sort()

    budget = round(cfg.hours * 3600 * SAMPLE_RATE)
    picked: list[Chunk] = []
    total = 0
    # Chunks are made lazily, best group first: the counts stop where the budget is met.
    in_order = (
        chunk
        for _, key in scored
        for speech, row in sorted(groups[key], key=lambda p: p[1].fileid)
        for chunk in _chunks(speech, row, cfg, lid, counts)
    )
    for chunk in in_order:
        picked.append(chunk)
        total += chunk.num_samples
        if total >= budget:
            break
    counts["chunks_picked"] = len(picked)
    summary = _summary(pairs, lid, picked, counts, densities, cfg, total, budget)
    return [c.to_row() for c in picked], summary


def _languages(speech: FileSpeech, row: ManifestRow, lid) -> list[str]:
    if not lid:
        return [UNDETERMINED]
    found = lid.get(speech.fileid) or lid.get(row.fileid)
    return list(found.languages) if found is not None else ["unknown"]


def _chunks(speech: FileSpeech, row: ManifestRow, cfg: CurationConfig, lid, counts):
    chunk_samples = round(cfg.chunk_s * SAMPLE_RATE)
    found = (lid.get(speech.fileid) or lid.get(row.fileid)) if lid else None
    for k in range(row.num_samples // chunk_samples):
        start_s, end_s = k * chunk_samples / SAMPLE_RATE, (k + 1) * chunk_samples / SAMPLE_RATE
        speech_s = float(_overlap(speech.segments, start_s, end_s).sum())
        counts["chunks_considered"] += 1
        if speech_s < cfg.min_speech_s - 1e-6:
            counts["chunks_below_min_speech"] += 1
            continue
        if not lid:
            language = UNDETERMINED
        elif found is None:
            language = "unknown"
        else:
            by_language: Counter = Counter()
            for seconds, lang in zip(_overlap(found.segments, start_s, end_s), found.languages,
                                     strict=True):  # fmt: skip
                by_language[lang] += float(seconds)
            best = max(sorted(by_language), key=lambda lang: by_language[lang], default=None)
            language = "nospeech" if best is None or by_language[best] <= 0 else best
        if language in cfg.drop_languages:
            counts[f"chunks_dropped_{language}"] += 1
            continue
        yield Chunk(row, k * chunk_samples, chunk_samples, language, speech_s)


def _summary(pairs, lid, picked, counts, densities, cfg, total, budget) -> dict:
    before: Counter = Counter()
    if lid:
        for lang, hours in language_hours(lid).items():
            before[lang] += hours
    else:
        before[UNDETERMINED] = sum(s.speech_s for s, _ in pairs) / 3600
    after: Counter = Counter()
    for chunk in picked:
        after[chunk.language] += chunk.num_samples / SAMPLE_RATE / 3600
    if total < budget:
        log.warning("only %.3f h of chunks qualify, short of the %.3f h budget",
                    total / SAMPLE_RATE / 3600, cfg.hours)  # fmt: skip
    return {
        "budget_hours": cfg.hours,
        "picked_hours": total / SAMPLE_RATE / 3600,
        "budget_met": total >= budget,
        "speech_hours_before": dict(sorted(before.items())),
        "hours_after": dict(sorted(after.items())),
        "counts": dict(sorted(counts.items())),
        "densities": dict(sorted(densities.items())),
        "settings": {
            "min_density": cfg.min_density, "chunk_s": cfg.chunk_s,
            "min_speech_s": cfg.min_speech_s, "group": cfg.group,
            "drop_languages": list(cfg.drop_languages),
        },
    }  # fmt: skip


def plot_densities(densities: dict[str, float], min_density: float, path: str | Path) -> None:
    """Histogram of speech densities, with the cut-off, as a PNG."""
    import matplotlib  # lazy: slow to import; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(list(densities.values()), bins=20, range=(0, 1), color="tab:blue")
    ax.axvline(min_density, color="tab:red", linestyle="--", label=f"min density {min_density}")
    ax.set_xlabel("speech density (speech s / s)")
    ax.set_ylabel("groups")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

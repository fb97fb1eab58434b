"""Speech segments per recording (the output of VAD, the input of the policy and curation),
read from our JSONL or from the UPS challenge's, and written as JSONL.

Ours, one object per recording: {"fileid", "duration" (s), "segments": [[start, end], ...]
(s)}, optionally "archive". UPS (REFERENCE.md 7.3): {path: {"tar_number", "duration" (s),
"timestamps": [{"start", "end"}, ...] in samples at 16 kHz}}; a timestamp may carry a
"language" (language-ID results), a recording may carry one "language" for all of it."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.resumable import finished_shards
from hubertlab.fileio import read_jsonl

log = logging.getLogger(__name__)

# Segment ends within one 20 ms frame past the duration are rounding.
_END_SLACK_S = 0.02
# Segments in seconds that end 100 x past a file's duration were written in samples (16000 x).
_UNIT_RATIO = 100


@dataclass(frozen=True)
class FileSpeech:
    """Speech of one recording: (start, end) in seconds, sorted, inside [0, duration_s]."""

    fileid: str
    duration_s: float
    segments: tuple[tuple[float, float], ...]
    archive: str | None = None
    languages: tuple[str, ...] = field(default=())
    """Per-segment language labels (language-ID results), empty when unknown."""

    @property
    def speech_s(self) -> float:
        """Seconds covered by at least one segment (overlaps counted once)."""
        total, reach = 0.0, 0.0
        for start, end in self.segments:  # sorted by start
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def to_json(self) -> dict:
        d = {
            "fileid": self.fileid,
            "duration": round(self.duration_s, 6),
            "segments": [[round(s, 6), round(e, 6)] for s, e in self.segments],
        }
        if self.archive is not None:
            d["archive"] = self.archive
        if self.languages:
            d["languages"] = list(self.languages)
        return d


def _number(value, where: str, key: str) -> float:
    # JSON's NaN and Infinity parse as floats; NaN passes `< 0` and would drop a segment or
    # stretch it to the file's end, and reach summary.json.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {key!r} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: {key!r} is negative: {value}")
    return float(value)


def _checked(fileid, duration_s, segments, where, archive=None, languages=()) -> FileSpeech:
    out = []
    for i, (start, end) in enumerate(segments):
        if end < start:
            raise ValueError(f"{where}: segment {i} ends ({end}) before it starts ({start})")
        out.append((start, end))
    past = [i for i, (_, end) in enumerate(out) if end > duration_s + _END_SLACK_S]
    if past:
        start, end = out[past[0]]
        log.warning("%s: segment %d (%.3f-%.3f s) and %d more end past the duration, %.3f s",
                    where, past[0], start, end, len(past) - 1, duration_s)  # fmt: skip
    order = sorted(range(len(out)), key=lambda i: out[i])
    languages = tuple(languages)
    if languages and len(languages) != len(out):
        raise ValueError(f"{where}: {len(languages)} languages for {len(out)} segments")
    return FileSpeech(
        fileid=str(fileid),
        duration_s=duration_s,
        segments=tuple(out[i] for i in order),
        archive=None if archive is None else str(archive),
        languages=tuple(languages[i] for i in order) if languages else (),
    )


def _ours(d: dict, where: str) -> FileSpeech:
    duration = _number(d.get("duration"), where, "duration")
    segments = d.get("segments")
    if not isinstance(segments, list):
        raise ValueError(f"{where}: 'segments' must be a list of [start, end]")
    pairs = []
    for i, seg in enumerate(segments):
        if not isinstance(seg, list | tuple) or len(seg) not in (2, 3):
            raise ValueError(f"{where}: segment {i} is not [start, end]: {seg!r}")
        pairs.append((_number(seg[0], where, "start"), _number(seg[1], where, "end")))
    last = max((e for _, e in pairs), default=0.0)
    if last > _UNIT_RATIO * max(duration, 1.0):
        log.warning("%s: segments end at up to %g in a %g s file: they look like samples, "
                    "but this format's segments are seconds", where, last, duration)  # fmt: skip
    languages = d.get("languages") or ()
    return _checked(d["fileid"], duration, pairs, where, d.get("archive"), languages)


def _ups(key: str, d: dict, where: str) -> FileSpeech:
    duration = _number(d.get("duration"), where, "duration")
    stamps = d.get("timestamps", [])
    if not isinstance(stamps, list):
        raise ValueError(f"{where}: 'timestamps' must be a list of {{start, end}}")
    pairs, languages = [], []
    for i, t in enumerate(stamps):
        if not isinstance(t, dict) or "start" not in t or "end" not in t:
            raise ValueError(f"{where}: timestamp {i} needs 'start' and 'end': {t!r}")
        pairs.append((_number(t["start"], where, "start") / SAMPLE_RATE,
                      _number(t["end"], where, "end") / SAMPLE_RATE))  # fmt: skip
        language = t.get("language", d.get("language"))
        if language is not None:
            languages.append(str(language))
    last = max((t["end"] for t in stamps), default=0)
    if stamps and duration >= 1.0 and last <= duration:
        # As samples every segment would lie in the file's first duration / 16000 seconds.
        log.warning(
            "%s: every timestamp is <= %g, the duration in seconds: they look like seconds, "
            "but UPS timestamps are samples at 16 kHz", where, duration,
        )  # fmt: skip
    archive = d.get("tar_number")
    return _checked(key, duration, pairs, where, archive, languages)


def parse_line(d: object, where: str) -> FileSpeech:
    """One JSONL object in either format."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if "fileid" in d:
        return _ours(d, where)
    if len(d) == 1:
        ((key, value),) = d.items()
        if isinstance(value, dict):
            return _ups(key, value, where)
    raise ValueError(f"{where}: neither {{fileid, duration, segments}} nor {{path: {{...}}}}")


def iter_jsonl(path: str | Path) -> Iterator[FileSpeech]:
    for where, d in read_jsonl(path):
        yield parse_line(d, where)


def read_speech(path: str | Path) -> list[FileSpeech]:
    """All recordings of a JSONL file, or of a finished `hubertlab vad` folder (every shard
    done; the error names an unfinished one). A recording listed twice is an error."""
    path = Path(path)
    if path.is_dir():
        files = finished_shards(path, suffix=".jsonl")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"speech segments not found: {path}")
    out, seen = [], {}
    for file in files:
        for speech in iter_jsonl(file):
            if speech.fileid in seen:
                raise ValueError(
                    f"{file}: {speech.fileid!r} listed twice (also in {seen[speech.fileid]})"
                )
            seen[speech.fileid] = file
            out.append(speech)
    return out


def speech_lines(items: Iterable[FileSpeech]) -> Iterator[str]:
    for item in items:
        yield json.dumps(item.to_json()) + "\n"

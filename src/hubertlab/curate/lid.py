"""Language-ID results for curation, in the three forms they come in:

- per segment (ours, or UPS-style timestamps with a "language"): read as speech segments
  (hubertlab.curate.speech), each with its language;
- per file, UPS's distributed form: {path: {"language": "es", "tar_number": 2357}};
- per file, UPS's row form: {"tar_number", "filepath", "prediction"}.

A per-file language applies to all of that file's VAD speech; a file missing from the results
is "unknown" (curation drops its chunks by default). Per-file results are matched to manifest
rows by path (as VAD results are), else by (tar_number, file name) as UPS's own index does."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from hubertlab.curate.select import join_rows, row_finder
from hubertlab.curate.speech import FileSpeech, parse_line
from hubertlab.data.manifest import Manifest, ManifestRow
from hubertlab.fileio import read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileLanguage:
    """One language for a whole recording (UPS's per-file language-ID results)."""

    fileid: str
    language: str
    archive: str | None = None


def _language(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a language code, got {value!r}")
    return value.strip()


def parse_lid_line(d: dict, where: str) -> FileSpeech | FileLanguage:
    """One JSONL object of language-ID results, in any of the three forms."""
    if "filepath" in d or "prediction" in d:
        if not isinstance(d.get("filepath"), str):
            raise ValueError(f"{where}: 'filepath' must be a path, got {d.get('filepath')!r}")
        tar = d.get("tar_number")
        language = _language(d.get("prediction"), where, "prediction")
        return FileLanguage(d["filepath"], language, None if tar is None else str(tar))
    if len(d) == 1:
        ((key, value),) = d.items()
        if isinstance(value, dict) and "timestamps" not in value and "language" in value:
            tar = value.get("tar_number")
            language = _language(value["language"], where, "language")
            return FileLanguage(key, language, None if tar is None else str(tar))
    return parse_line(d, where)


def read_lid(path: str | Path) -> list[FileSpeech | FileLanguage]:
    """All results of a language-ID JSONL file; a recording listed twice is an error."""
    out, seen = [], {}
    for where, d in read_jsonl(path):
        item = parse_lid_line(d, where)
        key = (item.archive, item.fileid)
        if key in seen:
            raise ValueError(f"{where}: {item.fileid!r} listed twice (also line {seen[key]})")
        seen[key] = where.rsplit(":", 1)[-1]
        out.append(item)
    return out


def lid_by_fileid(
    items: Iterable[FileSpeech | FileLanguage], pairs: list[tuple[FileSpeech, ManifestRow]],
    manifest: Manifest, source: str,
) -> dict[str, FileSpeech]:  # fmt: skip
    """Language-ID segments per manifest fileid, for `curate(lid=...)`: per-segment results
    as they are, per-file languages spread over the file's VAD speech (`pairs`)."""
    items = list(items)
    per_segment = [i for i in items if isinstance(i, FileSpeech)]
    per_file = [i for i in items if isinstance(i, FileLanguage)]
    lid: dict[str, FileSpeech] = {}
    if per_segment:
        for speech, row in join_rows(per_segment, manifest, source):
            lid[row.fileid] = speech
    if not per_file:
        return lid
    find = row_finder(manifest)
    vad = {row.fileid: speech for speech, row in pairs}
    by_name = {(speech.archive or row.archive, os.path.basename(row.path)): row
               for speech, row in pairs}  # fmt: skip
    missing = []
    for item in per_file:
        row = find(item.fileid) or by_name.get((item.archive, os.path.basename(item.fileid)))
        if row is None or row.fileid not in vad:
            missing.append(item.fileid)
            continue
        speech = vad[row.fileid]
        lid[row.fileid] = replace(speech, languages=(item.language,) * len(speech.segments))
    if missing:
        log.warning("%s: %d results match no recording of the VAD results, left out (e.g. %r)",
                    source, len(missing), missing[0])  # fmt: skip
    if not lid:
        raise ValueError(f"{source}: no result matches a recording of {manifest.source}")
    return lid

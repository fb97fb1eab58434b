"""The UPS selection from files, as `hubertlab curate` and the pipeline's [longform] run it: VAD
results, optional language-ID results and hours table -> the picked chunks (manifest.csv),
summary.json and density.png in one folder (hubertlab.curate.select does the choosing)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hubertlab.curate import select
from hubertlab.curate.lid import lid_by_fileid, read_lid
from hubertlab.curate.speech import FileSpeech
from hubertlab.data.manifest import Manifest, ManifestRow, relocate, write_manifest
from hubertlab.fileio import atomic_write_text
from hubertlab.numbers import checked_float


def read_hours_table(path: str | Path) -> dict[str, float]:
    """CSV with columns language,hours (finite, >= 0)."""
    table = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or {"language", "hours"} - set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns language,hours (has {reader.fieldnames})")
        for i, d in enumerate(reader, start=2):
            try:
                hours = float(d["hours"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{i}: hours is not a number: {d['hours']!r}") from None
            table[d["language"]] = checked_float(hours, f"{path}:{i}: hours", low=0)
    return table


def select_to_folder(
    speech: list[FileSpeech], manifest: Manifest, cfg: select.CurationConfig, out: str | Path,
    *, source: str = "", lid: str | Path | None = None, hours_table: str | Path | None = None,
) -> tuple[list[ManifestRow], dict]:  # fmt: skip
    """Pick chunks of `manifest`'s recordings from their VAD result `speech` (read from
    `source`) and write OUT/manifest.csv (paths relative to OUT), OUT/summary.json and
    OUT/density.png; returns the picked rows (paths as in `manifest`) and the summary."""
    table = read_hours_table(hours_table) if hours_table else None
    pairs = select.join_rows(speech, manifest, source)
    by_fileid = lid_by_fileid(read_lid(lid), pairs, manifest, str(lid)) if lid else None
    rows, summary = select.curate(pairs, cfg, lid=by_fileid, hours_table=table)
    out = Path(out)
    write_manifest(relocate(rows, manifest.root, out / "manifest.csv"), out / "manifest.csv")
    # allow_nan=False: a NaN would make the file invalid JSON; refuse rather than write it.
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(out / "summary.json", text)
    select.plot_densities(summary["densities"], cfg.min_density, out / "density.png")
    return rows, summary

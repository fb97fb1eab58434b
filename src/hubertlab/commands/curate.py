"""hubertlab curate SPEECH MANIFEST OUT_DIR --hours H [--lid LID_JSONL] [--hours-table CSV]"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from hubertlab.curate import select
from hubertlab.curate.lid import lid_by_fileid, read_lid
from hubertlab.curate.speech import read_speech
from hubertlab.data.manifest import read_manifest, relocate, write_manifest
from hubertlab.fileio import atomic_write_text
from hubertlab.numbers import checked_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Float flags are checked (hubertlab.numbers) by run() before any work, exit 1.
    p.add_argument("speech", help="`hubertlab vad` folder, or a VAD JSONL (ours or UPS)")
    p.add_argument("manifest", help="the manifest the VAD ran on (recordings)")
    p.add_argument("out_dir", help="writes manifest.csv (spans), summary.json, density.png")
    p.add_argument("--hours", type=float, required=True, help="budget of picked audio")
    p.add_argument(
        "--lid", help="language-ID results (JSONL: ours or UPS, per segment or per file)"
    )
    p.add_argument("--hours-table", help="CSV language,hours: corpus hours per language")
    p.add_argument("--min-density", type=float, default=0.5, help="drop sparser groups")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="chunk length")
    p.add_argument("--min-speech-seconds", type=float, default=8.0, help="speech per chunk")
    p.add_argument(
        "--group", choices=("archive", "file"), default="archive",
        help="density per archive (UPS; a file outside a tar is its own group) or per file",
    )  # fmt: skip


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


def check_flags(args: argparse.Namespace) -> None:
    """Every float flag finite and in range, before any work (the error names the flag)."""
    checked_float(args.hours, "--hours", low=0, low_open=True)
    checked_float(args.min_density, "--min-density", low=0, high=1)
    # A chunk is one training sample: under 1 s (50 frames) it trains nothing (select.py).
    checked_float(args.chunk_seconds, "--chunk-seconds", low=select.MIN_CHUNK_S)
    checked_float(args.min_speech_seconds, "--min-speech-seconds", low=0, low_open=True,
                  high=args.chunk_seconds)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    table = read_hours_table(args.hours_table) if args.hours_table else None
    cfg = select.CurationConfig(
        hours=args.hours, min_density=args.min_density, chunk_s=args.chunk_seconds,
        min_speech_s=args.min_speech_seconds, group=args.group,
    )  # fmt: skip
    manifest = read_manifest(args.manifest)
    pairs = select.join_rows(read_speech(args.speech), manifest, args.speech)
    lid = None
    if args.lid:
        lid = lid_by_fileid(read_lid(args.lid), pairs, manifest, args.lid)
    rows, summary = select.curate(pairs, cfg, lid=lid, hours_table=table)
    out = Path(args.out_dir)
    write_manifest(relocate(rows, manifest.root, out / "manifest.csv"), out / "manifest.csv")
    # allow_nan=False: a NaN would make the file invalid JSON; refuse rather than write it.
    text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(out / "summary.json", text)
    select.plot_densities(summary["densities"], cfg.min_density, out / "density.png")
    print(
        f"{out}: {len(rows)} chunks, {summary['picked_hours']:.3f} h of {args.hours} h "
        f"({'met' if summary['budget_met'] else 'NOT met'}); by language "
        + ", ".join(f"{k} {v:.3f} h" for k, v in summary["hours_after"].items())
    )
    return 0

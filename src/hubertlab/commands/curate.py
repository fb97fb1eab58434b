"""hubertlab curate SPEECH MANIFEST OUT_DIR --hours H [--lid LID_JSONL] [--hours-table CSV]"""

from __future__ import annotations

import argparse

from hubertlab.curate import select
from hubertlab.curate.speech import read_speech
from hubertlab.curate.ups import select_to_folder
from hubertlab.data.manifest import read_manifest
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
    cfg = select.CurationConfig(
        hours=args.hours, min_density=args.min_density, chunk_s=args.chunk_seconds,
        min_speech_s=args.min_speech_seconds, group=args.group,
    )  # fmt: skip
    rows, summary = select_to_folder(
        read_speech(args.speech), read_manifest(args.manifest), cfg, args.out_dir,
        source=args.speech, lid=args.lid, hours_table=args.hours_table,
    )  # fmt: skip
    print(
        f"{args.out_dir}: {len(rows)} chunks, {summary['picked_hours']:.3f} h of {args.hours} h "
        f"({'met' if summary['budget_met'] else 'NOT met'}); by language "
        + ", ".join(f"{k} {v:.3f} h" for k, v in summary["hours_after"].items())
    )
    return 0

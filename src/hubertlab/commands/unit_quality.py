"""hubertlab unit-quality UNITS PHONES_JSONL"""

from __future__ import annotations

import argparse
import json

from hubertlab.data.alignments import SIL, read_phone_segments
from hubertlab.evaluate.units import unit_quality
from hubertlab.fileio import atomic_write_json
from hubertlab.units.assign import read_units


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("units", help="units.jsonl (or the transcribe folder holding it)")
    p.add_argument("phones", help="phones.jsonl with phone segments per fileid")
    p.add_argument("--k", type=int, help="codebook size, to count unused units")
    p.add_argument("--exclude-silence", action="store_true", help=f"drop {SIL} frames")
    p.add_argument("--skip-missing", action="store_true", help="skip files without phones")
    p.add_argument("--out", help="also write the scores to this JSON file")


def run(args: argparse.Namespace) -> int:
    scores = unit_quality(
        read_units(args.units), read_phone_segments(args.phones), num_units=args.k,
        exclude=(SIL,) if args.exclude_silence else (), strict=not args.skip_missing,
    )  # fmt: skip
    if args.out:
        atomic_write_json(args.out, scores)
    print(json.dumps(scores, indent=2))
    return 0

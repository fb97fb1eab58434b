"""hubertlab unit-quality UNITS PHONES_JSONL [--manifest M]"""

from __future__ import annotations

import argparse
import json

from hubertlab.data.alignments import SIL, read_phone_segments
from hubertlab.data.manifest import read_manifest
from hubertlab.evaluate.units import check_unit_counts, recorded_label_rate, unit_quality
from hubertlab.fileio import atomic_write_json
from hubertlab.units.assign import read_units


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("units", help="units.jsonl (or the transcribe folder holding it)")
    p.add_argument("phones", help="phones.jsonl with phone segments per fileid")
    p.add_argument("--k", type=int, help="codebook size, to count unused units")
    p.add_argument("--exclude-silence", action="store_true", help=f"drop {SIL} frames")
    p.add_argument("--skip-missing", action="store_true", help="skip files without phones")
    p.add_argument("--out", help="also write the scores to this JSON file")
    p.add_argument(
        "--manifest",
        help="manifest of the audio: unit counts are checked against its lengths (and a .km "
        "file, which has no fileids, is read in its row order)",
    )


def run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.manifest) if args.manifest else None
    units = read_units(args.units, manifest)
    segments = read_phone_segments(args.phones)
    label_rate_hz, rate_source = recorded_label_rate(args.units)
    check_unit_counts(
        units, segments, label_rate_hz,
        source=f"{args.units} (label rate from {rate_source})",
        num_samples=None if manifest is None else {r.fileid: r.num_samples for r in manifest},
        audio=f"manifest {args.manifest}",
    )  # fmt: skip
    scores = unit_quality(
        units, segments, num_units=args.k, frame_hop_s=1.0 / label_rate_hz,
        exclude=(SIL,) if args.exclude_silence else (), strict=not args.skip_missing,
    )  # fmt: skip
    if args.out:
        atomic_write_json(args.out, scores)
    print(json.dumps(scores, indent=2))
    return 0

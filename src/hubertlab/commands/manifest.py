"""hubertlab manifest SRC OUT"""

from __future__ import annotations

import argparse

from hubertlab.commands.args import ranged_float
from hubertlab.data.build import build_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of audio (scanned recursively) or an uncompressed .tar")
    p.add_argument("out", help="manifest to write: .csv, .tsv (fairseq) or .jsonl")
    p.add_argument(
        "--valid-fraction", type=ranged_float(),  # (0, 1): checked by build_manifest (exit 1)
        help="also write OUT.train / OUT.valid",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    p.add_argument(
        "--speaker-level",
        type=int,
        help="split whole speakers: the folder at this depth (0 = first) names the speaker",
    )
    p.add_argument("--workers", type=int, default=4, help="threads reading headers")


def run(args: argparse.Namespace) -> int:
    result = build_manifest(
        args.src,
        args.out,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        speaker_level=args.speaker_level,
        workers=args.workers,
    )
    print(f"{result.num_rows} files -> {result.manifest}")
    if result.train is not None:
        print(f"train -> {result.train}\nvalid -> {result.valid}")
    if result.num_rejected:
        print(f"{result.num_rejected} files rejected, reasons in {result.report}")
    return 0

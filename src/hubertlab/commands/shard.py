"""hubertlab shard MANIFEST OUT_DIR --num-shards N [--units UNITS_JSONL]"""

from __future__ import annotations

import argparse

from hubertlab.curate.shards import write_shards
from hubertlab.data.manifest import read_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest (.csv, .tsv, .jsonl); span rows are fine")
    p.add_argument("out_dir", help="shard-%%06d.tar, index.csv, manifest.csv, shards.json")
    p.add_argument("--num-shards", type=int, required=True, help="number of tar shards")
    p.add_argument("--units", help="units.jsonl (or folder) of `hubertlab transcribe`")


def run(args: argparse.Namespace) -> int:
    if args.num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, got {args.num_shards}")
    manifest = read_manifest(args.manifest)
    units = None
    if args.units:
        # lazy: units.assign imports torch (seconds); sharding audio alone does without
        from hubertlab.units.assign import read_units

        units = read_units(args.units, manifest)
    index = write_shards(manifest, args.out_dir, args.num_shards, units=units)
    print(f"{args.out_dir}: {len(manifest)} utterances in {args.num_shards} shards -> {index}")
    return 0

"""hubertlab transcribe MANIFEST KMEANS OUT_DIR (--store S | --kind mfcc | --kind layer ...)"""

from __future__ import annotations

import argparse

from hubertlab.commands.features import (
    add_extractor_arguments,
    add_shard_arguments,
    build_extractor,
)
from hubertlab.units.assign import transcribe


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest of the utterances to label")
    p.add_argument("kmeans", help="k-means folder (from `hubertlab kmeans`)")
    p.add_argument("out_dir", help="folder for units.jsonl, units.km, dict.km.txt")
    p.add_argument("--store", help="precomputed feature store of this manifest")
    add_extractor_arguments(p, kind_required=False)
    add_shard_arguments(p)


def run(args: argparse.Namespace) -> int:
    if (args.store is None) == (args.kind is None):
        raise ValueError("give either --store or --kind (mfcc, or layer with --checkpoint/--layer)")
    source = args.store if args.store is not None else build_extractor(args)
    path = transcribe(args.manifest, args.kmeans, source, args.out_dir, args.shard, args.num_shards)
    print(f"shard {args.shard} of {args.num_shards} done -> {path}")
    return 0

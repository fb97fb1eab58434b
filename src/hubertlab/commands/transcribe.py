"""hubertlab transcribe MANIFEST KMEANS OUT_DIR (--store S | --kind mfcc | --kind layer ...)
hubertlab transcribe MANIFEST OUT_DIR --checkpoint SPIDR --codebook-layer L  (no k-means)"""

from __future__ import annotations

import argparse

from hubertlab.commands.features import (
    add_extractor_arguments,
    add_shard_arguments,
    build_extractor,
)
from hubertlab.units.assign import transcribe
from hubertlab.units.codebook import transcribe_codebook


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest of the utterances to label")
    p.add_argument("kmeans", help="k-means folder (from `hubertlab kmeans`); with "
                   "--codebook-layer: the output folder")  # fmt: skip
    p.add_argument("out_dir", nargs="?", help="folder for units.jsonl, units.km, dict.km.txt")
    p.add_argument(
        "--codebook-layer",
        type=int,
        help="SpidR/DinoSR --checkpoint: units = argmax of the codebook head at this layer",
    )
    p.add_argument("--store", help="precomputed feature store of this manifest")
    add_extractor_arguments(p, kind_required=False)
    add_shard_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.codebook_layer is not None:
        return _run_codebook(args)
    if args.out_dir is None:
        raise ValueError("give MANIFEST KMEANS OUT_DIR (or --codebook-layer, without k-means)")
    if (args.store is None) == (args.kind is None):
        raise ValueError("give either --store or --kind (mfcc, or layer with --checkpoint/--layer)")
    source = args.store if args.store is not None else build_extractor(args)
    path = transcribe(args.manifest, args.kmeans, source, args.out_dir, args.shard, args.num_shards)
    print(f"shard {args.shard} of {args.num_shards} done -> {path}")
    return 0


def _run_codebook(args: argparse.Namespace) -> int:
    if not args.checkpoint or args.out_dir is not None or args.store is not None:
        raise ValueError("--codebook-layer takes MANIFEST OUT_DIR --checkpoint (no k-means, store)")
    if args.intermediate:
        raise ValueError("--intermediate is for layer features; --codebook-layer reads the heads")
    path = transcribe_codebook(
        args.manifest, args.checkpoint, args.codebook_layer, args.kmeans, device=args.device
    )
    print(f"codebook units -> {path}")
    return 0

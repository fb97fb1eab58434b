"""hubertlab features MANIFEST OUT_DIR --kind mfcc|layer [--checkpoint C --layer L]"""

from __future__ import annotations

import argparse

import torch

from hubertlab.commands.args import ranged_float
from hubertlab.features.extractors import build_extractor as build
from hubertlab.features.store import DTYPES, FeatureStore, extract_features_to_store


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", type=int, default=0, help="which shard to run (0-based)")
    p.add_argument("--num-shards", type=int, default=1, help="shards the manifest is cut into")


def add_extractor_arguments(p: argparse.ArgumentParser, *, kind_required: bool) -> None:
    p.add_argument(
        "--kind", choices=("mfcc", "layer"), required=kind_required,
        help="39-d MFCC at 100 Hz, or the output of a model layer at 50 Hz",
    )  # fmt: skip
    p.add_argument("--checkpoint", help="model for --kind layer (ours, transformers, fairseq)")
    p.add_argument("--layer", type=int, help="transformer layer (1-based) for --kind layer")
    p.add_argument(
        "--intermediate", action="store_true",
        help="SpidR/DinoSR --kind layer: the layer's intermediate output (feed-forward before "
        "the residual, as the spidr package defines it) instead of its hidden state",
    )  # fmt: skip
    p.add_argument(
        "--cmvn", action="store_true",
        help="normalise each utterance's features to zero mean and unit variance (k-means "
        "targets that follow the speaker less; a k-means fitted on them needs them again)",
    )  # fmt: skip
    p.add_argument("--device", help="torch device for layer features (default: cuda if any)")
    p.add_argument("--bf16", action="store_true", help="layer features under bf16 autocast")
    seconds = ranged_float(low=0, low_open=True)
    p.add_argument("--chunk-seconds", type=seconds, default=30.0, help="long files in chunks")
    p.add_argument(
        "--context-seconds", type=ranged_float(low=0), default=2.0, help="context at chunk borders"
    )
    p.add_argument(
        "--threads", type=int,
        help="torch intra-op threads (1 is fastest for MFCC when other jobs load the CPU)",
    )  # fmt: skip


def build_extractor(args: argparse.Namespace):
    """The extractor named by --kind / --checkpoint / --layer (and --threads for torch)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return build(
        args.kind, args.checkpoint, args.layer, device=args.device,
        dtype="bfloat16" if args.bf16 else "float32",
        chunk_seconds=args.chunk_seconds, context_seconds=args.context_seconds,
        intermediate=args.intermediate, cmvn=args.cmvn,
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest (.csv, .tsv, .jsonl)")
    p.add_argument("out_dir", help="feature store folder (shards are written side by side)")
    add_extractor_arguments(p, kind_required=True)
    add_shard_arguments(p)
    p.add_argument("--dtype", choices=DTYPES, default="float16", help="storage precision")


def run(args: argparse.Namespace) -> int:
    index = extract_features_to_store(
        args.manifest, args.out_dir, build_extractor(args), args.shard, args.num_shards,
        args.dtype,
    )  # fmt: skip
    print(f"shard {args.shard} of {args.num_shards} done -> {index}")
    try:
        store = FeatureStore.open(args.out_dir)
    except ValueError:
        return 0  # other shards still running
    print(f"store complete: {len(store)} utterances, {store.num_frames} frames x {store.dim}")
    return 0

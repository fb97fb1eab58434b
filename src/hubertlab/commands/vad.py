"""hubertlab vad MANIFEST OUT_DIR [--backend silero|energy] [--shard i --num-shards N]"""

from __future__ import annotations

import argparse

from hubertlab.curate.speech import read_speech
from hubertlab.curate.vad import BACKENDS, run_vad


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="manifest (.csv, .tsv, .jsonl) of recordings")
    p.add_argument("out_dir", help="folder of speech segments (one JSONL per shard)")
    p.add_argument(
        "--backend", choices=BACKENDS, default="silero",
        help="silero-vad (default) or frame energy with an adaptive floor (no dependency)",
    )  # fmt: skip
    p.add_argument("--shard", type=int, default=0, help="which shard to run (0-based)")
    p.add_argument("--num-shards", type=int, default=1, help="shards the manifest is cut into")


def run(args: argparse.Namespace) -> int:
    path = run_vad(
        args.manifest, args.out_dir, backend=args.backend, shard=args.shard,
        num_shards=args.num_shards,
    )  # fmt: skip
    print(f"shard {args.shard} of {args.num_shards} done -> {path}")
    try:
        files = read_speech(args.out_dir)
    except ValueError:
        return 0  # other shards still running
    total = sum(f.duration_s for f in files)
    speech = sum(f.speech_s for f in files)
    print(f"all shards done: {len(files)} recordings, {total / 3600:.2f} h, "
          f"{speech / 3600:.2f} h speech ({speech / max(total, 1e-9):.0%})")  # fmt: skip
    return 0

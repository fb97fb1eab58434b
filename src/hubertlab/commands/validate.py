"""`hubertlab validate CKPT_DIR --config C`: validation metrics of every checkpoint."""

from __future__ import annotations

import argparse
import json

from hubertlab.config import read_toml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt_dir", help="a run folder or its checkpoints/ folder")
    parser.add_argument(
        "--config",
        required=True,
        help="the run's TOML config: pretraining (its [data] valid_manifest and valid_units) or "
        "fine-tuning (its dev set)",
    )
    parser.add_argument("--out", help="JSONL to write (default: CKPT_DIR/validation.jsonl)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def run(args: argparse.Namespace) -> int:
    # lazy: the training code imports torch (seconds); `hubertlab validate --help` does without
    from hubertlab.tasks.finetune_config import load_finetune_config
    from hubertlab.train.config import load_train_config  # lazy: torch, as above
    from hubertlab.train.distributed import pick_device  # lazy: torch, as above
    from hubertlab.train.validate import validate_checkpoints  # lazy: torch, as above

    finetuning = "finetune" in read_toml(args.config)
    cfg = (load_finetune_config if finetuning else load_train_config)(args.config)
    records = validate_checkpoints(
        args.ckpt_dir, cfg, args.out, device=pick_device(args.device), config_name=args.config
    )
    for record in records:
        print(json.dumps(record))
    return 0

"""`hubertlab finetune CONFIG.toml`: fine-tune an encoder for voice type classification (VTC)
or CTC speech recognition; resumes from the run's latest intact checkpoint. A VTC run then
tunes per-class thresholds on the dev set with its best checkpoint (OUT/thresholds.json)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML config (see configs/finetune-vtc.toml, -ctc.toml)")
    parser.add_argument("--out-dir", help="replace run.out_dir of the config")


def run(args: argparse.Namespace) -> int:
    # lazy: the training code imports torch (seconds); `hubertlab finetune --help` does without
    from hubertlab.tasks.finetune_config import load_finetune_config
    from hubertlab.train.loop import train  # lazy: torch, as above

    overrides = {"run": {"out_dir": args.out_dir}} if args.out_dir else None
    cfg = load_finetune_config(args.config, overrides)  # every check happens before any work
    result = train(cfg)
    if result.get("rank", 0) == 0:
        print(json.dumps({k: v for k, v in result.items() if k != "valid"}, default=str))
    return 0

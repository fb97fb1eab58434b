"""hubertlab pipeline CONFIG.toml"""

from __future__ import annotations

import argparse

from hubertlab.pipeline.run import run_pipeline


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline TOML (see configs/pipeline-example.toml)")
    p.add_argument(
        "--redo-stale",
        action="store_true",
        help="redo finished steps whose config or inputs changed (and everything downstream)",
    )


def run(args: argparse.Namespace) -> int:
    print(f"report: {run_pipeline(args.config, redo_stale=args.redo_stale)}")
    return 0

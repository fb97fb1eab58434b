"""hubertlab pipeline CONFIG.toml"""

from __future__ import annotations

import argparse

from hubertlab.pipeline.run import run_pipeline


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline TOML (see configs/pipeline-example.toml)")


def run(args: argparse.Namespace) -> int:
    print(f"report: {run_pipeline(args.config)}")
    return 0

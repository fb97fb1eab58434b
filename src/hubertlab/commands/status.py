"""hubertlab status CONFIG.toml"""

from __future__ import annotations

import argparse

from hubertlab.pipeline.run import pipeline_status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline TOML")


def run(args: argparse.Namespace) -> int:
    print(pipeline_status(args.config))
    return 0

"""hubertlab init AUDIO OUT: a pipeline config sized to your corpus and hardware."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hubertlab.commands.args import ranged_float
from hubertlab.init.corpus import init_run
from hubertlab.init.options import InitOptions
from hubertlab.init.sizing import Hardware
from hubertlab.tasks import DEFAULT_KIND, PRETRAINING_KINDS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", help="folder of audio (scanned recursively), an uncompressed .tar, "
                   "or a manifest (.csv, .tsv, .jsonl)")  # fmt: skip
    p.add_argument("out", help="folder for pipeline.toml, the manifests and the run")
    p.add_argument("--model", choices=PRETRAINING_KINDS, default=DEFAULT_KIND)
    p.add_argument("--gpus", type=int, help="GPUs per node (default: this machine's; 0: CPU)")
    p.add_argument("--nodes", type=int, default=1, help="nodes of the training job (--slurm)")
    p.add_argument("--slurm", action="store_true", help="run the steps as SLURM jobs")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--init-from", type=Path, help="continued pretraining from this checkpoint "
                   "(UPS: new 100-unit head, head-only warm-up epoch)")  # fmt: skip
    p.add_argument("--eval", choices=("none", "demo"), default="none",
                   help="demo: add the synthetic eSpeak evaluation corpus (ABX, PNMI)")  # fmt: skip
    p.add_argument("--eval-languages", default="en,fr,es",
                   help="languages of the synthetic corpus (of en, fr, es, de)")  # fmt: skip
    p.add_argument("--eval-minutes", type=ranged_float(low=0, low_open=True), default=10.0,
                   help="minutes of the synthetic evaluation corpus (the demo's: 10)")  # fmt: skip
    p.add_argument("--long-form", action="store_true",
                   help="long-form recordings: VAD and speech spans before the iterations "
                   "(assumed when the median is > 60 s)")  # fmt: skip
    p.add_argument("--hours", type=ranged_float(low=0, low_open=True),
                   help="the long-form path, UPS selection: a budget of 10 s chunks")  # fmt: skip
    p.add_argument("--lid", type=Path, help="with --hours: language-ID results (JSONL, ours or "
                   "UPS) that weight scarce languages")  # fmt: skip
    p.add_argument("--shards", type=int, default=0, help="long-form path: stream each "
                   "iteration's spans from this many tar shards (0: read the files)")  # fmt: skip
    p.add_argument("--steps", type=int, help="iteration 1's steps instead of the sized ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-measure", action="store_true", help="CPU: no step timed here for the estimate"
    )


def _gpus() -> int:
    return torch.cuda.device_count()


def run(args: argparse.Namespace) -> int:
    hardware = Hardware(
        gpus_per_node=_gpus() if args.gpus is None else args.gpus, nodes=args.nodes,
        slurm=args.slurm, partition=args.partition, account=args.account,
    )  # fmt: skip
    options = InitOptions(
        model=args.model, hardware=hardware, init_from=args.init_from, steps=args.steps,
        eval_demo=args.eval == "demo",
        eval_languages=tuple(s.strip() for s in args.eval_languages.split(",") if s.strip()),
        eval_minutes=args.eval_minutes, long_form=args.long_form, ups_hours=args.hours,
        lid=args.lid, shards=args.shards, seed=args.seed,
        measure_step=not args.no_measure,
    )  # fmt: skip
    config = init_run(args.audio, args.out, options)
    estimate = next(
        (line for line in config.read_text().splitlines() if "Expected wall time" in line), ""
    )
    print(estimate.lstrip("# "))
    print(f"config: {config}\nrun it:\n  hubertlab pipeline {config}")
    return 0

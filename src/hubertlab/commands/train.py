"""`hubertlab train CONFIG.toml`: pretrain in this process, under torchrun, or on SLURM."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML config (see configs/tiny-demo.toml)")
    parser.add_argument("--out-dir", help="replace run.out_dir of the config")
    slurm = parser.add_argument_group("SLURM (through submitit; requeues on timeout/preemption)")
    slurm.add_argument("--slurm", action="store_true", help="submit instead of running here")
    slurm.add_argument(
        "--local",
        action="store_true",
        help="with --slurm: use submitit's local executor (no cluster needed)",
    )
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus-per-node", type=int, default=1, help="one task per GPU")
    slurm.add_argument("--cpus-per-task", type=int, default=8)
    slurm.add_argument("--mem-gb", type=int, default=64, help="memory per node")
    slurm.add_argument("--time", type=int, default=24 * 60, help="minutes per job (requeued)")
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--account", default="")
    slurm.add_argument("--qos", default="")
    slurm.add_argument("--constraint", default="", help="node features, e.g. h100")
    slurm.add_argument("--wait", action="store_true", help="wait for the job and print its result")


def run(args: argparse.Namespace) -> int:
    # lazy: the training code imports torch (seconds); `hubertlab train --help` does without
    from hubertlab.train.config import load_train_config

    overrides = {"run": {"out_dir": args.out_dir}} if args.out_dir else None
    cfg = load_train_config(args.config, overrides)  # every check happens before any work
    if not args.slurm:
        from hubertlab.train.loop import train  # lazy: torch, as above

        result = train(cfg)
        if result.get("rank", 0) == 0:  # under torchrun, one line per job, not per rank
            print(json.dumps({k: v for k, v in result.items() if k != "valid"}, default=str))
        return 0
    from hubertlab.slurm import SlurmConfig, submit_training  # lazy: imports the training code

    try:
        slurm = SlurmConfig(
            partition=args.partition, account=args.account, qos=args.qos,
            constraint=args.constraint, time_min=args.time, cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"--slurm options: {e}") from None
    job = submit_training(cfg, slurm, local=args.local)
    print(f"submitted job {job.job_id}")
    if args.wait:
        print(json.dumps(job.result(), default=str))
    return 0

"""hubertlab demo [OUT] [--model hubert|spidr|dinosr|all], hubertlab demo --finetune [OUT]"""

from __future__ import annotations

import argparse

from hubertlab.commands.args import ranged_float
from hubertlab.demo.finetune import FinetuneDemoSettings, run_finetune_demo
from hubertlab.demo.recipe import MODEL_CHOICES, DemoSettings, check_model, run_demo
from hubertlab.tasks import DEFAULT_KIND


def add_arguments(p: argparse.ArgumentParser) -> None:
    positive = ranged_float(low=0, low_open=True)
    d = DemoSettings()
    p.add_argument("out", nargs="?", default="demo", help="output folder (default: demo)")
    p.add_argument("--train-minutes", type=positive, default=d.train_minutes)
    p.add_argument("--eval-minutes", type=positive, default=d.eval_minutes)
    p.add_argument("--speakers", type=int, default=d.speakers)
    p.add_argument("--steps", type=int, default=d.train_steps, help="iteration 1 training steps")
    p.add_argument(
        "--continue-steps",
        type=int,
        default=d.continue_steps,
        help="iteration 2 training steps (continued from iteration 1)",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_KIND,
        help=f"{', '.join(MODEL_CHOICES)}: which model(s) to train on the demo corpus (hubert: "
        "two iterations into OUT/run; spidr, dinosr: one into OUT/run-<model>; all: each in "
        "turn); any but hubert also writes OUT/models.md, the models of OUT side by side",
    )
    p.add_argument("--spidr-steps", type=int, default=d.spidr_steps, help="SpidR training steps")
    p.add_argument("--dinosr-steps", type=int, default=d.dinosr_steps, help="DinoSR training steps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="processes (0: one per core)")
    f = FinetuneDemoSettings()
    p.add_argument(
        "--finetune",
        action="store_true",
        help="fine-tune the pretrained demo model of OUT (VTC and CTC ASR) beside a random-init "
        "and an MFCC baseline; writes OUT/finetune/report.md",
    )
    p.add_argument(
        "--vtc-minutes", type=positive, default=f.vtc_minutes, help="VTC train + dev minutes (3:1)"
    )
    p.add_argument(
        "--vtc-test-minutes", type=positive, default=f.vtc_test_minutes, help="VTC test minutes"
    )
    p.add_argument(
        "--vtc-speakers", type=int, default=f.vtc_speakers, help="VTC speakers per class and split"
    )
    p.add_argument("--vtc-steps", type=int, default=f.vtc_steps, help="VTC fine-tuning steps")
    p.add_argument("--ctc-steps", type=int, default=f.ctc_steps, help="CTC fine-tuning steps")
    p.add_argument(
        "--pretrained",
        help="with --finetune: this model folder instead of OUT/run/iteration2/model",
    )


def run(args: argparse.Namespace) -> int:
    if args.finetune:
        settings = FinetuneDemoSettings(
            vtc_minutes=args.vtc_minutes,
            vtc_test_minutes=args.vtc_test_minutes,
            vtc_speakers=args.vtc_speakers,
            vtc_steps=args.vtc_steps,
            ctc_steps=args.ctc_steps,
            seed=args.seed,
            pretrained=args.pretrained,
        )
        print(f"report: {run_finetune_demo(args.out, settings)}")
        return 0
    check_model(args.model)
    settings = DemoSettings(
        train_minutes=args.train_minutes,
        eval_minutes=args.eval_minutes,
        speakers=args.speakers,
        train_steps=args.steps,
        continue_steps=args.continue_steps,
        spidr_steps=args.spidr_steps,
        dinosr_steps=args.dinosr_steps,
        seed=args.seed,
        workers=args.workers,
    )
    report = run_demo(args.out, settings, args.model)
    print(f"report: {report}")
    return 0

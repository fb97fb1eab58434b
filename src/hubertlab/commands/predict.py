"""`hubertlab predict CHECKPOINT MANIFEST OUT`: a fine-tuned model's output for every file of
a manifest: RTTM (VTC; recordings of any length, 4 s windows with 75 % overlap) or transcripts
(CTC, greedy decoding; TSV fileid<TAB>text)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from hubertlab.commands.args import ranged_float, ranged_int
from hubertlab.data.manifest import read_manifest
from hubertlab.data.rttm import write_rttm
from hubertlab.data.text import CharVocab, write_transcripts
from hubertlab.data.windows import load_recordings, window_and_hop
from hubertlab.finetune.inference import predict_turns, transcribe
from hubertlab.finetune.postprocess import DEFAULT_THRESHOLD, load_thresholds
from hubertlab.tasks import FINETUNING, TASKS
from hubertlab.tasks.vtc import THRESHOLDS_FILE
from hubertlab.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a fine-tuning checkpoint (OUT/checkpoints/step_*.pt)")
    p.add_argument("manifest", help="the recordings or utterances to run on")
    p.add_argument("out", help="RTTM (vtc) or transcripts TSV (ctc) to write")
    p.add_argument(
        "--thresholds",
        help="vtc: thresholds JSON (default: thresholds.json of the checkpoint's run, written "
        "by `hubertlab finetune`; 0.5 per class when there is none)",
    )
    p.add_argument(
        "--window-seconds",
        type=ranged_float(low=0.1, high=60),  # the range of the config's data.window_seconds
        help="vtc inference windows (default: the training windows of the checkpoint's run)",
    )
    p.add_argument(
        "--overlap",
        type=ranged_float(low=0, high=1, high_open=True),
        default=0.75,
        help="vtc: overlap of the windows",
    )
    seconds = ranged_float(low=0, high=3600)
    p.add_argument("--min-gap", type=seconds, default=0.1, help="vtc: bridge shorter gaps (s)")
    p.add_argument("--min-duration", type=seconds, default=0.1, help="vtc: drop shorter turns (s)")
    p.add_argument("--batch", type=ranged_int(low=1), default=16, help="vtc: windows per forward")
    p.add_argument(
        "--threads", type=ranged_int(low=0), default=0, help="torch threads (0: default)"
    )


def _thresholds(args: argparse.Namespace, classes: tuple[str, ...]):
    path = Path(args.thresholds) if args.thresholds else None
    if path is None:
        beside = Path(args.checkpoint).resolve().parent.parent / THRESHOLDS_FILE
        path = beside if beside.is_file() else None
    if path is None:
        log.warning("no thresholds file: %g for every class", DEFAULT_THRESHOLD)
        return np.full(len(classes), DEFAULT_THRESHOLD, dtype=np.float32)
    log.info("thresholds from %s", path)
    return load_thresholds(path, classes)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    task = TASKS.get(state.get("model_kind"))  # a task that predicts: fine-tuning's
    if task is None or task.predicts is None or "model_config" not in state:
        raise ValueError(
            f"{args.checkpoint}: not a fine-tuning checkpoint ({' or '.join(FINETUNING)})"
        )
    model = task.model_from_state(state)
    if task.predicts == "transcripts":
        texts = transcribe(model, read_manifest(args.manifest), CharVocab(model.cfg.outputs))
        write_transcripts(texts, args.out)
        print(f"{len(texts)} transcripts -> {args.out}")
        return 0
    classes = tuple(model.cfg.outputs)
    seconds = args.window_seconds
    if seconds is None:
        seconds = state.get("train_config", {}).get("data", {}).get("window_seconds", 4.0)
    window, hop = window_and_hop(seconds, args.overlap)
    turns = predict_turns(
        model, load_recordings(args.manifest, {}), _thresholds(args, classes), classes,
        min_gap_s=args.min_gap, min_duration_s=args.min_duration, window_samples=window,
        hop_samples=hop, batch_size=args.batch,
    )  # fmt: skip
    write_rttm(turns, args.out)
    print(f"{len(turns)} turns -> {args.out}")
    return 0

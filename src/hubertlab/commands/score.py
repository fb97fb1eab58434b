"""hubertlab score vtc --ref RTTM --hyp RTTM [--uem U] --out DIR
hubertlab score asr --ref TRANSCRIPTS --hyp TRANSCRIPTS --out DIR"""

from __future__ import annotations

import argparse

from hubertlab.data.rttm import VTC_CLASSES, read_rttm_files, read_uem
from hubertlab.data.text import normalize_text, read_transcripts
from hubertlab.evaluate.asr import error_rates, format_error_table, write_asr_report
from hubertlab.evaluate.classification import (
    detection_scores,
    format_detection_table,
    macro_f1,
    write_detection_report,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=("vtc", "asr"), help="what to score")
    p.add_argument(
        "--ref", required=True, help="vtc: RTTM file or folder; asr: transcripts (.tsv/.jsonl)"
    )
    p.add_argument("--hyp", required=True, help="the system's output, same format as --ref")
    p.add_argument("--out", required=True, help="folder for the table (.json, .md) and the PNG")
    p.add_argument("--uem", help="vtc: scored regions (UEM file); default: each file's extent")
    p.add_argument(
        "--classes",
        default=",".join(VTC_CLASSES),
        help="vtc: comma-separated labels to score (default KCHI,OCH,MAL,FEM)",
    )
    p.add_argument(
        "--no-normalize",
        action="store_true",
        help="asr: compare texts as written (default: lower case, no punctuation)",
    )
    p.add_argument(
        "--buckets",
        default="5,10,20",
        help="asr: upper bounds of the utterance-length buckets in words (default 5,10,20)",
    )


def _run_vtc(args: argparse.Namespace) -> int:
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    if not classes:
        raise ValueError("--classes must name at least one label")
    reference = read_rttm_files(args.ref, classes=classes)
    hypothesis = read_rttm_files(args.hyp, classes=classes)
    uem = read_uem(args.uem) if args.uem else None
    scores = detection_scores(reference, hypothesis, classes, uem=uem)
    if not any(s.defined for s in scores):
        regions = f"the UEM regions of {args.uem}" if args.uem else "the files"
        raise ValueError(
            f"{args.ref}: no reference or hypothesis speech of {', '.join(classes)} in "
            f"{regions}: nothing to score (a UEM outside the audio, or the wrong files?)"
        )
    source = {"reference": args.ref, "hypothesis": args.hyp, "uem": args.uem or ""}
    write_detection_report(scores, args.out, source=source)
    print(format_detection_table(scores), end="")
    absent = [s.label for s in scores if not s.defined]
    left_out = f" (left out, undefined: {', '.join(absent)})" if absent else ""
    print(f"macro F1 {100 * macro_f1(scores):.1f}%{left_out}; report in {args.out}")
    return 0


def _run_asr(args: argparse.Namespace) -> int:
    try:
        buckets = tuple(int(b) for b in args.buckets.split(",") if b.strip())
    except ValueError:
        raise ValueError(
            f"--buckets must be comma-separated integers, got {args.buckets!r}"
        ) from None
    if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
        raise ValueError(f"--buckets must be increasing integers >= 1, got {args.buckets!r}")
    rates = error_rates(
        read_transcripts(args.ref),
        read_transcripts(args.hyp),
        normalize=None if args.no_normalize else normalize_text,
        buckets=buckets,
    )
    write_asr_report(rates, args.out, source={"reference": args.ref, "hypothesis": args.hyp})
    print(format_error_table(rates), end="")
    print(f"WER {100 * rates[0].wer:.1f}%, CER {100 * rates[0].cer:.1f}%; report in {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _run_vtc(args) if args.task == "vtc" else _run_asr(args)

"""`hubertlab demo-corpus OUT [--vtc]`: synthesise the multi-speaker demo corpus with eSpeak NG
(with transcripts.tsv for the demo ASR task), or with --vtc the voice type classification
corpus (train/dev/test recordings with RTTM and UEM)."""

from __future__ import annotations

import argparse

from hubertlab.commands.args import ranged_float
from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus
from hubertlab.demo.longform import LongFormConfig, build_longform_corpus
from hubertlab.demo.transcripts import write_demo_transcripts
from hubertlab.demo.vtc import VtcCorpusConfig, build_vtc_corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    positive = ranged_float(low=0, low_open=True)
    parser.add_argument(
        "out", help="output folder (wav/, manifest.csv, phones.jsonl, abx.item, transcripts.tsv)"
    )
    # Finite here; > 0 is the corpus configs' check (exit 1, as tests/demo/test_corpus.py has it).
    parser.add_argument(
        "--minutes", type=ranged_float(), default=1.0, help="total audio (default 1)"
    )
    parser.add_argument("--speakers", type=int, default=8, help="number of speakers (default 8)")
    parser.add_argument(
        "--languages",
        default="en,fr,es",
        help="comma-separated, from en,fr,es,de (default en,fr,es)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--split",
        default="train",
        help="train or eval: eval uses sentences disjoint from train (default train)",
    )
    parser.add_argument("--clean", action="store_true", help="no channel EQ, reverb or noise")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--force", action="store_true", help="replace a corpus built with other settings"
    )
    parser.add_argument(
        "--vtc",
        action="store_true",
        help="build the voice type classification corpus instead (--minutes over all splits)",
    )
    parser.add_argument(
        "--long-form", action="store_true",
        help="long recordings (speech islands, silences, noise) with true speech segments",
    )  # fmt: skip
    parser.add_argument(
        "--hours", type=positive, default=0.1, help="--long-form: total audio (default 0.1)"
    )
    parser.add_argument(
        "--recording-minutes", type=positive,
        help="--vtc (default 3) or --long-form (default 10): length of each recording",
    )  # fmt: skip


def _run_vtc(args: argparse.Namespace) -> int:
    cfg = VtcCorpusConfig(
        minutes=args.minutes,
        recording_minutes=args.recording_minutes or 3.0,
        seed=args.seed,
        augment=not args.clean,
    )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    summary = build_vtc_corpus(args.out, cfg, workers=args.workers, force=args.force)
    for split, info in summary["splits"].items():
        turns = ", ".join(f"{label} {n}" for label, n in info["turns"].items())
        print(
            f"{args.out}/{split}: {info['recordings']} recordings, "
            f"{info['seconds'] / 60:.2f} min, turns: {turns}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.vtc:
        return _run_vtc(args)

    languages = tuple(s.strip() for s in args.languages.split(",") if s.strip())
    if args.long_form:
        return _run_long_form(args, languages)
    cfg = DemoCorpusConfig(
        minutes=args.minutes,
        speakers=args.speakers,
        languages=languages,
        seed=args.seed,
        split=args.split,
        augment=not args.clean,
    )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    summary = build_demo_corpus(args.out, cfg, workers=args.workers, force=args.force)
    write_demo_transcripts(args.out)
    print(
        f"{args.out}: {summary['num_files']} files, {summary['total_seconds'] / 60:.2f} min, "
        f"{len(summary['speakers'])} speakers, {len(summary['phones'])} phones, "
        f"{summary['num_abx_items']} ABX items"
    )
    return 0


def _run_long_form(args: argparse.Namespace, languages: tuple[str, ...]) -> int:
    cfg = LongFormConfig(
        hours=args.hours, recording_minutes=args.recording_minutes or 10.0, speakers=args.speakers,
        languages=languages, seed=args.seed,
    )  # fmt: skip
    summary = build_longform_corpus(args.out, cfg)
    print(
        f"{args.out}: {summary['num_files']} recordings, {summary['total_seconds'] / 3600:.2f} h, "
        f"{summary['speech_seconds'] / 3600:.2f} h speech (truth in speech.jsonl, speech.rttm)"
    )
    return 0

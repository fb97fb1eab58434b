"""hubertlab segments SPEECH MANIFEST OUT_MANIFEST: VAD segments -> training spans (policy)."""

from __future__ import annotations

import argparse

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.policy import SegmentPolicy, policy_spans
from hubertlab.curate.speech import read_speech
from hubertlab.data.manifest import read_manifest, relocate, write_manifest
from hubertlab.numbers import checked_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Float flags are checked (hubertlab.numbers) by run() before any work, exit 1.
    p.add_argument("speech", help="`hubertlab vad` folder, or a VAD JSONL (ours or UPS)")
    p.add_argument("manifest", help="the manifest the VAD ran on (recordings)")
    p.add_argument("out", help="span manifest to write (.csv or .jsonl)")
    p.add_argument("--merge-gap-seconds", type=float, default=2.0, help="merge closer segments")
    p.add_argument("--min-seconds", type=float, default=2.0, help="pad to, then drop under")
    p.add_argument("--max-seconds", type=float, default=30.0, help="split longer segments")


def run(args: argparse.Namespace) -> int:
    for flag in ("merge_gap_seconds", "min_seconds", "max_seconds"):
        checked_float(getattr(args, flag), "--" + flag.replace("_", "-"), low=0)
    policy = SegmentPolicy(args.merge_gap_seconds, args.min_seconds, args.max_seconds)
    manifest = read_manifest(args.manifest)
    rows = policy_spans(read_speech(args.speech), manifest, policy, args.speech)
    # Paths stay relative to the input manifest's folder.
    write_manifest(relocate(rows, manifest.root, args.out), args.out)
    hours = sum(r.num_samples for r in rows) / SAMPLE_RATE / 3600
    print(f"{args.out}: {len(rows)} spans, {hours:.2f} h")
    return 0

"""The `hubertlab` command: one subcommand per pipeline stage.

Subcommand modules are imported only when used, so `hubertlab manifest` does not pay for
importing the model code, and a missing optional extra only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module under hubertlab.commands, one-line help), in pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-corpus": ("demo_corpus", "synthesize the multi-speaker demo corpus with eSpeak NG"),
    "manifest": ("manifest", "scan a folder or tar of audio into a manifest"),
    "vad": ("vad", "speech segments of long recordings (silero-vad or energy), sharded"),
    "segments": ("segments", "VAD segments -> training spans (merge, pad, split; BabyHuBERT)"),
    "curate": ("curate", "pick speech-dense, language-balanced chunks up to an hour budget"),
    "shard": ("shard", "pack audio (+ units) into WebDataset tar shards with an index"),
    "features": ("features", "compute MFCC or layer features into a sharded store"),
    "kmeans": ("kmeans", "fit k-means on a feature store"),
    "transcribe": ("transcribe", "turn features into units for every utterance"),
    "unit-quality": ("unit_quality", "phone purity, cluster purity, PNMI of units"),
    "train": ("train", "masked-prediction pretraining from a TOML config"),
    "validate": ("validate", "validation loss/accuracy for a folder of checkpoints"),
    "abx": ("abx", "ABX discriminability of features, per layer"),
    "finetune": ("finetune", "fine-tune for voice type classification or CTC speech recognition"),
    "predict": ("predict", "RTTM or transcripts of a fine-tuned model for a manifest"),
    "score": ("score", "score VTC (detection F1 per class) or ASR (WER, CER) outputs"),
    "export": ("export", "export a checkpoint to another format (transformers)"),
    "init": ("init", "scan your audio and write a pipeline config sized to it and the hardware"),
    "pipeline": ("pipeline", "run the iterative HuBERT pipeline from a TOML config"),
    "status": ("status", "show which pipeline steps are done"),
    "demo": ("demo", "the whole loop on the built-in demo corpus, with a report"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(f"hubertlab.commands.{module}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubertlab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported to fill in its arguments.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_load(args.command).run(args) or 0)
    except (ValueError, OSError) as e:
        # User errors (bad input, bad config, a missing file, a full disk) get one clear line,
        # not a traceback (-v logs it).
        logging.getLogger("hubertlab").debug("error", exc_info=True)
        print(f"hubertlab {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

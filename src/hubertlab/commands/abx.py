"""hubertlab abx ITEM_FILE --manifest M (--checkpoint CKPT [--layers all|1,2,3] | --checkpoints
RUN_DIR [--every N] | --mfcc | --features DIR) --out DIR"""

from __future__ import annotations

import argparse

from hubertlab.commands.args import ranged_float
from hubertlab.constants import LABEL_RATE_HZ, MFCC_HOP, SAMPLE_RATE
from hubertlab.data.manifest import read_manifest
from hubertlab.evaluate import abx_curves, abx_sweep
from hubertlab.evaluate.abx import SPEAKER_MODES, AbxConfig, read_item_file
from hubertlab.evaluate.frame_checks import check_frame_shift
from hubertlab.features import transformers_layers as other
from hubertlab.models.checkpoint import from_pretrained


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("item_file", help="ZeroSpeech item file (#file onset offset #phone ...)")
    p.add_argument("--manifest", help="manifest of the audio (needed for --checkpoint, --mfcc)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model dir or checkpoint: ABX of its layers")
    source.add_argument(
        "--checkpoints",
        metavar="RUN_DIR",
        help="a training run (or its checkpoints/ folder): ABX of every saved checkpoint's "
        "layers, as learning curves against MFCC baselines (resumable)",
    )
    p.add_argument(
        "--every", type=int, help="with --checkpoints: steps that are multiples of N (+ the last)"
    )
    source.add_argument("--mfcc", action="store_true", help="ABX of 39-d MFCC (10 ms frames)")
    p.add_argument(
        "--cmvn",
        action="store_true",
        help="with --mfcc: per-utterance mean and variance normalisation (the strong "
        "baseline); with --checkpoint: the same normalisation of each layer's frames",
    )
    source.add_argument(
        "--features", help="feature store (hubertlab features) or folder of <fileid>.npy arrays"
    )
    p.add_argument("--layers", default="all", help="with --checkpoint(s): 'all' or e.g. 1,2,6")
    p.add_argument(
        "--intermediate",
        action="store_true",
        help="SpidR/DinoSR --checkpoint: score each layer's intermediate output (feed-forward "
        "before the residual, as the SpidR paper does) instead of its hidden state",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for abx.json, abx.md, abx.png (--checkpoints: abx_curves.json/.md/.png)",
    )
    p.add_argument(
        "--frame-shift",
        type=ranged_float(low=0, high=1, low_open=True),
        help="seconds per frame of a .npy folder (default 0.02); elsewhere the rate is known "
        "(model 0.02, MFCC 0.01, a store's store.json) and a contradicting value is an error",
    )
    p.add_argument("--speaker-mode", default="within,across", help="within, across or both")
    p.add_argument(
        "--max-tokens-per-group",
        type=int,
        help="subsample each (context, speaker, phone) group (reference: 10; default: all)",
    )
    p.add_argument(
        "--max-x-speakers", type=int, help="across: X speakers per A group (reference: 5)"
    )
    p.add_argument("--seed", type=int, default=3459, help="seed of the subsampling")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")


def _layers(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--layers must be 'all' or comma-separated integers, got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    modes = tuple(m.strip() for m in args.speaker_mode.split(",") if m.strip())
    if any(m not in SPEAKER_MODES for m in modes):
        raise ValueError(
            f"--speaker-mode must be within, across or both, got {args.speaker_mode!r}"
        )
    if args.cmvn and not (args.mfcc or args.checkpoint):
        raise ValueError("--cmvn goes with --mfcc or --checkpoint")
    if args.every is not None and not args.checkpoints:
        raise ValueError("--every goes with --checkpoints")
    if (args.checkpoint or args.checkpoints or args.mfcc) and not args.manifest:
        raise ValueError("--manifest is needed with --checkpoint(s) or --mfcc")
    source = {"item_file": args.item_file}
    name, features, layers, where = "features", None, None, ""
    if args.checkpoints:
        return _run_curves(args, modes)
    manifest = read_manifest(args.manifest) if args.manifest else None
    if args.checkpoint:
        layers = _layers(args.layers)
        source["checkpoint"] = args.checkpoint
        frame_shift_s = check_frame_shift(
            args.frame_shift, LABEL_RATE_HZ, f"the model {args.checkpoint} (its CNN hops 20 ms)"
        )
    else:
        fileids = {t.fileid for t in read_item_file(args.item_file)}
        if args.mfcc:
            name = source["features"] = "mfcc+cmvn" if args.cmvn else "mfcc"
            frame_shift_s = check_frame_shift(
                args.frame_shift, SAMPLE_RATE / MFCC_HOP, "MFCC (10 ms hops)"
            )
            features = abx_sweep.mfcc_features(manifest, fileids, args.item_file, cmvn=args.cmvn)
            where = f"MFCC of {args.manifest}"
        else:
            source["features"] = args.features
            features, frame_shift_s = abx_sweep.load_feature_dir(
                args.features, fileids, frame_shift_s=args.frame_shift, manifest=manifest
            )
            where = str(args.features)
    config = _config(args, modes, frame_shift_s)
    if features is None:
        if other.is_other_transformers_model(args.checkpoint):  # WavLM, wav2vec 2.0, ...
            model = other.TransformersEncoder(args.checkpoint)
        else:
            model = from_pretrained(args.checkpoint)
        scores = abx_sweep.abx_per_layer(
            model,
            manifest,
            args.item_file,
            layers=layers,
            config=config,
            source=args.checkpoint,
            intermediate=args.intermediate,
            cmvn=args.cmvn,
        )
    else:
        scores = [abx_sweep.abx_of_features(features, args.item_file, config, name, source=where)]
    best = abx_sweep.write_abx_report(scores, args.out, config=config, source=source)
    print(abx_sweep.format_abx_table(scores), end="")
    errors = ", ".join(f"{m} {r.error_percent:.2f}%" for m, r in best.results.items())
    print(f"best: {best.name} ({errors}); report in {args.out}")
    return 0


def _config(args: argparse.Namespace, modes: tuple[str, ...], frame_shift_s: float) -> AbxConfig:
    return AbxConfig(
        frame_shift_s=frame_shift_s,
        speaker_modes=modes,
        max_tokens_per_group=args.max_tokens_per_group,
        max_x_speakers=args.max_x_speakers,
        seed=args.seed,
        device=args.device,
    )


def _run_curves(args: argparse.Namespace, modes: tuple[str, ...]) -> int:
    """--checkpoints: ABX learning curves of a run (hubertlab.evaluate.abx_curves)."""
    frame_shift_s = check_frame_shift(
        args.frame_shift, LABEL_RATE_HZ, f"the run {args.checkpoints} (its CNN hops 20 ms)"
    )
    report = abx_curves.abx_curves(
        args.checkpoints,
        args.manifest,
        args.item_file,
        args.out,
        config=_config(args, modes, frame_shift_s),
        layers=_layers(args.layers),
        every=1 if args.every is None else args.every,
        intermediate=args.intermediate,
    )
    print("\n".join(abx_curves.summary_table(report)))
    best = report["best"]
    errors = ", ".join(f"{m} {best[m]:.2f}%" for m in ("within", "across") if best[m] is not None)
    print(f"best: step {best['step']}, layer {best['layer']} ({errors}); curves in {args.out}")
    return 0

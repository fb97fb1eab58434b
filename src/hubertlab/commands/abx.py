"""hubertlab abx ITEM_FILE --manifest M (--checkpoint CKPT [--layers all|1,2,3] | --mfcc |
--features DIR) --out DIR"""

from __future__ import annotations

import argparse

from hubertlab.evaluate.abx import SPEAKER_MODES, AbxConfig, read_item_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("item_file", help="ZeroSpeech item file (#file onset offset #phone ...)")
    p.add_argument("--manifest", help="manifest of the audio (needed for --checkpoint, --mfcc)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model dir or checkpoint: ABX of its layers")
    source.add_argument("--mfcc", action="store_true", help="ABX of 39-d MFCC (10 ms frames)")
    source.add_argument(
        "--features", help="feature store (hubertlab features) or folder of <fileid>.npy arrays"
    )
    p.add_argument("--layers", default="all", help="with --checkpoint: 'all' or e.g. 1,2,6")
    p.add_argument("--out", required=True, help="folder for abx.json, abx.md, abx.png")
    p.add_argument(
        "--frame-shift",
        type=float,
        help="seconds per frame (default: 0.01 with --mfcc, a store's own rate, else 0.02)",
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
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate import abx_sweep

    modes = tuple(m.strip() for m in args.speaker_mode.split(",") if m.strip())
    if any(m not in SPEAKER_MODES for m in modes):
        raise ValueError(
            f"--speaker-mode must be within, across or both, got {args.speaker_mode!r}"
        )
    if (args.checkpoint or args.mfcc) and not args.manifest:
        raise ValueError("--manifest is needed with --checkpoint or --mfcc")
    source = {"item_file": args.item_file}
    name, features, layers, frame_shift_s = "features", None, None, args.frame_shift
    if args.checkpoint:
        layers = _layers(args.layers)
        source["checkpoint"] = args.checkpoint
        frame_shift_s = frame_shift_s or 0.02
    else:
        fileids = {t.fileid for t in read_item_file(args.item_file)}
        if args.mfcc:
            name = source["features"] = "mfcc"
            manifest = read_manifest(args.manifest)
            features = abx_sweep.mfcc_features(manifest, fileids, args.item_file)
            frame_shift_s = frame_shift_s or 0.01
        else:
            source["features"] = args.features
            features, store_shift_s = abx_sweep.load_feature_dir(args.features, fileids)
            frame_shift_s = frame_shift_s or store_shift_s or 0.02
    config = AbxConfig(
        frame_shift_s=frame_shift_s,
        speaker_modes=modes,
        max_tokens_per_group=args.max_tokens_per_group,
        max_x_speakers=args.max_x_speakers,
        seed=args.seed,
        device=args.device,
    )
    if features is None:
        from hubertlab.models.checkpoint import from_pretrained

        model = from_pretrained(args.checkpoint)
        manifest = read_manifest(args.manifest)
        scores = abx_sweep.abx_per_layer(
            model, manifest, args.item_file, layers=layers, config=config
        )
    else:
        scores = [abx_sweep.abx_of_features(features, args.item_file, config, name)]
    best = abx_sweep.write_abx_report(scores, args.out, config=config, source=source)
    print(abx_sweep.format_abx_table(scores), end="")
    errors = ", ".join(f"{m} {r.error_percent:.2f}%" for m, r in best.results.items())
    print(f"best: {best.name} ({errors}); report in {args.out}")
    return 0

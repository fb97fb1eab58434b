"""Train the tiny model on the demo corpus with MFCC k-means units and report validation loss
and masked accuracy before/after (the end-to-end check of train/loop.py).

    python benchmarks/train_tiny_demo.py WORK_DIR [--minutes 20] [--steps 800] [--k 100]

Builds WORK_DIR/demo_train and WORK_DIR/demo_eval (hubertlab.demo.corpus) if missing,
39-d MFCC (hubertlab.features.mfcc) at 100 Hz, k-means fitted on the training MFCC frames
only (sklearn), units at 50 Hz (MFCC frame 2k covers CNN frame k), then `train(cfg)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from hubertlab.constants import num_frames
from hubertlab.data.manifest import read_manifest
from hubertlab.models.mfcc import mfcc_of_waveform
from hubertlab.train.config import load_train_config
from hubertlab.train.loop import train


def build_corpora(work: Path, minutes: float) -> None:
    from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus

    build_demo_corpus(work / "demo_train", DemoCorpusConfig(minutes=minutes, split="train"))
    build_demo_corpus(work / "demo_eval", DemoCorpusConfig(minutes=minutes / 6, split="eval"))


def mfcc_per_file(manifest_path: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(manifest_path)
    return {row.fileid: mfcc_of_waveform(manifest.read_audio(i)) for i, row in enumerate(manifest)}


def write_units(feats: dict[str, np.ndarray], kmeans, manifest_path: Path, out: Path) -> None:
    manifest = read_manifest(manifest_path)
    with open(out, "w", encoding="utf-8") as f:
        for row in manifest:
            units = kmeans.predict(feats[row.fileid].astype(np.float32))[::2]
            units = units[: num_frames(row.num_samples)]
            if len(units) != num_frames(row.num_samples):
                raise ValueError(
                    f"{row.fileid}: {len(units)} units for {num_frames(row.num_samples)} frames"
                )
            f.write(json.dumps({"fileid": row.fileid, "units": units.tolist()}) + "\n")


def make_units(work: Path, k: int) -> None:
    from sklearn.cluster import MiniBatchKMeans

    train_feats = mfcc_per_file(work / "demo_train" / "manifest.csv")
    eval_feats = mfcc_per_file(work / "demo_eval" / "manifest.csv")
    frames = np.concatenate(list(train_feats.values()))
    kmeans = MiniBatchKMeans(k, batch_size=10_000, n_init=3, max_iter=100, random_state=0)
    kmeans.fit(frames)
    # One quantizer for both splits (REFERENCE.md section 8).
    write_units(train_feats, kmeans, work / "demo_train" / "manifest.csv", work / "train.km.jsonl")
    write_units(eval_feats, kmeans, work / "demo_eval" / "manifest.csv", work / "eval.km.jsonl")


CONFIG = """
[model]
preset = "tiny"
[data]
train_manifest = "{work}/demo_train/manifest.csv"
train_units = ["{work}/train.km.jsonl"]
valid_manifest = "{work}/demo_eval/manifest.csv"
valid_units = ["{work}/eval.km.jsonl"]
num_units = [{k}]
min_crop_seconds = 1.0
max_crop_seconds = 3.0
batch_seconds = 24.0
num_workers = 1
[optim]
lr = 1e-3
warmup_fraction = 0.08
schedule = "cosine"
max_steps = {steps}
[run]
out_dir = "{work}/run"
precision = "bf16"
log_every = 25
ckpt_every = 200
valid_every = 100
progress_bar = false
num_threads = {threads}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work.resolve()
    if not (work / "demo_eval" / "manifest.csv").is_file():
        build_corpora(work, args.minutes)
    if not (work / "eval.km.jsonl").is_file():
        make_units(work, args.k)
    config = work / "tiny-demo-mfcc.toml"
    config.write_text(CONFIG.format(work=work, k=args.k, steps=args.steps, threads=args.threads))
    start = time.perf_counter()
    result = train(load_train_config(config))
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").open()]
    valid = [r for r in records if r["split"] == "valid"]
    print(f"trained {result['step']} steps in {time.perf_counter() - start:.0f} s")
    print(f"chance masked accuracy: {1 / args.k:.3f}")
    for r in valid:
        print(
            f"step {r['step']:>5}: valid loss {r['loss']:.3f}  masked acc "
            f"{r['masked_acc']:.3f}  unmasked acc {r['unmasked_acc']:.3f}"
        )


if __name__ == "__main__":
    main()

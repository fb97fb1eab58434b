"""VTC inference speed on a long recording (default 1 h): our inference (4 s windows with 75 %
overlap, read by seek, frame probabilities averaged, thresholds, turns; finetune.inference
.predict_turns) beside its peer, the same encoder and head run window by window without overlap
handling (consecutive windows of 199 frames, probabilities concatenated, nothing averaged).
Overlap costs ~4x the forward passes by design; the ratio shows what the rest adds. Wall and
CPU time are reported: on a shared machine CPU time measures the work.

    python benchmarks/bench_vtc.py [--minutes 60] [--preset demo|tiny|base] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from hubertlab.constants import FRAME_HOP, SAMPLE_RATE
from hubertlab.data.rttm import VTC_CLASSES
from hubertlab.data.windows import Recording, read_window
from hubertlab.finetune.inference import predict_turns
from hubertlab.models.config import BACKBONE_PRESETS
from hubertlab.models.finetune import FinetuneModelConfig, build_finetune_model

WINDOW = 4 * SAMPLE_RATE


def backbone(preset: str):
    import dataclasses

    if preset == "demo":  # the demo's pretrained model: tiny with a 64-channel CNN
        return dataclasses.replace(BACKBONE_PRESETS["tiny"], conv_channels=(64,) * 7)
    return BACKBONE_PRESETS[preset]


def write_recording(path: Path, seconds: float) -> int:
    """A long noisy recording with tone bursts, written in one-minute blocks (PCM16)."""
    rng = np.random.default_rng(0)
    total = int(seconds * SAMPLE_RATE)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        for start in range(0, total, 60 * SAMPLE_RATE):
            n = min(60 * SAMPLE_RATE, total - start)
            t = np.arange(start, start + n) / SAMPLE_RATE
            tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.1 * t) > 0)
            f.write((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return total


@torch.no_grad()
def peer(model, path: Path, num_samples: int, batch_size: int) -> int:
    """Window by window, no overlap: 199-frame windows back to back; returns frames."""
    hop = 199 * FRAME_HOP
    starts = list(range(0, num_samples - WINDOW + 1, hop))
    frames = 0
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        wavs = torch.stack([torch.from_numpy(read_window(path, s, WINDOW)) for s in chunk])
        logits, _ = model(wavs)
        frames += torch.sigmoid(logits.float()).numpy().reshape(-1, logits.shape[-1]).shape[0]
    return frames


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--preset", default="demo", choices=["demo", "tiny", "base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = FinetuneModelConfig(task="vtc", outputs=VTC_CLASSES, backbone=backbone(args.preset))
    model = build_finetune_model(cfg).eval()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        num_samples = write_recording(path, seconds)
        recording = Recording("long", path, num_samples)
        thresholds = np.full(len(VTC_CLASSES), 0.5, dtype=np.float32)
        peer(model, path, min(num_samples, 60 * SAMPLE_RATE), args.batch)  # warm-up, untimed
        turns, ours_wall, ours_cpu = timed(
            lambda: predict_turns(
                model, [recording], thresholds, VTC_CLASSES, batch_size=args.batch
            )  # fmt: skip
        )
        _, peer_wall, peer_cpu = timed(lambda: peer(model, path, num_samples, args.batch))
    print(f"{args.minutes:.0f} min recording, preset {args.preset}, {args.threads} threads")
    print(f"ours (75 % overlap, averaged, {len(turns)} turns): {seconds / ours_wall:.1f}x real "
          f"time (wall {ours_wall:.1f} s, cpu {ours_cpu:.1f} s)")  # fmt: skip
    print(f"peer (no overlap): {seconds / peer_wall:.1f}x real time (wall {peer_wall:.1f} s, "
          f"cpu {peer_cpu:.1f} s)")  # fmt: skip
    print(f"ratio ours / peer wall time: {ours_wall / peer_wall:.2f} "
          f"(cpu {ours_cpu / peer_cpu:.2f}; 4 windows per frame instead of 1)")  # fmt: skip


if __name__ == "__main__":
    main()

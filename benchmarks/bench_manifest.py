"""Files/s of `hubertlab manifest` on a folder of 10,000 short audio files, one of them corrupt,
beside the fairseq-style peer (a sequential glob + soundfile.info loop, as wav2vec_manifest.py
does) measured in the same run. Target: >= 2,000 files/s on the 2-core machine.

    python benchmarks/bench_manifest.py [--files 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import glob
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertlab.data.build import build_manifest
from hubertlab.data.manifest import read_manifest


def make_corpus(root: Path, num_files: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(num_files):
        num_samples = int(rng.integers(4_000, 16_000))  # 0.25-1 s
        wav = (0.1 * rng.standard_normal(num_samples)).astype(np.float32)
        path = root / f"spk{i % 50:02d}" / f"utt{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), wav, 16000, subtype="PCM_16")
    (root / "spk00" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 4)


def fairseq_style(root: Path) -> int:
    count = 0
    for path in glob.iglob(str(root / "**/*.wav"), recursive=True):
        try:
            count += sf.info(path).frames > 0
        except RuntimeError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "audio"
        make_corpus(root, args.files)
        total = args.files + 1
        ours, peer = [], []
        for r in range(args.repeats):
            start = time.perf_counter()
            result = build_manifest(root, Path(tmp) / f"m{r}.csv")
            ours.append(total / (time.perf_counter() - start))
            start = time.perf_counter()
            fairseq_style(root)
            peer.append(total / (time.perf_counter() - start))
        assert len(read_manifest(Path(tmp) / "m0.csv")) == args.files
        print(
            f"corrupt file reported, the rest went on: {result.num_rows} rows, "
            f"{result.num_rejected} rejected"
        )
        print(result.report.read_text().strip())
        # The CLI end to end (process start, imports) on the same folder.
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hubertlab.cli", "manifest", str(root), f"{tmp}/cli.csv"],
            check=True,
            capture_output=True,
        )
        cli = total / (time.perf_counter() - start)
    med_ours, med_peer = statistics.median(ours), statistics.median(peer)
    print(f"hubertlab manifest (library): {med_ours:,.0f} files/s (median of {args.repeats})")
    print(f"hubertlab manifest (CLI, incl. startup): {cli:,.0f} files/s")
    print(f"fairseq-style glob + sf.info loop: {med_peer:,.0f} files/s")
    print(
        f"ratio ours/peer: {med_ours / med_peer:.2f}x; target >= 2,000 files/s: "
        f"{'met' if med_ours >= 2000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

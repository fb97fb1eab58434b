"""Decoding throughput (audio-s/s) of reading tar shards with 2 DataLoader workers (WebDataset,
and our own read_shard), beside the peer: the same audio as individual FLAC files read with
read_audio by 2 DataLoader workers, measured in the same run.

The audio: 10 s chunks of a long-form demo recording, written both as files and as shards.

    python benchmarks/bench_shards.py [--minutes 20] [--num-shards 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.shards import read_shard, write_shards
from hubertlab.data.audio import read_audio
from hubertlab.data.manifest import ManifestRow, read_manifest, write_manifest
from hubertlab.demo.longform import LongFormConfig, build_longform_corpus


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        return len(read_audio(self.paths[i]))


class _OurShards(torch.utils.data.IterableDataset):
    def __init__(self, shards: list[Path]) -> None:
        self.shards = shards

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for shard in mine:
            for sample in read_shard(shard):
                yield len(sample["audio"])


def _webdataset(shards: list[Path]):
    import webdataset as wds

    def decode(sample):
        return len(sf.read(io.BytesIO(sample["flac"]), dtype="float32")[0])

    return wds.WebDataset(
        [str(s) for s in shards], nodesplitter=wds.split_by_node, shardshuffle=False
    ).map(decode)


def _timed(dataset, workers: int = 2) -> tuple[float, int]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    start = time.perf_counter()
    total = sum(int(n) for n in loader)
    return time.perf_counter() - start, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = LongFormConfig(hours=args.minutes / 60, recording_minutes=min(args.minutes, 10.0))
        build_longform_corpus(root / "lf", cfg)
        recordings = read_manifest(root / "lf/manifest.csv")
        chunk = 10 * SAMPLE_RATE
        spans = [
            ManifestRow(f"{r.fileid}_{s}", r.path, chunk, start=s)
            for r in recordings for s in range(0, r.num_samples - chunk + 1, chunk)
        ]  # fmt: skip
        write_manifest(spans, root / "lf/spans.csv")
        spans_manifest = read_manifest(root / "lf/spans.csv")
        paths = []
        for i, row in enumerate(spans_manifest):
            paths.append(root / "files" / f"{i:06d}.flac")
            paths[-1].parent.mkdir(exist_ok=True)
            sf.write(paths[-1], row.read_audio(spans_manifest.root), SAMPLE_RATE, subtype="PCM_16")
        write_shards(spans_manifest, root / "shards", args.num_shards)
        shards = sorted((root / "shards").glob("shard-*.tar"))
        audio_s = len(spans) * chunk / SAMPLE_RATE
        print(f"{len(spans)} chunks of 10 s ({audio_s / 60:.1f} min), {len(shards)} shards, "
              f"2 DataLoader workers, best of {args.repeats}")  # fmt: skip
        results = {}
        for name, make in (
            ("individual FLAC files (peer)", lambda: _Files(paths)),
            ("webdataset over our shards", lambda: _webdataset(shards)),
            ("read_shard over our shards", lambda: _OurShards(shards)),
        ):
            best = min(_timed(make()) for _ in range(args.repeats))
            if best[1] != len(spans) * chunk:
                raise SystemExit(f"{name}: read {best[1]} samples, expected {len(spans) * chunk}")
            results[name] = audio_s / best[0]
        peer = results["individual FLAC files (peer)"]
        for name, speed in results.items():
            print(f"{name:32s} {speed:9.0f} audio-s/s  ({speed / peer:.2f} x the files)")


if __name__ == "__main__":
    main()

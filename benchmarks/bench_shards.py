"""Decoding throughput (audio-s/s) of reading tar shards with 2 DataLoader workers, beside the
peer: the same audio as individual FLAC files read with read_audio by 2 DataLoader workers,
measured in the same run. Shards are read by WebDataset, by our read_shard, and by the
streaming training loader (hubertlab.data.stream: shuffle buffer, decoding, crops, span masks,
batches); files also by the file training loader (manifest, length buckets, the same
collator, 80 s batches of whole 10 s chunks for both). The two batch loaders are timed over one
epoch of audio after their first batch (the steady rate of a long run); the wait for the first
batch (workers starting, the shuffle buffer filling) is printed beside.

The audio: 10 s chunks of a long-form demo recording, written both as files and as shards.

    python benchmarks/bench_shards.py [--minutes 20] [--num-shards 4] [--repeats 2]
                                      [--shuffle-buffer 100]
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
from hubertlab.curate.shards import write_shards
from hubertlab.data.audio import read_audio
from hubertlab.data.dataset import CropCollator, ResumableLoader, UnitDataset
from hubertlab.data.manifest import ManifestRow, read_manifest, write_manifest
from hubertlab.data.masking import MaskConfig
from hubertlab.data.sampler import BucketBatchSampler
from hubertlab.data.stream import expand_shards
from hubertlab.data.stream_loader import StreamBatches
from hubertlab.data.tar_shards import read_shard
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


CHUNK = 10 * SAMPLE_RATE
BATCH_SAMPLES = 8 * CHUNK  # 80 s batches of whole 10 s chunks: every decoded sample is counted


def _collator() -> CropCollator:
    return CropCollator(max_samples=CHUNK, seed=0, mask=MaskConfig(), min_samples=SAMPLE_RATE)


def _timed_batches(batches, total_samples: int) -> tuple[float, int, float]:
    """(seconds, samples) of the batches holding `total_samples` of audio (one epoch) that come
    after the first batch, and the seconds until that first one (workers starting, a shuffle
    buffer filling): the steady rate of a long run, and what it pays once."""
    it = iter(batches)
    start = time.perf_counter()
    next(it)
    first = time.perf_counter()
    seen = 0
    for batch in it:
        seen += int(batch.lengths.sum())
        if seen >= total_samples:
            break
    return time.perf_counter() - first, seen, first - start


def _stream(shards: list[Path], buffer: int) -> StreamBatches:
    urls = expand_shards(str(shards[0].parent))
    return StreamBatches(urls, _collator(), batch_samples=BATCH_SAMPLES, num_unit_sets=0,
                         buffer_size=buffer, num_workers=2)  # fmt: skip


def _file_loader(manifest: Path) -> ResumableLoader:
    rows = read_manifest(manifest)
    dataset = UnitDataset(rows, [])
    lengths = [min(dataset.num_samples(i), CHUNK) for i in range(len(dataset))]
    sampler = BucketBatchSampler(lengths, BATCH_SAMPLES, seed=0)
    return ResumableLoader(dataset, sampler, _collator(), num_workers=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shuffle-buffer", type=int, default=100)
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
        paths, file_rows = [], []
        for i, row in enumerate(spans_manifest):
            paths.append(root / "files" / f"{i:06d}.flac")
            paths[-1].parent.mkdir(exist_ok=True)
            sf.write(paths[-1], row.read_audio(spans_manifest.root), SAMPLE_RATE, subtype="PCM_16")
            file_rows.append(ManifestRow(row.fileid, f"{i:06d}.flac", row.num_samples))
        write_manifest(file_rows, root / "files" / "manifest.csv")
        write_shards(spans_manifest, root / "shards", args.num_shards)
        shards = sorted((root / "shards").glob("shard-*.tar"))
        audio_s = len(spans) * chunk / SAMPLE_RATE
        print(f"{len(spans)} chunks of 10 s ({audio_s / 60:.1f} min), {len(shards)} shards, "
              f"2 DataLoader workers, best of {args.repeats} rounds")  # fmt: skip
        readers = {
            "individual FLAC files (peer)": lambda: _Files(paths),
            "webdataset over our shards": lambda: _webdataset(shards),
            "read_shard over our shards": lambda: _OurShards(shards),
        }
        loaders = {
            "file training loader (batches)": lambda: _file_loader(root / "files/manifest.csv"),
            f"stream loader (buffer {args.shuffle_buffer})":
                lambda: _stream(shards, args.shuffle_buffer),
        }  # fmt: skip
        results, startup = {}, {}
        # Rounds over every reader in turn: a load that drifts hits them all alike.
        for _ in range(args.repeats):
            for name, make in readers.items():
                seconds, samples = _timed(make())
                if samples != len(spans) * chunk:
                    raise SystemExit(f"{name}: read {samples} samples, not {len(spans) * chunk}")
                results[name] = max(results.get(name, 0.0), audio_s / seconds)
            for name, make in loaders.items():
                seconds, samples, first = _timed_batches(make(), len(spans) * chunk)
                if samples / SAMPLE_RATE / seconds > results.get(name, 0.0):
                    results[name], startup[name] = samples / SAMPLE_RATE / seconds, first
        peer = results["individual FLAC files (peer)"]
        for name, speed in results.items():
            first = f", first batch after {startup[name]:.2f} s" if name in startup else ""
            print(f"{name:34s} {speed:9.0f} audio-s/s  ({speed / peer:.2f} x the files{first})")
        stream = results[f"stream loader (buffer {args.shuffle_buffer})"]
        print(f"stream loader / file training loader: "
              f"{stream / results['file training loader (batches)']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

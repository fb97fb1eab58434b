"""Unit pipeline speed and memory, each beside a peer measured in the same run.

1. MFCC frames/s (39-d with deltas) on demo-corpus speech vs kaldi-native-fbank's OnlineMfcc
   (13 cepstra only, no deltas: the peer does less work). torchaudio (~400k frames/s with its
   kaldi recipe on this machine, REFERENCE.md section 9) is not installed here. Measured in
   one process (1 and all torch threads), and as the pipeline's local executor runs feature
   shards: one process per core, one torch thread each, each on its shard of the files.
   Target: >= 1,000,000 frames/s on the machine.
2. k-means, k=500, on 500k x 39 frames: MFCC of the demo corpus, tiled with Gaussian
   perturbation (0.1 x the per-dimension std) up to 500k frames. Ours (k-means++ then full
   Lloyd, faiss assignments) beside sklearn MiniBatchKMeans with fairseq's settings (batch
   10,000, n_init 20, max_iter 100, tol 0, max_no_improvement 100, reassignment_ratio 0,
   k-means++). Inertia = mean squared distance to the nearest centroid over all 500k frames.
   Targets: inertia no worse, >= 3x faster.
3. Peak resident memory (ru_maxrss of a fresh process) of a k-means fit (k=500, all
   utterances, max_memory_gb=1, 3 Lloyd iterations) on a 2M x 768 float16 store (~3 GB on
   disk; a Gaussian mixture of 500 components). Target: < 2 GiB.

    python benchmarks/bench_units.py [--kmeans-frames 500000] [--big-frames 2000000]
    python benchmarks/bench_units.py --only-mfcc [--mfcc-rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hubertlab.data.manifest import read_manifest
from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus
from hubertlab.features.store import write_store
from hubertlab.models.mfcc import mfcc_num_frames, mfcc_of_waveform
from hubertlab.units.kmeans import fit_kmeans, nearest_centroids


def best_rate(fn, frames: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return frames / best


def bench_mfcc(waves: list[np.ndarray], rounds: int = 5) -> None:
    def ours():
        for w in waves:
            mfcc_of_waveform(w)

    def peer():
        _peer_mfcc(waves)

    frames = sum(len(mfcc_of_waveform(w)) for w in waves)
    print(f"MFCC on {frames} frames ({len(waves)} files of demo speech, one call per file):")
    threads = torch.get_num_threads()
    # One intra-op thread is the robust setting when other jobs load the CPU (OpenMP threads
    # spin-wait on each other); all threads are fastest on an idle machine. Other jobs may
    # share the machine: runs are interleaved (ours at each thread count, then the peer) and
    # the median and best of the rounds are printed, the ratio from the medians.
    counts = sorted({1, threads})
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for n in counts:
            torch.set_num_threads(n)
            rates.setdefault(f"ours{n}", []).append(best_rate(ours, frames, repeats=1))
        torch.set_num_threads(threads)
        rates.setdefault("peer", []).append(best_rate(peer, frames, repeats=1))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    for n in counts:
        best = max(rates[f"ours{n}"])
        print(f"  hubertlab, {n} torch thread(s) (39-d, deltas) {med[f'ours{n}']:12,.0f} frames/s "
              f"(median of {rounds}; best {best:,.0f}; x{med[f'ours{n}'] / med['peer']:.1f} "
              "kaldi-native-fbank)")  # fmt: skip
    best = max(rates["peer"])
    print(f"  kaldi-native-fbank (13 cepstra, 1 thread)  {med['peer']:12,.0f} frames/s "
          f"(median of {rounds}; best {best:,.0f})")  # fmt: skip
    print("  torchaudio: not installed (its kaldi recipe: ~400k frames/s, REFERENCE.md 9)")


_SHARD_WAVES: list[np.ndarray] = []


def _load_waves(manifest_path: str) -> None:
    """Pool initializer: one torch thread (as `run_shards` sets it), all files in memory."""
    torch.set_num_threads(1)
    manifest = read_manifest(manifest_path)
    _SHARD_WAVES[:] = [manifest.read_audio(i) for i in range(len(manifest))]


def _shard_mfcc(shard: int, num_shards: int, peer: bool) -> int:
    """MFCC of every num_shards-th file from `shard` on; returns the frames computed."""
    waves = _SHARD_WAVES[shard::num_shards]
    if peer:
        _peer_mfcc(waves)
    else:
        for w in waves:
            mfcc_of_waveform(w)
    return sum(mfcc_num_frames(len(w)) for w in waves)


def _peer_mfcc(waves: list[np.ndarray]) -> None:
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.use_energy = False
    for w in waves:
        m = knf.OnlineMfcc(opts)
        m.accept_waveform(16000, w)  # computes the frames; not copying them out
        m.input_finished()
        m.get_frame(m.num_frames_ready - 1)


def bench_mfcc_processes(manifest_path: Path, rounds: int) -> None:
    """Frames/s of one process per core over the shards, ours and the peer interleaved."""
    workers = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_load_waves, initargs=(str(manifest_path),)
    ) as pool:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(rounds + 1):  # round 0 warms up (imports, allocator, FFT plans)
            for peer in (False, True):
                start = time.perf_counter()
                futures = [pool.submit(_shard_mfcc, s, workers, peer) for s in range(workers)]
                frames = sum(f.result() for f in futures)
                if round_:
                    rates[peer].append(frames / (time.perf_counter() - start))
    ours, peer = (float(np.median(rates[p])) for p in (False, True))
    print(f"  hubertlab, {workers} processes x 1 thread (as the pipeline) {ours:12,.0f} frames/s "
          f"(median of {rounds}; best {max(rates[False]):,.0f}; "
          f"x{ours / peer:.1f} kaldi-native-fbank)")  # fmt: skip
    print(f"  kaldi-native-fbank, {workers} processes x 1 thread     {peer:12,.0f} frames/s "
          f"(median of {rounds}; best {max(rates[True]):,.0f})")  # fmt: skip
    print(f"  target >= 1,000,000 frames/s on this machine: {'met' if ours >= 1e6 else 'NOT met'}")


def bench_kmeans(feats: np.ndarray, work: Path, num_frames: int) -> None:
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    reps = -(-num_frames // len(feats))
    noise = 0.1 * feats.std(0)
    x = np.concatenate(
        [feats + noise * rng.standard_normal(feats.shape).astype(np.float32) for _ in range(reps)]
    )[:num_frames]
    x = x.astype(np.float32)
    utts = ((f"u{i:05d}", x[s : s + 500]) for i, s in enumerate(range(0, len(x), 500)))
    write_store(work / "kmeans_store", utts, dim=x.shape[1], dtype="float32", frame_rate_hz=100)
    start = time.perf_counter()
    ours = fit_kmeans(work / "kmeans_store", 500, fraction=1.0, seed=0)
    t_ours = time.perf_counter() - start
    inertia_ours = float(nearest_centroids(x, ours.centroids)[1].mean(dtype=np.float64))
    start = time.perf_counter()
    peer = MiniBatchKMeans(
        n_clusters=500, init="k-means++", max_iter=100, batch_size=10_000, tol=0.0,
        max_no_improvement=100, n_init=20, reassignment_ratio=0.0, compute_labels=False,
        random_state=0,
    ).fit(x)  # fmt: skip
    t_peer = time.perf_counter() - start
    inertia_peer = float(nearest_centroids(x, peer.cluster_centers_)[1].mean(dtype=np.float64))
    print(f"k-means k=500 on {len(x)} x {x.shape[1]} (demo MFCC, tiled + perturbed):")
    print(f"  hubertlab          {t_ours:7.1f} s  inertia/frame {inertia_ours:.3f}  "
          f"({ours.meta['iterations']} Lloyd iterations)")  # fmt: skip
    print(f"  sklearn MiniBatch  {t_peer:7.1f} s  inertia/frame {inertia_peer:.3f}  "
          f"({peer.n_steps_} mini-batch steps)")  # fmt: skip
    print(f"  speed-up x{t_peer / t_ours:.1f}, inertia ratio {inertia_ours / inertia_peer:.4f}")


PEAK_SCRIPT = """
import resource, sys, time
from hubertlab.units.kmeans import fit_kmeans
start = time.perf_counter()
m = fit_kmeans(sys.argv[1], 500, fraction=1.0, max_memory_gb=1.0, max_iter=3, seed=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak, m.meta["fitted_on_frames"], time.perf_counter() - start)
"""


def bench_peak_memory(work: Path, num_frames: int, dim: int = 768) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (500, dim)).astype(np.float32)

    def utterances():
        for i, s in enumerate(range(0, num_frames, 500)):
            n = min(500, num_frames - s)
            labels = rng.integers(500, size=n)
            noise = rng.standard_normal((n, dim), dtype=np.float32) * 0.5
            yield f"u{i:05d}", (centers[labels] + noise).astype(np.float16)

    store = work / "big_store"
    write_store(store, utterances(), dim=dim, dtype="float16")
    size_gb = sum(p.stat().st_size for p in store.iterdir()) / 2**30
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(store)], capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    peak, fitted, seconds = int(out[0]), int(out[1]), float(out[2])
    print(f"k-means k=500 on a {num_frames} x {dim} float16 store ({size_gb:.2f} GiB on disk):")
    print(f"  peak RSS {peak / 2**30:.2f} GiB (max_memory_gb=1.0; {fitted} frames in the fit "
          f"buffer; 3 Lloyd iterations in {seconds:.0f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-minutes", type=float, default=10.0)
    parser.add_argument("--kmeans-frames", type=int, default=500_000)
    parser.add_argument("--big-frames", type=int, default=2_000_000)
    parser.add_argument("--work", help="folder for the corpus and stores (default: temp)")
    parser.add_argument("--skip", nargs="*", default=(), choices=("mfcc", "kmeans", "memory"))
    parser.add_argument("--only-mfcc", action="store_true", help="run the MFCC part alone")
    parser.add_argument("--mfcc-rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    if args.only_mfcc:
        args.skip = ("kmeans", "memory")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        build_demo_corpus(work / "corpus", DemoCorpusConfig(minutes=args.corpus_minutes))
        manifest = read_manifest(work / "corpus" / "manifest.csv")
        waves = [manifest.read_audio(i) for i in range(len(manifest))]
        if "mfcc" not in args.skip:
            bench_mfcc(waves, args.mfcc_rounds)
            bench_mfcc_processes(work / "corpus" / "manifest.csv", args.mfcc_rounds)
        if "kmeans" not in args.skip:
            feats = np.concatenate([mfcc_of_waveform(w) for w in waves])
            bench_kmeans(feats, work, args.kmeans_frames)
        if "memory" not in args.skip:
            bench_peak_memory(work, args.big_frames)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share the CPU)")


if __name__ == "__main__":
    main()

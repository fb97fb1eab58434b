"""k-means on a feature store with memory bounded by a setting, not by the data size.

Recipe: pick a seeded fraction of the utterances (fairseq fits on ~10%), draw a uniform sample
of their frames into a buffer of at most `max_frames` rows (kept in the store dtype), seed the
centroids with greedy k-means++ on a subsample, then run full Lloyd passes over the buffer in
chunks (nearest centroid by faiss on CPU, or a torch matmul argmin on GPU / without faiss).
Frames are read with plain file reads, so a store far larger than RAM is never mapped whole.

Saved as centroids.npy + kmeans.json (no pickle). One quantizer labels train and valid alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hubertlab.features.extractors import require_finite
from hubertlab.features.store import FeatureStore
from hubertlab.fileio import atomic_open, atomic_write_json

log = logging.getLogger(__name__)

CENTROIDS_NAME = "centroids.npy"
META_NAME = "kmeans.json"
_CHUNK_FRAMES = 32_768  # rows converted to float32 at once during a pass
_MIN_INIT_FRAMES = 10_000
_WARM_FRAMES_PER_CLUSTER = 64


def _faiss():
    try:
        import faiss  # lazy: optional (hubertlab[units]); without it k-means runs in torch
    except ImportError:
        return None
    return faiss


def _num_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def chunk_workers(device: str = "cpu") -> Iterator[ThreadPoolExecutor | None]:
    """Threads that each search whole chunks with faiss on one OpenMP thread (the setting is
    per thread; faiss releases the GIL). Coarse-grained parallelism keeps every core busy and
    does not collapse when other jobs load the CPU, as one search's OpenMP threads
    spin-waiting on each other do (5x slower on the shared 2-core machine). None off-CPU."""
    faiss = _faiss()
    if device != "cpu" or faiss is None:
        yield None
        return
    with ThreadPoolExecutor(
        _num_workers(), initializer=faiss.omp_set_num_threads, initargs=(1,)
    ) as pool:
        yield pool


def nearest_centroids(
    frames: np.ndarray, centroids: np.ndarray, *, device: str = "cpu", use_faiss: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Index (int64) and squared distance (float32) of the nearest centroid for every row of
    `frames` (n, dim); faiss on CPU when installed, else a chunked torch matmul argmin."""
    x = np.ascontiguousarray(frames, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    faiss = _faiss() if use_faiss else None
    if device == "cpu" and faiss is not None:
        index = faiss.IndexFlatL2(c.shape[1])
        index.add(c)
        dist, idx = index.search(x, 1)
        return idx[:, 0].astype(np.int64), np.maximum(dist[:, 0], 0.0)
    ct = torch.from_numpy(c).to(device)
    c_sq = ct.square().sum(1)  # (k,)
    idx_out, dist_out = np.empty(len(x), np.int64), np.empty(len(x), np.float32)
    for s in range(0, len(x), _CHUNK_FRAMES):
        xt = torch.from_numpy(x[s : s + _CHUNK_FRAMES]).to(device)
        d = torch.addmm(c_sq, xt, ct.T, alpha=-2.0)  # (chunk, k): |c|^2 - 2 x.c
        best, arg = d.min(1)
        best = (best + xt.square().sum(1)).clamp_min_(0)
        idx_out[s : s + len(xt)] = arg.cpu().numpy()
        dist_out[s : s + len(xt)] = best.cpu().numpy()
    return idx_out, dist_out


@dataclass
class KMeansModel:
    """Centroids (k, dim) float32 plus JSON metadata (k, dim, feature settings, inertia...)."""

    centroids: np.ndarray
    meta: dict = field(default_factory=dict)
    source: str = ""  # the folder it was loaded from, for messages

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def predict(self, frames: np.ndarray | torch.Tensor, *, device: str = "cpu") -> np.ndarray:
        """Unit id (int64) of every frame (n, dim)."""
        frames = frames.float().cpu().numpy() if isinstance(frames, torch.Tensor) else frames
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"frames must be (n, {self.dim}), got {tuple(frames.shape)}")
        units = np.empty(len(frames), np.int64)
        starts = range(0, len(frames), _CHUNK_FRAMES)

        def assign(start: int) -> np.ndarray:
            chunk = frames[start : start + _CHUNK_FRAMES]
            return nearest_centroids(chunk, self.centroids, device=device)[0]

        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(chunk_workers(device)) if len(starts) > 1 else None
            for start, chunk_units in zip(
                starts, pool.map(assign, starts) if pool else map(assign, starts), strict=True
            ):
                units[start : start + len(chunk_units)] = chunk_units
        return units

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / CENTROIDS_NAME, "wb") as f:
            np.save(f, self.centroids.astype(np.float32), allow_pickle=False)
        atomic_write_json(out / META_NAME, {**self.meta, "k": self.k, "dim": self.dim})
        return out

    @classmethod
    def load(cls, path: str | Path) -> KMeansModel:
        """Load from a folder written by `save` (or its centroids.npy); a damaged file gives
        a ValueError naming it."""
        path = Path(path)
        folder = path.parent if path.name == CENTROIDS_NAME else path
        centroids_path = folder / CENTROIDS_NAME
        if not centroids_path.is_file():
            raise FileNotFoundError(f"no k-means model (missing {CENTROIDS_NAME}) in {folder}")
        try:
            centroids = np.load(centroids_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{centroids_path}: not a readable .npy array ({e})") from None
        if (
            not isinstance(centroids, np.ndarray)
            or centroids.ndim != 2
            or min(centroids.shape) < 1
            or not np.issubdtype(centroids.dtype, np.floating)
        ):
            raise ValueError(
                f"{centroids_path}: expected a (k, dim) float array, got "
                f"{getattr(centroids, 'shape', None)} {getattr(centroids, 'dtype', '')}"
            )
        if not np.isfinite(centroids).all():
            raise ValueError(f"{centroids_path}: centroids contain NaN or infinite values")
        meta_path = folder / META_NAME
        meta = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
            if not isinstance(meta, dict):
                raise ValueError(f"{meta_path}: expected a JSON object")
            for key, n in (("k", centroids.shape[0]), ("dim", centroids.shape[1])):
                if meta.get(key, n) != n:
                    raise ValueError(
                        f"{meta_path}: {key}={meta[key]}, but {centroids_path} holds "
                        f"{centroids.shape[0]} centroids of dim {centroids.shape[1]}"
                    )
        return cls(centroids.astype(np.float32), meta, str(folder))


def frames_budget(dim: int, itemsize: int, max_memory_gb: float, k: int = 1) -> int:
    """Rows of the fit buffer that fit in `max_memory_gb` beside the working arrays: a float32
    chunk per worker, the k-means++ and warm-start samples (float32)."""
    init_frames = max(_MIN_INIT_FRAMES, 20 * k)
    working_frames = _num_workers() * _CHUNK_FRAMES + init_frames + _WARM_FRAMES_PER_CLUSTER * k
    free = max_memory_gb * 2**30 - working_frames * dim * 4
    if free <= 0:
        raise ValueError(f"max_memory_gb={max_memory_gb} is too small for dim {dim} and k {k}")
    return int(free // (dim * itemsize))


def sample_frames(
    store: FeatureStore, fileids: list[str], max_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """A uniform sample (without replacement) of at most `max_frames` frames of `fileids`, in
    store order and store dtype, read one utterance at a time (selection sampling: the count
    from each utterance is hypergeometric given what is left)."""
    total = sum(store.length(f) for f in fileids)
    want = min(total, max_frames)
    buffer = np.empty((want, store.dim), dtype=store.dtype)
    filled, remaining = 0, total
    for fileid in fileids:
        n = store.length(fileid)
        need = want - filled
        if need == 0:
            break
        if n == 0:
            continue
        if need == remaining:
            take = n
        elif remaining < 10**9:
            take = int(rng.hypergeometric(n, remaining - n, need))
        else:  # numpy's hypergeometric needs < 1e9 items; the binomial is exact enough there
            take = min(n, need, int(rng.binomial(need, n / remaining)))
        remaining -= n
        if take == 0:
            continue
        frames = store.read_frames(fileid)
        require_finite(frames, f"{store.root}: {fileid}")
        if take < n:
            frames = frames[np.sort(rng.choice(n, take, replace=False))]
        buffer[filled : filled + take] = frames
        filled += take
    return buffer[:filled]


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (2 + ln k candidates per step, keep the one that lowers the potential
    most), as sklearn does. x: (n, dim) float32 -> (k, dim)."""
    n = len(x)
    trials = 2 + int(math.log(k))
    x_sq = np.einsum("ij,ij->i", x, x)
    centers = np.empty((k, x.shape[1]), np.float32)
    first = int(rng.integers(n))
    centers[0] = x[first]
    closest = np.maximum(x_sq - 2 * x @ x[first] + x_sq[first], 0)
    for c in range(1, k):
        cumulative = np.cumsum(closest, dtype=np.float64)
        if cumulative[-1] <= 0:  # fewer distinct points than k: any point will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1])
            cand = np.minimum(cand, n - 1)
        d = np.maximum(x_sq[:, None] - 2 * x @ x[cand].T + x_sq[cand][None], 0)  # (n, trials)
        d = np.minimum(d, closest[:, None])
        best = int(np.argmin(d.sum(0, dtype=np.float64)))
        centers[c] = x[cand[best]]
        closest = d[:, best]
    return centers


def _cluster_sums(x: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster float64 sums (k, dim) and counts (k,) of the rows of x; numpy only
    (torch's OpenMP pool alternating with faiss's makes both spin-wait) and without a
    float64 copy of the chunk."""
    sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=k) for j in range(x.shape[1])])
    return sums.T, np.bincount(idx, minlength=k).astype(np.float64)


def _lloyd_pass(buffer: np.ndarray, centroids: np.ndarray, device: str, pool=None):
    """One assignment pass: per-cluster sums and counts, and the inertia (sum of squared
    distances) of the current centroids. Chunks may run in `pool`; their statistics are
    added in chunk order, so the result does not depend on the thread timing."""
    k, dim = centroids.shape

    def chunk_stats(start: int):
        x = np.asarray(buffer[start : start + chunk], dtype=np.float32)
        idx, dist = nearest_centroids(x, centroids, device=device)
        return (*_cluster_sums(x, idx, k), float(dist.sum(dtype=np.float64)))

    # At least 8 chunks (so small buffers use every worker too); the size depends only on the
    # buffer, so the float64 sums add up in the same order on any machine.
    chunk = min(_CHUNK_FRAMES, max(4096, -(-len(buffer) // 8)))
    starts = range(0, len(buffer), chunk)
    sums, counts, inertia = np.zeros((k, dim)), np.zeros(k), 0.0
    for chunk_sums, chunk_counts, chunk_inertia in (
        pool.map(chunk_stats, starts) if pool else map(chunk_stats, starts)
    ):
        sums += chunk_sums
        counts += chunk_counts
        inertia += chunk_inertia
    return sums, counts, inertia


def lloyd(
    buffer: np.ndarray,
    centroids: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    device: str,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[np.ndarray, float, int]:
    """Full Lloyd passes until the relative inertia gain drops below `tol`. Empty clusters
    take half of the largest cluster (its centroid nudged apart), as faiss does."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    centroids = centroids.astype(np.float32).copy()
    previous = math.inf
    for it in range(1, max_iter + 1):
        sums, counts, inertia = _lloyd_pass(buffer, centroids, device, pool)
        for c in np.nonzero(counts == 0)[0]:
            big = int(np.argmax(counts))
            sums[c], counts[c] = sums[big] / 2, counts[big] / 2
            sums[big], counts[big] = sums[big] / 2, counts[big] / 2
            sums[c] *= 1 + 1e-4
            sums[big] *= 1 - 1e-4
        centroids = (sums / np.maximum(counts, 1e-12)[:, None]).astype(np.float32)
        gain = (previous - inertia) / max(inertia, 1e-30)
        log.debug("k-means iteration %d: inertia %.6g", it, inertia)
        if gain < tol:
            break
        previous = inertia
    _, _, inertia = _lloyd_pass(buffer, centroids, device, pool)
    return centroids, inertia, it


def check_fit_options(
    *, k: int, fraction: float, max_memory_gb: float, max_frames: int | None, max_iter: int,
    tol: float, init_frames: int | None,
) -> None:  # fmt: skip
    """ValueError naming the first option out of range (before any data is read)."""
    checks = [
        ("k", k, k >= 2, ">= 2"),
        ("fraction", fraction, 0 < fraction <= 1, "in (0, 1]"),
        ("max_memory_gb", max_memory_gb, max_memory_gb > 0, "> 0"),
        ("max_frames", max_frames, max_frames is None or max_frames >= 1, ">= 1"),
        ("max_iter", max_iter, max_iter >= 1, ">= 1"),
        ("tol", tol, tol >= 0, ">= 0"),
        ("init_frames", init_frames, init_frames is None or init_frames >= 1, ">= 1"),
    ]
    for name, value, ok, wanted in checks:
        # `not ok` also catches NaN, which fails every comparison
        if not ok:
            raise ValueError(f"{name} must be {wanted}, got {value}")


def fit_kmeans(
    store: FeatureStore | str | Path,
    k: int,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    max_memory_gb: float = 1.0,
    max_frames: int | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    init_frames: int | None = None,
    device: str | None = None,
) -> KMeansModel:
    """Fit k-means with `k` clusters on a seeded `fraction` of the store's utterances.

    At most `max_frames` frames (default: what `max_memory_gb` holds) are sampled for the fit.
    k-means++ seeds from `init_frames` of them (default max(10,000, 20 k)); Lloyd runs to a
    relative inertia gain of tol / 10 on 64 k of them, then to `tol` on all. `device`: "cpu"
    (faiss when installed) or a torch device such as "cuda" (default: cuda if available)."""
    check_fit_options(
        k=k, fraction=fraction, max_memory_gb=max_memory_gb, max_frames=max_frames,
        max_iter=max_iter, tol=tol, init_frames=init_frames,
    )  # fmt: skip
    if isinstance(store, str | Path):
        store = FeatureStore.open(store)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    fileids = store.fileids
    if not fileids:
        raise ValueError(f"{store.root}: the store holds no utterances")
    num_utts = max(1, round(fraction * len(fileids)))
    chosen = np.sort(rng.choice(len(fileids), num_utts, replace=False))
    fit_ids = [fileids[i] for i in chosen]
    cap = frames_budget(store.dim, store.dtype.itemsize, max_memory_gb, k)
    cap = cap if max_frames is None else min(cap, max_frames)
    buffer = sample_frames(store, fit_ids, cap, rng)
    if len(buffer) < k:
        raise ValueError(
            f"k={k} exceeds the {len(buffer)} frames sampled for fitting ({num_utts} of "
            f"{len(fileids)} utterances of {store.root}); lower k or raise --fraction"
        )
    init_n = min(len(buffer), init_frames or max(_MIN_INIT_FRAMES, 20 * k))
    init_idx = np.sort(rng.choice(len(buffer), init_n, replace=False))
    init = kmeans_plus_plus(np.asarray(buffer[init_idx], dtype=np.float32), k, rng)
    # Warm start: Lloyd to a tighter tolerance on a subsample first (cheap passes), so the
    # full passes over the buffer only polish: Lloyd's long tail of tiny gains is paid on
    # 64 frames per cluster instead of on the whole buffer.
    warm_n = _WARM_FRAMES_PER_CLUSTER * k
    with chunk_workers(device) as pool:
        if len(buffer) > 2 * warm_n:
            warm_idx = np.sort(rng.choice(len(buffer), warm_n, replace=False))
            warm = np.asarray(buffer[warm_idx], dtype=np.float32)
            init, _, warm_iterations = lloyd(
                warm, init, max_iter=max_iter, tol=tol / 10, device=device, pool=pool
            )
            del warm
            log.debug("warm start: %d iterations on %d frames", warm_iterations, warm_n)
        centroids, inertia, iterations = lloyd(
            buffer, init, max_iter=max_iter, tol=tol, device=device, pool=pool
        )
    seconds = time.perf_counter() - start
    log.info(
        "k-means k=%d on %d frames of %d utterances: %d iterations, inertia/frame %.4f, %.1f s",
        k, len(buffer), num_utts, iterations, inertia / len(buffer), seconds,
    )  # fmt: skip
    meta = {
        "feature": store.meta.get("extractor", {}),
        "store": str(store.root),
        "seed": seed,
        "fraction": fraction,
        "fitted_on_utterances": num_utts,
        "fitted_on_frames": len(buffer),
        "inertia": inertia,
        "inertia_per_frame": inertia / len(buffer),
        "iterations": iterations,
        "init": "k-means++",
        "seconds": round(seconds, 2),
    }
    return KMeansModel(centroids, meta)

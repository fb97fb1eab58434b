"""k-means: recovers clusters, seeded and reproducible, bounded memory, plain-array files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubertlab.features.store import FeatureStore, write_store
from hubertlab.units.kmeans import (
    KMeansModel,
    fit_kmeans,
    frames_budget,
    kmeans_plus_plus,
    nearest_centroids,
    sample_frames,
)


def blobs(num_utts=60, frames=50, k=8, dim=6, seed=0):
    """Utterances of frames drawn around k well-separated centres."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, dim)).astype(np.float32)
    utts = {}
    for u in range(num_utts):
        labels = rng.integers(k, size=frames)
        utts[f"u{u:03d}"] = centers[labels] + rng.normal(0, 0.3, (frames, dim)).astype(np.float32)
    return centers, utts


@pytest.fixture
def blob_store(tmp_path):
    centers, utts = blobs()
    write_store(tmp_path / "store", utts.items(), dim=6, dtype="float32")
    return centers, FeatureStore.open(tmp_path / "store")


def test_recovers_clusters(blob_store):
    centers, store = blob_store
    model = fit_kmeans(store, 8, fraction=0.5, seed=1)
    # every true centre has a centroid within the noise
    dist = np.linalg.norm(centers[:, None] - model.centroids[None], axis=-1).min(1)
    assert dist.max() < 0.3
    assert model.meta["inertia_per_frame"] < 6 * 0.3**2 * 1.3
    assert model.meta["fitted_on_utterances"] == 30
    assert model.meta["fitted_on_frames"] == 30 * 50


def test_seeded_and_reproducible(blob_store):
    _, store = blob_store
    a = fit_kmeans(store, 12, fraction=0.3, seed=5)
    b = fit_kmeans(store, 12, fraction=0.3, seed=5)
    c = fit_kmeans(store, 12, fraction=0.3, seed=6)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.centroids, c.centroids)


def test_save_load_predict(blob_store, tmp_path):
    _, store = blob_store
    model = fit_kmeans(store, 8, fraction=1.0)
    model.save(tmp_path / "km")
    assert sorted(p.name for p in (tmp_path / "km").iterdir()) == ["centroids.npy", "kmeans.json"]
    meta = json.loads((tmp_path / "km" / "kmeans.json").read_text())
    for key in ("k", "dim", "feature", "inertia", "seed", "fitted_on_frames"):
        assert key in meta
    assert np.load(tmp_path / "km" / "centroids.npy", allow_pickle=False).shape == (8, 6)
    loaded = KMeansModel.load(tmp_path / "km")
    frames = store[store.fileids[0]]
    np.testing.assert_array_equal(loaded.predict(frames), model.predict(frames))
    assert loaded.predict(frames).dtype == np.int64
    with pytest.raises(ValueError, match=r"frames must be \(n, 6\)"):
        loaded.predict(np.zeros((3, 5), np.float32))
    with pytest.raises(FileNotFoundError, match="centroids.npy"):
        KMeansModel.load(tmp_path / "nothing")


def test_memory_bound_caps_the_fit_buffer(blob_store):
    _, store = blob_store
    model = fit_kmeans(store, 8, fraction=1.0, max_frames=700)
    assert model.meta["fitted_on_frames"] == 700
    # the budget grows with the memory setting and shrinks with the frame size
    assert frames_budget(768, 2, 2.0) > frames_budget(768, 2, 1.0) > frames_budget(768, 4, 1.0)
    with pytest.raises(ValueError, match="max_memory_gb"):
        frames_budget(768, 2, 0.01)


def test_sample_frames_uniform_and_exact(blob_store):
    _, store = blob_store
    rng = np.random.default_rng(0)
    sample = sample_frames(store, store.fileids, 1000, rng)
    assert sample.shape == (1000, 6)
    everything = np.concatenate([store[f] for f in store.fileids])
    # rows are real frames, without repeats
    rows = {r.tobytes() for r in everything}
    assert all(r.tobytes() in rows for r in sample)
    assert len({r.tobytes() for r in sample}) == 1000
    assert len(sample_frames(store, store.fileids[:2], 10**6, rng)) == 100  # all of them


def test_faiss_and_torch_assignments_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 16)).astype(np.float32)
    c = rng.normal(size=(40, 16)).astype(np.float32)
    i1, d1 = nearest_centroids(x, c)
    i2, d2 = nearest_centroids(x, c, use_faiss=False)
    exact = ((x[:, None] - c[None]) ** 2).sum(-1)
    assert (i1 == exact.argmin(1)).mean() > 0.999 and (i2 == exact.argmin(1)).mean() > 0.999
    np.testing.assert_allclose(d1, exact.min(1), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(d2, exact.min(1), rtol=1e-3, atol=1e-3)


def test_kmeans_plus_plus_spreads_seeds():
    centers, utts = blobs(num_utts=10)
    x = np.concatenate(list(utts.values()))
    seeds = kmeans_plus_plus(x, 8, np.random.default_rng(0))
    # one seed near each blob (plain random seeding would often miss one)
    assert np.linalg.norm(centers[:, None] - seeds[None], axis=-1).min(1).max() < 2.0


def test_bad_input(blob_store, tmp_path):
    _, store = blob_store
    with pytest.raises(ValueError, match=r"k=5000 exceeds the 300 frames"):
        fit_kmeans(store, 5000, fraction=0.1)
    with pytest.raises(ValueError, match="fraction"):
        fit_kmeans(store, 8, fraction=0.0)
    with pytest.raises(ValueError, match="k must be"):
        fit_kmeans(store, 0)
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        fit_kmeans(tmp_path / "missing", 8)

"""ABX: agreement with zerospeech-libriabx2 (frozen numbers), DTW path lengths, bad input, the
per-layer sweep and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hubertlab.cli import main
from hubertlab.data.alignments import AbxItem
from hubertlab.evaluate.abx import AbxConfig, abx_scores, prepare_abx, read_item_file
from hubertlab.evaluate.abx_dtw import _length_bins, dtw_batch

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "abx"
HEADER = "#file onset offset #phone prev-phone next-phone speaker"


def _fixture_features() -> dict[str, np.ndarray]:
    with np.load(ASSETS / "demo_mfcc.npz") as npz:
        return {key.replace("__", "/"): npz[key] for key in npz.files}


def test_matches_reference_on_demo_mfcc():
    """Frozen by benchmarks/make_abx_fixture.py from zerospeech-libriabx2 on the same features."""
    expected = json.loads((ASSETS / "expected.json").read_text())["no_sampling"]
    config = AbxConfig(frame_shift_s=0.01)
    results = abx_scores(_fixture_features(), ASSETS / "demo.item", config)
    for mode in ("within", "across"):
        assert results[mode].error_percent == pytest.approx(expected[mode], abs=0.05), mode
        assert results[mode].num_triplets > 1000
        assert results[mode].num_cells > 100


def _backtrack_dtw(dist: np.ndarray) -> float:
    """Plain DTW normalised by the length of the greedy backtrack (diag, left, up on ties)."""
    n, m = dist.shape
    cost = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    cost[0, 0] = 0
    for i in range(n):
        for j in range(m):
            cost[i + 1, j + 1] = dist[i, j] + min(cost[i, j + 1], cost[i, j], cost[i + 1, j])
    i, j, length = n, m, 1
    while i > 1 and j > 1:
        diag, left, up = cost[i - 1, j - 1], cost[i, j - 1], cost[i - 1, j]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    length += (i - 1) + (j - 1)
    return float(np.float32(float(cost[n, m]) / length))


@pytest.mark.parametrize("rows, cols", [(7, 7), (9, 4), (3, 8)])
def test_dtw_batch_matches_backtrack_in_both_orientations(rows, cols):
    rng = np.random.default_rng(rows * cols)
    n, m = rng.integers(1, rows + 1, 200), rng.integers(1, cols + 1, 200)
    dist = rng.random((200, rows, cols)).astype(np.float32)
    dist[:100] = np.round(dist[:100] * 3) / 3  # many equal costs: tie order matters
    by_rows, by_cols = dtw_batch(torch.from_numpy(dist), torch.from_numpy(n), torch.from_numpy(m))
    for p in range(200):
        d = dist[p, : n[p], : m[p]]
        assert by_rows[p].item() == _backtrack_dtw(d)
        assert by_cols[p].item() == _backtrack_dtw(np.ascontiguousarray(d.T))


def test_length_bins_split_only_between_lengths():
    rng = np.random.default_rng(0)
    n = np.sort(rng.integers(1, 40, 3000))
    m = np.minimum(n, rng.integers(1, 40, 3000))
    bins = _length_bins(n, m)
    assert bins[0][0] == 0 and bins[-1][1] == len(n)
    assert all(a[1] == b[0] for a, b in zip(bins, bins[1:], strict=False))
    assert all(n[first - 1] < n[first] for first, _ in bins[1:])
    assert 1 < len(bins) < len(np.unique(n))  # sparse lengths merged, dense ones kept apart


def _toy(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "toy.item"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _toy_rows() -> list[str]:
    """Two speakers, phones a/b in context x_y, three tokens each, 0.1 s apart."""
    rows = []
    for spk in ("s1", "s2"):
        for k, phone in enumerate("aabbab"):
            rows.append(f"{spk}/u {0.1 * k:.2f} {0.1 * k + 0.1:.2f} {phone} x y {spk}")
    return rows


def _toy_features(rng: np.random.Generator, frames: int = 40) -> dict[str, np.ndarray]:
    return {f"{spk}/u": rng.normal(size=(frames, 5)).astype(np.float32) for spk in ("s1", "s2")}


def test_toy_counts_and_determinism(tmp_path):
    item = _toy(tmp_path, _toy_rows())
    features = _toy_features(np.random.default_rng(0))
    results = abx_scores(features, item, AbxConfig(frame_shift_s=0.02))
    # Within: per speaker, cells (a, b) and (b, a): 3 * 2 * 3 triplets each.
    assert results["within"].num_cells == 4
    assert results["within"].num_triplets == 2 * 2 * 18
    # Across: per A speaker and phone pair, X = 3 tokens of the other speaker: 3 * 3 * 3.
    assert results["across"].num_cells == 4
    assert results["across"].num_triplets == 4 * 27
    again = abx_scores(features, item, AbxConfig(frame_shift_s=0.02))
    assert again == results
    sampled = AbxConfig(frame_shift_s=0.02, max_tokens_per_group=2, max_x_speakers=1, seed=1)
    assert abx_scores(features, item, sampled)["within"].num_triplets == 2 * 2 * 2 * 1 * 2


def test_separable_features_give_zero_error(tmp_path):
    item = _toy(tmp_path, _toy_rows())
    tokens = read_item_file(item)
    rng = np.random.default_rng(1)
    centre = {"a": rng.normal(size=8), "b": rng.normal(size=8)}
    features = {}
    for fileid in ("s1/u", "s2/u"):
        frames = np.zeros((40, 8), dtype=np.float32)
        for t in (t for t in tokens if t.fileid == fileid):
            start = round(t.onset_s / 0.02)
            frames[start : start + 5] = centre[t.phone] + 0.01 * rng.normal(size=(5, 8))
        features[fileid] = frames
    results = abx_scores(features, item, AbxConfig(frame_shift_s=0.02))
    assert results["within"].error_percent == 0.0
    assert results["across"].error_percent == 0.0


def test_missing_file_is_named(tmp_path):
    item = _toy(tmp_path, _toy_rows())
    features = _toy_features(np.random.default_rng(0))
    del features["s2/u"]
    with pytest.raises(ValueError, match=r"no features for 1 file.*'s2/u' \(row 7\)"):
        abx_scores(features, item, AbxConfig())


def test_row_past_end_is_named(tmp_path):
    rows = [*_toy_rows(), "s1/u 3.00 3.10 a x y s1"]
    item = _toy(tmp_path, rows)
    with pytest.raises(ValueError, match=r"row 13: token 'a' .* ends past the end of 's1/u'"):
        abx_scores(_toy_features(np.random.default_rng(0)), item, AbxConfig())


def test_too_few_tokens(tmp_path):
    # One token per phone: no A with a second token (within), single speaker (across).
    rows = ["s1/u 0.00 0.10 a x y s1", "s1/u 0.10 0.20 b x y s1"]
    item = _toy(tmp_path, rows)
    features = {"s1/u": np.ones((20, 3), dtype=np.float32)}
    with pytest.raises(
        ValueError, match="no within-speaker ABX cell among 2 usable tokens: too few tokens"
    ):
        abx_scores(features, item, AbxConfig())
    with pytest.raises(ValueError, match="no across-speaker ABX cell"):
        abx_scores(features, item, AbxConfig(speaker_modes=("across",)))


def test_malformed_item_file(tmp_path):
    bad_header = tmp_path / "bad.item"
    bad_header.write_text("s1/u 0.0 0.1 a x y s1\n")
    with pytest.raises(ValueError, match=r"bad.item:1: expected header"):
        read_item_file(bad_header)
    bad_row = _toy(tmp_path, ["s1/u 0.0 0.1 a x y"])
    with pytest.raises(ValueError, match=r"toy.item:2: expected 7 columns"):
        read_item_file(bad_row)


def test_token_frames_follow_libri_light():
    """Frame i is centred at (i + 0.5) * shift: a token starts at the first frame whose centre
    is not before its onset and ends (exclusive) at floor(offset / shift - 0.5)."""
    tokens = [AbxItem("f", 0.1 * k, 0.1 * k + 0.1, "ab"[k % 2], "x", "y", "s") for k in range(4)]
    plan = prepare_abx(tokens, {"f": 30}, AbxConfig(frame_shift_s=0.02, speaker_modes=("within",)))
    spans = sorted((start, end) for _, start, end in plan.by_file["f"])
    assert spans == [(0, 4), (5, 9), (10, 14), (15, 19)]
    assert plan.total_frames == 16


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("abx") / "corpus"
    assert main(["demo-corpus", str(out), "--minutes", "0.5", "--seed", "3", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from hubertlab.models.checkpoint import save_pretrained
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig.preset(
        "tiny",
        conv_channels=(32,) * 7,
        hidden_dim=64,
        ffn_dim=128,
        num_layers=3,
        num_heads=2,
        final_dim=32,
        num_units=(10,),
    )
    return save_pretrained(HubertModel(cfg), tmp_path_factory.mktemp("abx") / "ckpt")


def test_sweep_matches_single_layer_and_writes_report(demo_corpus, tiny_checkpoint, tmp_path):
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate.abx_sweep import abx_per_layer, write_abx_report
    from hubertlab.models.checkpoint import from_pretrained

    model = from_pretrained(tiny_checkpoint).eval()
    manifest = read_manifest(demo_corpus / "manifest.csv")
    item = demo_corpus / "abx.item"
    scores = abx_per_layer(model, manifest, item, config=AbxConfig(frame_shift_s=0.02))
    assert [s.layer for s in scores] == [1, 2, 3]
    with torch.inference_mode():
        features = {
            row.fileid: model.extract_features(torch.from_numpy(manifest.read_audio(i))[None])[0][
                2
            ][0].numpy()
            for i, row in enumerate(manifest)
        }
    single = abx_scores(features, item, AbxConfig(frame_shift_s=0.02))
    assert scores[1].results == single
    best = write_abx_report(scores, tmp_path)
    report = json.loads((tmp_path / "abx.json").read_text())
    assert len(report["scores"]) == 3
    assert json.loads((tmp_path / "best_layer.json").read_text())["layer"] == best.layer
    assert (tmp_path / "abx.png").stat().st_size > 1000


def test_cli_checkpoint_with_cmvn_scores_normalised_layers(demo_corpus, tiny_checkpoint, tmp_path):
    from hubertlab.data.manifest import read_manifest
    from hubertlab.features.cmvn import utterance_cmvn
    from hubertlab.models.checkpoint import from_pretrained

    item, manifest = str(demo_corpus / "abx.item"), str(demo_corpus / "manifest.csv")
    args = ["abx", item, "--manifest", manifest, "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--layers", "2", "--cmvn", "--out", str(tmp_path / "c")]) == 0
    score = json.loads((tmp_path / "c" / "abx.json").read_text())["scores"][0]
    model, rows = from_pretrained(tiny_checkpoint).eval(), read_manifest(manifest)
    with torch.inference_mode():
        features = {
            row.fileid: utterance_cmvn(
                model.extract_features(torch.from_numpy(rows.read_audio(i))[None])[0][2][0].numpy()
            )
            for i, row in enumerate(rows)
        }
    expected = abx_scores(features, item, AbxConfig(frame_shift_s=0.02))
    for mode, result in expected.items():
        assert score[mode]["error_percent"] == pytest.approx(result.error_percent, abs=1e-6)


def test_cli_checkpoint_mfcc_and_features(demo_corpus, tiny_checkpoint, tmp_path, capsys):
    item, manifest = str(demo_corpus / "abx.item"), str(demo_corpus / "manifest.csv")
    out = tmp_path / "ckpt"
    args = ["abx", item, "--manifest", manifest, "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--layers", "1,3", "--out", str(out)]) == 0
    assert [s["layer"] for s in json.loads((out / "abx.json").read_text())["scores"]] == [1, 3]
    assert main(["abx", item, "--manifest", manifest, "--mfcc", "--out", str(tmp_path / "m")]) == 0
    mfcc = json.loads((tmp_path / "m" / "abx.json").read_text())["scores"][0]
    assert mfcc["name"] == "mfcc" and mfcc["within"]["num_triplets"] > 0
    # The same MFCC saved as .npy files give the same numbers.
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate.abx_sweep import mfcc_features

    feature_dir = tmp_path / "npy"
    for fileid, frames in mfcc_features(read_manifest(manifest)).items():
        (feature_dir / fileid).parent.mkdir(parents=True, exist_ok=True)
        np.save(feature_dir / f"{fileid}.npy", frames)
    out_f = tmp_path / "f"
    argv = [
        "abx",
        item,
        "--features",
        str(feature_dir),
        "--frame-shift",
        "0.01",
        "--out",
        str(out_f),
    ]
    assert main(argv) == 0
    saved = json.loads((out_f / "abx.json").read_text())["scores"][0]
    assert saved["within"] == mfcc["within"] and saved["across"] == mfcc["across"]
    capsys.readouterr()
    assert main([*args, "--layers", "7", "--out", str(out)]) == 1
    assert "layers must lie in [0, 3]" in capsys.readouterr().err


def test_cli_feature_store_matches_reference(tmp_path, capsys):
    """The fixture's MFCC in a float16 feature store: the frame shift comes from the store."""
    from hubertlab.features.store import write_store

    features = _fixture_features()
    write_store(tmp_path / "store", features.items(), dim=39, frame_rate_hz=100)
    out = tmp_path / "out"
    argv = ["abx", str(ASSETS / "demo.item"), "--features", str(tmp_path / "store")]
    assert main([*argv, "--out", str(out)]) == 0
    scores = json.loads((out / "abx.json").read_text())["scores"][0]
    expected = json.loads((ASSETS / "expected.json").read_text())["no_sampling"]
    for mode in ("within", "across"):
        assert scores[mode]["error_percent"] == pytest.approx(expected[mode], abs=0.05)
    assert "best: features" in capsys.readouterr().out


def test_cmvn_mfcc_is_normalised_per_utterance(demo_corpus):
    """The baseline the report compares against: MFCC with per-utterance mean and variance
    normalisation (which of the two wins is measured by the demo, not assumed here)."""
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate.abx_sweep import mfcc_features

    manifest = read_manifest(demo_corpus / "manifest.csv")
    raw, cmvn = mfcc_features(manifest), mfcc_features(manifest, cmvn=True)
    for fileid, frames in cmvn.items():
        assert frames.shape == raw[fileid].shape
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-3)

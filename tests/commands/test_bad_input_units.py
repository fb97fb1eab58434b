"""Bad input to `hubertlab features`, `kmeans` and `transcribe`: exit code 1, one line naming
the file or key, and nothing half-written (no store index, no k-means, no merged units)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hubertlab.cli import main
from hubertlab.data.audio import write_audio
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.features.store import FeatureStore, write_store
from hubertlab.models.checkpoint import save_pretrained
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from hubertlab.units.kmeans import KMeansModel

NUM_FILES = 6


def speechlike(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Noise through a few moving resonances: MFCC frames that spread over many clusters."""
    t = np.arange(num_samples) / 16000
    tones = sum(np.sin(2 * np.pi * f * (1 + 0.3 * np.sin(t * r)) * t) for f, r in rng.uniform(
        [200, 1], [3000, 6], size=(3, 2)
    ))  # fmt: skip
    return (0.1 * tones + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """wav/, manifest.csv, an MFCC store and its k-means, two tiny models and a layer store of
    model A with its k-means."""
    root = tmp_path_factory.mktemp("bad_input_units")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(NUM_FILES):
        wav = speechlike(rng, 16000 + 320 * i)
        write_audio(root / "wav" / f"s{i}.wav", wav)
        rows.append(ManifestRow(f"s{i}", f"wav/s{i}.wav", len(wav)))
    write_manifest(rows, root / "manifest.csv")
    for seed, name in ((0, "model_a"), (1, "model_b")):
        torch.manual_seed(seed)
        save_pretrained(HubertModel(HubertConfig.preset("tiny")), root / name)
    manifest = str(root / "manifest.csv")
    assert main(["features", manifest, str(root / "mfcc"), "--kind", "mfcc"]) == 0
    assert main(["kmeans", str(root / "mfcc"), str(root / "km_mfcc"), "--k", "4"]) == 0
    layer_a = ["--kind", "layer", "--checkpoint", str(root / "model_a"), "--layer", "2"]
    assert main(["features", manifest, str(root / "layer_a"), *layer_a]) == 0
    assert main(["kmeans", str(root / "layer_a"), str(root / "km_a"), "--k", "4"]) == 0
    return root


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; it must exit 1 with one error line holding every needle."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hubertlab {argv[0]}: error:"), err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def no_units(out: Path) -> None:
    for name in ("units.jsonl", "units.km", "dict.km.txt", "units.json"):
        assert not (out / name).exists(), name


def huge_manifest(work: Path) -> Path:
    """One float WAV of amplitude 1e30: finite samples, infinite MFCC power."""
    folder = work / "huge"
    if not folder.is_dir():
        folder.mkdir()
        wav = speechlike(np.random.default_rng(1), 16000) * np.float32(1e30)
        sf.write(folder / "loud.wav", wav, 16000, subtype="FLOAT")
        write_manifest([ManifestRow("loud", "loud.wav", len(wav))], folder / "manifest.csv")
    return folder / "manifest.csv"


# ---------------------------------------------------------------- features
def test_features_missing_and_empty_manifest(work, tmp_path, capsys):
    fails(capsys, ["features", tmp_path / "nope.csv", tmp_path / "s", "--kind", "mfcc"], "nope.csv")
    (tmp_path / "empty.csv").write_text("fileid,path,num_samples\n")
    fails(capsys, ["features", tmp_path / "empty.csv", tmp_path / "s", "--kind", "mfcc"],
          "empty.csv", "no rows")  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_features_bad_extractor_options(work, tmp_path, capsys):
    manifest = work / "manifest.csv"
    fails(capsys, ["features", manifest, tmp_path / "s", "--kind", "mfcc", "--layer", "2"], "layer")
    fails(capsys, ["features", manifest, tmp_path / "s", "--kind", "layer"], "checkpoint")
    fails(capsys, ["features", manifest, tmp_path / "s", "--kind", "layer", "--layer", "1",
                   "--checkpoint", tmp_path / "none"], "none")  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_features_into_a_store_of_another_extractor(work, capsys):
    before = {p.name: p.read_bytes() for p in (work / "mfcc").iterdir()}
    fails(capsys, ["features", work / "manifest.csv", work / "mfcc", "--kind", "layer",
                   "--checkpoint", work / "model_a", "--layer", "2"],
          "store.json", "other settings")  # fmt: skip
    assert {p.name: p.read_bytes() for p in (work / "mfcc").iterdir()} == before


def test_features_of_huge_audio_are_refused(work, tmp_path, capsys):
    fails(capsys, ["features", huge_manifest(work), tmp_path / "s", "--kind", "mfcc"],
          "manifest.csv: loud", "NaN or infinite")  # fmt: skip
    assert not list(tmp_path.glob("s/*.done")) and not list(tmp_path.glob("s/*.index.json"))


def test_float16_overflow_is_refused(tmp_path):
    # finite in float32, infinite once stored as float16
    with pytest.raises(ValueError, match="u1: features exceed the float16 range"):
        write_store(tmp_path, [("u0", np.ones((3, 2))), ("u1", np.full((3, 2), 1e5))], dim=2)
    assert not (tmp_path / "shard-00000-of-00001.done").exists()


# ---------------------------------------------------------------- kmeans
@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--max-iter", "0"], "max_iter must be >= 1, got 0"),
        (["--k", "1"], "k must be >= 2, got 1"),
        (["--fraction", "0"], "fraction must be in (0, 1], got 0.0"),
        (["--fraction", "1.5"], "fraction must be in (0, 1], got 1.5"),
        (["--max-memory-gb", "0"], "max_memory_gb must be > 0"),
        (["--max-frames", "0"], "max_frames must be >= 1"),
        (["--tol", "-1"], "tol must be >= 0"),
    ],
)
def test_kmeans_options_out_of_range(work, tmp_path, capsys, option, needle):
    fails(capsys, ["kmeans", work / "mfcc", tmp_path / "km", *option], needle)
    assert not (tmp_path / "km").exists()


def test_kmeans_bad_stores(work, tmp_path, capsys):
    fails(capsys, ["kmeans", tmp_path / "none", tmp_path / "km"], "not a feature store", "none")
    frames = sum(FeatureStore.open(work / "mfcc").length(f) for f in ("s0", "s1"))
    fails(capsys, ["kmeans", work / "mfcc", tmp_path / "km", "--k", frames * 10,
                   "--fraction", "1"], f"k={frames * 10} exceeds")  # fmt: skip
    assert not (tmp_path / "km").exists()


def nan_store(work: Path) -> Path:
    """A float32 copy of the MFCC store whose utterance s2 holds a NaN (a damaged .bin)."""
    out = work / "nan_store"
    if not out.is_dir():
        store = FeatureStore.open(work / "mfcc")
        arrays = [(f, np.asarray(store[f], np.float32)) for f in store.fileids]
        write_store(out, arrays, dim=store.dim, dtype="float32", frame_rate_hz=100,
                    settings=store.meta["extractor"])  # fmt: skip
        offset = sum(len(a) for _, a in arrays[:2]) * store.dim + 5
        with open(out / "shard-00000-of-00001.bin", "r+b") as f:
            f.seek(offset * 4)
            f.write(np.float32(np.nan).tobytes())
    return out


def test_kmeans_refuses_nan_frames(work, tmp_path, capsys):
    fails(capsys, ["kmeans", nan_store(work), tmp_path / "km", "--k", "4", "--fraction", "1"],
          "nan_store: s2", "NaN or infinite")  # fmt: skip
    assert not (tmp_path / "km").exists()


# ---------------------------------------------------------------- transcribe
def test_transcribe_missing_inputs(work, tmp_path, capsys):
    out = tmp_path / "units"
    manifest, store, km = work / "manifest.csv", work / "mfcc", work / "km_mfcc"
    fails(capsys, ["transcribe", tmp_path / "nope.csv", km, out, "--store", store], "nope.csv")
    (tmp_path / "empty.csv").write_text("fileid,path,num_samples\n")
    fails(capsys, ["transcribe", tmp_path / "empty.csv", km, out, "--store", store], "no rows")
    fails(capsys, ["transcribe", manifest, tmp_path / "nokm", out, "--store", store], "nokm")
    fails(capsys, ["transcribe", manifest, km, out, "--store", tmp_path / "nostore"], "nostore")
    fails(capsys, ["transcribe", manifest, km, out], "give either --store or --kind")
    assert not out.exists()


def test_transcribe_store_missing_a_fileid(work, tmp_path, capsys):
    rows = [ManifestRow("s0", str(work / "wav/s0.wav"), 16000),
            ManifestRow("other", str(work / "wav/s1.wav"), 16320)]  # fmt: skip
    write_manifest(rows, tmp_path / "m.csv")
    out = tmp_path / "units"
    fails(capsys, ["transcribe", tmp_path / "m.csv", work / "km_mfcc", out, "--store",
                   work / "mfcc"], "no features for fileid 'other'")  # fmt: skip
    no_units(out)


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        ({"centroids.npy": b"not an npy file"}, ["centroids.npy", "not a readable .npy"]),
        ({"kmeans.json": b"{broken"}, ["kmeans.json", "not valid JSON"]),
        ({"kmeans.json": b'{"k": 7, "dim": 39}'}, ["kmeans.json", "k=7", "4 centroids"]),
    ],
)
def test_transcribe_corrupt_kmeans(work, tmp_path, capsys, damage, needles):
    km = tmp_path / "km"
    km.mkdir()
    for name in ("centroids.npy", "kmeans.json"):
        (km / name).write_bytes(damage.get(name, (work / "km_mfcc" / name).read_bytes()))
    out = tmp_path / "units"
    fails(capsys, ["transcribe", work / "manifest.csv", km, out, "--store", work / "mfcc"],
          *needles)  # fmt: skip
    assert not out.exists()


def test_transcribe_kmeans_of_other_kind_or_layer(work, tmp_path, capsys):
    out = tmp_path / "units"
    manifest = work / "manifest.csv"
    # MFCC k-means on layer features: dim and kind differ
    fails(capsys, ["transcribe", manifest, work / "km_mfcc", out, "--store", work / "layer_a"],
          "km_mfcc", "dim 39")  # fmt: skip
    fails(capsys, ["transcribe", manifest, work / "km_a", out, "--kind", "layer",
                   "--checkpoint", work / "model_a", "--layer", "3"],
          "layer=2", "layer=3")  # fmt: skip
    assert not out.exists()


def test_transcribe_kmeans_of_another_model(work, tmp_path, capsys):
    # k-means of model A's layer 2 on model B's layer 2: same kind, layer and dim
    out = tmp_path / "units"
    manifest = work / "manifest.csv"
    fails(capsys, ["transcribe", manifest, work / "km_a", out, "--kind", "layer",
                   "--checkpoint", work / "model_b", "--layer", "2"],
          "km_a", "model_a", "model_b", "fingerprint")  # fmt: skip
    assert not out.exists()
    # model A itself, on the fly, gives the units of its store
    args = ["--kind", "layer", "--checkpoint", work / "model_a", "--layer", "2"]
    assert main([str(a) for a in ["transcribe", manifest, work / "km_a", out / "a", *args]]) == 0
    argv = ["transcribe", manifest, work / "km_a", out / "b", "--store", work / "layer_a"]
    assert main([str(a) for a in argv]) == 0
    assert (out / "a" / "units.km").read_text() == (out / "b" / "units.km").read_text()


def test_old_kmeans_without_fingerprint_warns(work, tmp_path, capsys, caplog):
    model = KMeansModel.load(work / "km_mfcc")
    del model.meta["feature"]["fingerprint"]
    model.save(tmp_path / "old_km")
    with caplog.at_level(logging.WARNING):
        argv = ["transcribe", work / "manifest.csv", tmp_path / "old_km", tmp_path / "units",
                "--store", work / "mfcc"]  # fmt: skip
        assert main([str(a) for a in argv]) == 0
    assert "no feature fingerprint recorded with the k-means" in caplog.text
    assert (tmp_path / "units" / "units.km").is_file()


def test_transcribe_refuses_mfcc_of_huge_audio(work, tmp_path, capsys):
    fails(capsys, ["transcribe", huge_manifest(work), work / "km_mfcc", tmp_path / "u1",
                   "--kind", "mfcc"], "manifest.csv: loud", "NaN or infinite")  # fmt: skip
    no_units(tmp_path / "u1")


def test_transcribe_refuses_a_stored_nan(work, tmp_path, capsys):
    fails(capsys, ["transcribe", work / "manifest.csv", work / "km_mfcc", tmp_path / "u2",
                   "--store", nan_store(work)], "nan_store: s2", "NaN or infinite")  # fmt: skip
    no_units(tmp_path / "u2")


def test_transcribe_refuses_a_model_with_nan_weights(work, tmp_path, capsys):
    # an old k-means of the right dim: warned about, then the NaN features are refused
    model = HubertModel(HubertConfig.preset("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_pretrained(model, tmp_path / "nan_model")
    KMeansModel(np.zeros((4, model.cfg.backbone.hidden_dim), np.float32)).save(tmp_path / "km")
    fails(capsys, ["transcribe", work / "manifest.csv", tmp_path / "km", tmp_path / "u3",
                   "--kind", "layer", "--checkpoint", tmp_path / "nan_model", "--layer", "1"],
          "manifest.csv: s0", "NaN or infinite")  # fmt: skip
    no_units(tmp_path / "u3")


def test_transcribe_resume_with_a_changed_manifest_is_refused(work, tmp_path, capsys):
    from hubertlab.units.assign import transcribe

    out = tmp_path / "units"

    def crash(done):
        raise KeyboardInterrupt  # killed after the first commit

    with pytest.raises(KeyboardInterrupt):
        transcribe(work / "manifest.csv", work / "km_mfcc", work / "mfcc", out,
                   chunk_utterances=2, on_chunk=crash)  # fmt: skip
    rows = [ManifestRow(f"s{i}", str(work / f"wav/s{i}.wav"), 16000 + 320 * i) for i in range(6)]
    write_manifest(rows[::-1], tmp_path / "reversed.csv")
    fails(capsys, ["transcribe", tmp_path / "reversed.csv", work / "km_mfcc", out, "--store",
                   work / "mfcc"], "manifest changed")  # fmt: skip
    no_units(out)


def test_transcribe_with_and_without_cmvn_must_match_the_kmeans(work, tmp_path, capsys):
    manifest = work / "manifest.csv"
    assert (
        main(["features", str(manifest), str(tmp_path / "cmvn"), "--kind", "mfcc", "--cmvn"]) == 0
    )
    assert main(["kmeans", str(tmp_path / "cmvn"), str(tmp_path / "km"), "--k", "4"]) == 0
    fails(capsys, ["transcribe", manifest, tmp_path / "km", tmp_path / "a", "--kind", "mfcc"],
          "with per-utterance CMVN")  # fmt: skip
    no_units(tmp_path / "a")
    fails(capsys, ["transcribe", manifest, work / "km_mfcc", tmp_path / "b", "--kind", "mfcc",
                   "--cmvn"], "with per-utterance CMVN")  # fmt: skip
    no_units(tmp_path / "b")
    argv = ["transcribe", manifest, tmp_path / "km", tmp_path / "c", "--kind", "mfcc", "--cmvn"]
    assert main([str(a) for a in argv]) == 0
    assert json.loads((tmp_path / "c" / "units.json").read_text())["feature"]["cmvn"] is True

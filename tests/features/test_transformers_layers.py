"""Layer features of WavLM, wav2vec 2.0 and data2vec audio folders through transformers' own
classes: tiny random models built here, compared with transformers' hidden_states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hubertlab.cli import main
from hubertlab.constants import num_frames
from hubertlab.data.audio import standardize_waveform, write_audio
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.features.extractors import build_extractor
from hubertlab.features.store import FeatureStore
from hubertlab.features.transformers_layers import TransformersLayerExtractor

TINY = {
    "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run many times faster on one thread than on an oversubscribed CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(kind: str):
    import transformers as tf

    if kind == "wavlm":
        return tf.WavLMModel(tf.WavLMConfig(**TINY, num_buckets=32, max_bucket_distance=100))
    if kind == "wav2vec2-stable":  # pre-LN (large / lv60 layout): a final LayerNorm, normalised
        config = tf.Wav2Vec2Config(**TINY, do_stable_layer_norm=True, feat_extract_norm="layer")
        return tf.Wav2Vec2Model(config)
    if kind == "wav2vec2":
        return tf.Wav2Vec2Model(tf.Wav2Vec2Config(**TINY))
    return tf.Data2VecAudioModel(tf.Data2VecAudioConfig(**{**TINY, "num_conv_pos_embeddings": 5}))


@pytest.fixture(scope="module", params=["wavlm", "wav2vec2-stable", "data2vec-audio"])
def model_dir(request, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(request.param) / "model"
    _build(request.param).save_pretrained(folder)
    return folder


def _reference(folder, wav: np.ndarray, normalise: bool) -> tuple[torch.Tensor, ...]:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder)).eval()
    wav = standardize_waveform(wav) if normalise else wav
    with torch.inference_mode():
        return model(torch.from_numpy(wav)[None], output_hidden_states=True).hidden_states


def test_layers_equal_transformers_hidden_states(model_dir):
    wav = np.random.default_rng(0).standard_normal(int(1.3 * 16000) + 77).astype(np.float32)
    extractor = build_extractor("layer", model_dir, 2, device="cpu")  # dispatched on the type
    assert isinstance(extractor, TransformersLayerExtractor)
    normalise = extractor.encoder.cfg.normalize_waveform
    assert normalise == ("stable" in str(model_dir.parent))  # layer-normed CNN: standardised
    reference = _reference(model_dir, wav, normalise)
    assert extractor.dim == 32 and extractor.num_frames(len(wav)) == num_frames(len(wav))
    for layer in (1, 2, 3):  # the last layer of a pre-LN model carries the final LayerNorm
        feats = build_extractor("layer", model_dir, layer, device="cpu")(wav)
        assert feats.shape == (num_frames(len(wav)), 32)
        np.testing.assert_allclose(feats, reference[layer][0].numpy(), atol=2e-5, rtol=1e-4)
    # Chunks whose context covers the whole file give the whole file's frames.
    chunked = build_extractor(
        "layer", model_dir, 2, device="cpu", chunk_seconds=0.3, context_seconds=5
    )
    np.testing.assert_allclose(chunked(wav), reference[2][0].numpy(), atol=2e-5, rtol=1e-4)
    short = build_extractor(
        "layer", model_dir, 2, device="cpu", chunk_seconds=0.3, context_seconds=0.1
    )
    assert short(wav).shape == (num_frames(len(wav)), 32)
    assert extractor.settings()["model_type"] in ("wavlm", "wav2vec2", "data2vec-audio")
    with pytest.raises(ValueError, match=r"layer must be in \[0, 3\]"):
        build_extractor("layer", model_dir, 4)


def test_features_and_abx_commands_take_a_transformers_folder(model_dir, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for spk in ("s1", "s2"):
        write_audio(tmp_path / f"{spk}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32))
        rows.append(ManifestRow(f"{spk}/u", f"{spk}.wav", 16000))
    write_manifest(rows, tmp_path / "m.csv")
    store = tmp_path / "store"
    argv = ["features", str(tmp_path / "m.csv"), str(store), "--kind", "layer",
            "--checkpoint", str(model_dir), "--layer", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    opened = FeatureStore.open(store)
    assert opened.dim == 32 and opened.num_frames == 2 * num_frames(16000)

    item = tmp_path / "toy.item"
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    for spk in ("s1", "s2"):
        for k, phone in enumerate("aabbab"):
            lines.append(f"{spk}/u {0.1 * k:.2f} {0.1 * k + 0.1:.2f} {phone} x y {spk}")
    item.write_text("\n".join(lines) + "\n")
    out = tmp_path / "abx"
    argv = ["abx", str(item), "--manifest", str(tmp_path / "m.csv"), "--checkpoint",
            str(model_dir), "--layers", "1,3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert [s["layer"] for s in json.loads((out / "abx.json").read_text())["scores"]] == [1, 3]


def test_a_cnn_off_the_frame_grid_is_refused(tmp_path):
    import transformers as tf

    config = tf.Wav2Vec2Config(**{**TINY, "conv_dim": [16] * 6}, conv_kernel=[10, 3, 3, 3, 2, 2],
                               conv_stride=[5, 2, 2, 2, 2, 2])  # fmt: skip
    tf.Wav2Vec2Model(config).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="160-sample hop"):
        build_extractor("layer", tmp_path / "m", 1)


class _RunsCode:
    """A pickle payload: unpickling it would create the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_unsafe_pickle_weights_file_is_one_line_naming_it(model_dir, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "unsafe"
    folder.mkdir()
    shutil.copy(model_dir / "config.json", folder / "config.json")
    state = load_file(str(model_dir / "model.safetensors"))
    torch.save({**state, "payload": _RunsCode(tmp_path / "ran")}, folder / "pytorch_model.bin")
    write_audio(tmp_path / "a.wav", np.zeros(16000, np.float32))
    write_manifest([ManifestRow("a", "a.wav", 16000)], tmp_path / "m.csv")
    argv = ["features", str(tmp_path / "m.csv"), str(tmp_path / "store"), "--kind", "layer",
            "--checkpoint", str(folder), "--layer", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights_only" not in err
    assert f"{folder / 'pytorch_model.bin'}: refusing to unpickle" in err
    assert not (tmp_path / "ran").exists()

"""Fine-tuning models: the weighted layer sum is used, one chosen layer is read as is, the MFCC
baseline lies on the HuBERT frame grid, and the CNN / encoder freeze as the task says."""

from __future__ import annotations

import pytest
import torch

from hubertlab.config import to_dict
from hubertlab.constants import num_frames
from hubertlab.models.config import BackboneConfig
from hubertlab.models.finetune import (
    FinetuneModelConfig,
    MfccEncoder,
    build_finetune_model,
    model_from_state,
)
from hubertlab.tasks.finetune import FinetuneTask
from tests.finetune_fixtures import TINY_BACKBONE

BACKBONE = BackboneConfig(
    **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_BACKBONE.items()},
    dropout=0.0, attention_dropout=0.0, input_dropout=0.0, layerdrop=0.0,
)  # fmt: skip


def _model(layer="weighted", task="vtc", outputs=("A", "B", "C")):
    torch.manual_seed(0)
    cfg = FinetuneModelConfig(task=task, outputs=outputs, backbone=BACKBONE, layer=layer)
    return build_finetune_model(cfg).eval()


def test_weighted_layer_sum_gets_gradients_and_changes_the_output():
    model = _model()
    wav = torch.randn(2, 8000)
    logits, frame_lengths = model(wav)
    assert logits.shape == (2, num_frames(8000), 3) and frame_lengths.tolist() == [24, 24]
    logits.square().sum().backward()
    grad = model.layer_weights.grad
    assert grad is not None and bool((grad.abs() > 0).all()), grad
    with torch.no_grad():
        model.layer_weights.copy_(torch.tensor([5.0, -5.0, -5.0]))  # mostly the CNN input
        moved, _ = model(wav)
    assert not torch.allclose(moved, logits, atol=1e-4)


def test_one_chosen_layer_is_read_as_is_and_the_last_goes_through_the_final_norm():
    model = _model(layer=1)
    assert not hasattr(model, "layer_weights")
    wav = torch.randn(1, 6400)
    hidden, _ = model.backbone.extract_features(wav, output_layer=1)
    logits, _ = model(wav)
    torch.testing.assert_close(logits, model.head(hidden[1]))
    last = _model(layer=2)
    last.load_state_dict(model.state_dict())
    hidden, _ = last.backbone.extract_features(wav)
    torch.testing.assert_close(last(wav)[0], last.head(last.backbone.final_norm(hidden[2])))


def test_checkpoint_round_trip():
    model = _model(task="ctc", outputs=("<pad>", "<unk>", "|", "a"))
    state = {"model": model.state_dict(), "model_config": to_dict(model.cfg)}
    again = model_from_state(state).eval()
    wav = torch.randn(1, 4000)
    torch.testing.assert_close(again(wav)[0], model(wav)[0])


@pytest.mark.parametrize("num_samples", [400, 559, 560, 719, 720, 16000, 16123])
def test_mfcc_encoder_frames_follow_the_hubert_grid(num_samples):
    encoder = MfccEncoder(16)
    wav = torch.randn(2, num_samples + 500)
    lengths = torch.tensor([num_samples + 500, num_samples])
    (hidden,), frame_lengths = encoder.extract_features(wav, lengths)
    assert frame_lengths.tolist() == [num_frames(num_samples + 500), num_frames(num_samples)]
    assert hidden.shape == (2, num_frames(num_samples + 500), 16)
    assert bool((hidden[1, num_frames(num_samples) :] == 0).all())


def test_mfcc_model_has_the_head_of_the_encoder_it_is_compared_with():
    mfcc = FinetuneModelConfig(task="vtc", outputs=("A",), encoder="mfcc", mfcc_dim=32)
    model = build_finetune_model(mfcc)
    assert model.head.weight.shape == _model(outputs=("A",)).head.weight.shape
    assert model(torch.randn(1, 4000))[0].shape == (1, num_frames(4000), 1)


def test_cnn_is_frozen_and_the_encoder_waits_for_freeze_encoder_steps():
    class Section:
        freeze_cnn, freeze_encoder_steps = True, 5

    class Cfg:
        finetune = Section()

    task = FinetuneTask(Cfg())
    assert not task.trainable("backbone.cnn.layers.0.conv.weight", 100)
    assert not task.trainable("backbone.encoder.layers.0.fc1.weight", 4)
    assert task.trainable("backbone.encoder.layers.0.fc1.weight", 5)
    assert task.trainable("head.weight", 0) and task.trainable("layer_weights", 0)


def test_bad_model_config():
    with pytest.raises(ValueError, match="layer: must be in"):
        FinetuneModelConfig(task="vtc", outputs=("A",), backbone=BACKBONE, layer=3)
    with pytest.raises(ValueError, match="needs a backbone"):
        FinetuneModelConfig(task="vtc", outputs=("A",))


@pytest.mark.parametrize("name", ["finetune-vtc.toml", "finetune-ctc.toml"])
def test_example_configs_load(name):
    from pathlib import Path

    from hubertlab.tasks.finetune_config import load_finetune_config

    cfg = load_finetune_config(Path(__file__).resolve().parents[2] / "configs" / name)
    assert cfg.finetune.task == name[9:12] and cfg.optim.max_steps == 300

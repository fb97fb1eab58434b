"""Checkpoints: our format, training checkpoints, transformers both ways, torchaudio, fairseq,
and refusal of pickles that would run code."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from hubertlab.models import convert
from hubertlab.models.checkpoint import (
    export_transformers,
    from_pretrained,
    save_pretrained,
    training_checkpoint,
)
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from hubertlab.models.safe_load import CheckpointError, safe_load

transformers = pytest.importorskip("transformers")

LENGTHS = torch.tensor([8000, 5200, 3333])


def small_config(layout: str, **overrides) -> HubertConfig:
    """Small dims, but the base layout (post-LN, GroupNorm) or the large one (pre-LN, LayerNorm
    convs, conv bias)."""
    common = dict(
        conv_channels=(32,) * 7,
        hidden_dim=48,
        num_layers=3,
        num_heads=4,
        ffn_dim=96,
        final_dim=16,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        num_units=(20,),
    )
    if layout == "large":
        common.update(conv_norm="layer", conv_bias=True, pre_ln=True)
    return HubertConfig.from_dict({**common, **overrides})


def hf_model(layout: str) -> transformers.HubertModel:
    cfg = small_config(layout)
    torch.manual_seed(0)
    model = transformers.HubertModel(transformers.HubertConfig(**convert.hf_config_dict(cfg)))
    with torch.no_grad():  # non-trivial norms and biases, so a swapped tensor would show
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    waveforms = torch.randn(len(LENGTHS), int(LENGTHS.max()), generator=g)
    for i, n in enumerate(LENGTHS):
        waveforms[i, n:] = 0.0
    return waveforms, LENGTHS


def hf_hidden(model, waveforms, lengths) -> list[list[torch.Tensor]]:
    """transformers' per-layer hidden states of each utterance alone: the ground truth a padded
    batch should reproduce on its valid frames."""
    rows = []
    with torch.no_grad():
        for i, n in enumerate(lengths):
            out = model(waveforms[i : i + 1, :n], output_hidden_states=True)
            rows.append([h[0] for h in out.hidden_states])
    return rows


def assert_same_hidden(ours: HubertModel, reference: list[list[torch.Tensor]], waveforms, lengths):
    with torch.no_grad():
        hidden, frame_lengths = ours.eval().extract_features(waveforms, lengths)
    assert len(hidden) == len(reference[0])
    for i, n in enumerate(frame_lengths.tolist()):
        for layer, (h, ref) in enumerate(zip(hidden, reference[i], strict=True)):
            assert ref.shape[0] == n
            torch.testing.assert_close(
                h[i, :n], ref, atol=1e-5, rtol=1e-5, msg=f"utterance {i} layer {layer}"
            )


@pytest.mark.parametrize("layout", ["base", "large"])
def test_transformers_to_ours_and_back(layout, tmp_path):
    hf = hf_model(layout)
    waveforms, lengths = batch()
    reference = hf_hidden(hf, waveforms, lengths)
    hf.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf", num_units=(20,), final_dim=16)
    assert ours.cfg.backbone.pre_ln == (layout == "large")
    assert_same_hidden(ours, reference, waveforms, lengths)

    # ours -> transformers: the exported dir loads in transformers and gives the same states.
    export_transformers(ours, tmp_path / "back")
    hf2 = transformers.HubertModel.from_pretrained(tmp_path / "back").eval()
    assert_same_hidden(ours, hf_hidden(hf2, waveforms, lengths), waveforms, lengths)
    if layout == "large":  # no GroupNorm over time: transformers' padded batch agrees too
        mask = (torch.arange(waveforms.shape[1])[None] < lengths[:, None]).long()
        with torch.no_grad():
            out = hf2(waveforms, attention_mask=mask, output_hidden_states=True)
            hidden, frames = ours.extract_features(waveforms, lengths)
        for h, ref in zip(hidden, out.hidden_states, strict=True):
            for i, n in enumerate(frames.tolist()):
                torch.testing.assert_close(h[i, :n], ref[i, :n], atol=1e-5, rtol=1e-5)


def test_own_dir_and_training_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(small_config("base", num_units=(20, 7))).eval()
    save_pretrained(model, tmp_path / "dir")
    torch.save(training_checkpoint(model, step=3), tmp_path / "ckpt.pt")
    waveforms, lengths = batch()
    with torch.no_grad():
        expected = model.extract_features(waveforms, lengths)[0][-1]
    for source in (tmp_path / "dir", tmp_path / "ckpt.pt"):
        loaded = from_pretrained(source).eval()
        assert loaded.cfg == model.cfg
        for k, v in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(loaded.extract_features(waveforms, lengths)[0][-1], expected)
    # A new head (iteration 2 with 30 units): backbone kept, head fresh, no error.
    fresh = from_pretrained(tmp_path / "ckpt.pt", num_units=(30,))
    assert fresh.unit_embeddings[0].shape == (30, 16)
    torch.testing.assert_close(
        fresh.backbone.feature_proj.weight, model.backbone.feature_proj.weight
    )
    dropped = from_pretrained(tmp_path / "ckpt.pt", keep_head=False)
    assert not torch.equal(dropped.unit_embeddings[0], model.unit_embeddings[0])


def test_a_checkpoint_file_is_read_once(tmp_path, monkeypatch):
    # Telling a SpidR file from a HuBERT one must not read a (1 GB) checkpoint a second time.
    model = HubertModel(small_config("base"))
    torch.save(training_checkpoint(model, step=1), tmp_path / "ckpt.pt")
    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    loaded = from_pretrained(tmp_path / "ckpt.pt")
    assert reads == [tmp_path / "ckpt.pt"] and loaded.cfg == model.cfg


def test_torchaudio_state_dict(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(small_config("large")).eval()
    hf_state = convert.ours_to_hf(model.state_dict())
    ta = {}
    for k, v in hf_state.items():
        k = k.replace("feature_projection.", "encoder.feature_projection.")
        k = k.replace(
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
            "encoder.pos_conv_embed.conv.weight_g",
        )
        k = k.replace(
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
            "encoder.pos_conv_embed.conv.weight_v",
        )
        if k.startswith(("encoder.layer", "encoder.pos_conv")):
            k = "encoder.transformer." + k.removeprefix("encoder.")
        ta["model.wav2vec2." + k.replace("masked_spec_embed", "x")] = v
    ta = {
        k.replace("model.wav2vec2.x", "model.mask_generator.mask_embedding"): v
        for k, v in ta.items()
    }
    ta["model.logit_generator.label_embeddings"] = model.unit_embeddings[0].detach()
    ta["model.logit_generator.final_proj.weight"] = model.final_proj[0].weight.detach()
    ta["model.logit_generator.final_proj.bias"] = model.final_proj[0].bias.detach()
    torch.save({"state_dict": ta}, tmp_path / "ta.ckpt")
    loaded = from_pretrained(tmp_path / "ta.ckpt", pos_conv_kernel=16)
    b = loaded.cfg.backbone
    assert b.pre_ln and b.conv_norm == "layer" and b.num_heads == 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0, msg=k)


def fairseq_checkpoint(model: HubertModel, *, labels: list[str]) -> dict:
    """A fairseq-style checkpoint built from fairseq's key names."""
    hf = convert.ours_to_hf(model.state_dict())
    fs = {}
    for k, v in hf.items():
        k = k.replace(
            "feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.conv_layers.0.2."
        )
        k = k.replace(".conv.weight", ".0.weight").replace(
            "feature_projection.layer_norm.", "layer_norm."
        )
        k = k.replace("feature_projection.projection.", "post_extract_proj.")
        k = k.replace("masked_spec_embed", "mask_emb")
        k = k.replace(
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
            "encoder.pos_conv.0.weight_g",
        )
        k = k.replace(
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
            "encoder.pos_conv.0.weight_v",
        )
        k = k.replace("encoder.pos_conv_embed.conv.bias", "encoder.pos_conv.0.bias")
        k = k.replace(".attention.", ".self_attn.")
        k = k.replace(".layer_norm.", ".self_attn_layer_norm.")
        k = k.replace("encoder.self_attn_layer_norm.", "encoder.layer_norm.")
        k = k.replace("feed_forward.intermediate_dense", "fc1")
        k = k.replace("feed_forward.output_dense", "fc2")
        fs[k] = v
    special = torch.randn(4, model.cfg.final_dim)
    rows = [torch.cat([special, e.detach()]) for e in model.unit_embeddings]
    fs["label_embs_concat"] = torch.cat(rows)
    fs["final_proj.weight"] = torch.cat([p.weight.detach() for p in model.final_proj])
    fs["final_proj.bias"] = torch.cat([p.bias.detach() for p in model.final_proj])
    args = argparse.Namespace(
        encoder_embed_dim=48,
        encoder_layers=3,
        encoder_attention_heads=4,
        encoder_ffn_embed_dim=96,
        layer_norm_first=False,
        extractor_mode="default",
        conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] * 2",
        conv_pos=16,
        conv_pos_groups=4,
        final_dim=16,
        labels=labels,
        untie_final_proj=True,
    )
    return {"args": args, "model": fs, "optimizer_history": [{"num_updates": 5}]}


def test_fairseq_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(small_config("base")).eval()
    torch.save(fairseq_checkpoint(model, labels=["km"]), tmp_path / "fs.pt")
    loaded = from_pretrained(tmp_path / "fs.pt")
    assert loaded.cfg.num_units == (20,) and loaded.cfg.backbone.num_heads == 4
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0, msg=k)


def test_fairseq_checkpoint_with_two_label_sets(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(small_config("base", num_units=(20, 9))).eval()
    torch.save(fairseq_checkpoint(model, labels=["km1", "km2"]), tmp_path / "fs.pt")
    with pytest.raises(CheckpointError, match="num_units"):
        from_pretrained(tmp_path / "fs.pt")
    loaded = from_pretrained(tmp_path / "fs.pt", num_units=(20, 9))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0, msg=k)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"args": argparse.Namespace(x=1), "model": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*(system|posix)"):
        safe_load(path)
    with pytest.raises(CheckpointError, match="refusing"):
        from_pretrained(path)


def test_omegaconf_like_classes_become_inert_stubs(tmp_path):
    # An "omegaconf" class, as in fairseq's newer checkpoints (omegaconf is not installed).
    import sys
    import types

    module = types.ModuleType("omegaconf")

    class Node:
        def __init__(self, value):
            self._val = value

    Node.__module__ = "omegaconf"
    Node.__qualname__ = "Node"
    module.Node = Node
    sys.modules["omegaconf"] = module
    try:
        torch.save({"cfg": Node({"model": Node(3)})}, tmp_path / "cfg.pt")
    finally:
        del sys.modules["omegaconf"]
    obj = safe_load(tmp_path / "cfg.pt")
    assert obj["cfg"].to_python() == {"model": 3}

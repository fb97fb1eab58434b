"""HuBERT model: loss, head, padding, layerdrop, layer extraction, precision."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hubertlab.config import ConfigError
from hubertlab.data.masking import compute_span_mask
from hubertlab.models import components
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel


def small(**overrides) -> HubertConfig:
    base = dict(
        conv_channels=(32,) * 7,
        hidden_dim=64,
        num_layers=3,
        num_heads=4,
        ffn_dim=128,
        final_dim=32,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        num_units=(20,),
        dropout=0.0,
        attention_dropout=0.0,
        input_dropout=0.0,
        layerdrop=0.0,
    )
    return HubertConfig.from_dict({**base, **overrides})


def make(cfg: HubertConfig, seed: int = 0) -> HubertModel:
    torch.manual_seed(seed)
    return HubertModel(cfg)


def data(batch: int = 2, num_samples: int = 16000, num_units: tuple[int, ...] = (20,)):
    g = torch.Generator().manual_seed(0)
    waveforms = torch.randn(batch, num_samples, generator=g)
    frames = (num_samples - 400) // 320 + 1
    labels = [torch.randint(0, k, (batch, frames), generator=g) for k in num_units]
    return waveforms, labels


def span_mask(labels: list[torch.Tensor], seed: int) -> torch.Tensor:
    """The span mask the data pipeline would draw for unpadded rows of labels[0]'s width."""
    batch, frames = labels[0].shape
    generator = torch.Generator().manual_seed(seed)
    return compute_span_mask(torch.full((batch,), frames), generator=generator)


def loss_of(out, cfg) -> torch.Tensor:
    return out.loss_sum / out.num_masked + cfg.feature_penalty_weight * out.feature_penalty


def test_presets_and_config_checks():
    base, large = HubertConfig.preset("base"), HubertConfig.preset("large")
    b, lb = base.backbone, large.backbone
    assert (b.hidden_dim, b.num_layers, base.final_dim, b.pre_ln) == (768, 12, 256, False)
    assert (lb.hidden_dim, lb.num_layers, lb.pre_ln, lb.conv_norm) == (
        1024,
        24,
        True,
        "layer",
    )
    assert HubertConfig.preset("xlarge").backbone.hidden_dim == 1280
    assert HubertConfig.preset("tiny", num_units=(50, 100)).num_units == (50, 100)
    with pytest.raises(ValueError, match="num_heads"):
        small(num_heads=5)
    with pytest.raises(ValueError, match="unknown model preset"):
        HubertConfig.preset("huge")
    with pytest.raises(ConfigError, match="hidden_dims"):
        HubertConfig.from_dict({"preset": "tiny", "hidden_dims": 3})
    cfg = HubertConfig.from_dict({"preset": "tiny", "num_units": [7]})
    assert cfg.num_units == (7,) and cfg.backbone.hidden_dim == 256
    # Overrides are checked after the preset is applied: tiny has 4 heads, not base's 12.
    cfg = HubertConfig.from_dict({"preset": "tiny", "hidden_dim": 128})
    assert cfg.backbone.hidden_dim == 128 and cfg.backbone.num_heads == 4
    with pytest.raises(ConfigError, match=r"divisible by num_heads \(4\)"):
        HubertConfig.from_dict({"preset": "tiny", "hidden_dim": 130})
    # Flat (legacy checkpoints, overrides) and nested forms give the same config.
    nested = HubertConfig.from_dict({"backbone": {"hidden_dim": 64, "num_heads": 4}})
    assert nested == HubertConfig.from_dict({"hidden_dim": 64, "num_heads": 4})


def test_loss_falls_on_a_fixed_batch():
    cfg = small(unmasked_weight=1.0)
    model = make(cfg).train()
    waveforms, labels = data()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(12):
        out = model(waveforms, labels=labels, mask=span_mask(labels, step))
        loss = loss_of(out, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert out.num_masked > 0 and out.num_unmasked > 0
    assert 0 <= out.correct_masked <= out.num_masked


def test_feature_penalty_is_one_mean_not_a_per_frame_sum():
    cfg = small()
    model = make(cfg).eval()
    waveforms, labels = data()
    lengths = torch.tensor([16000, 9000])
    out = model(waveforms, lengths, labels, mask=span_mask(labels, 0))
    features, _, frames = model.backbone.cnn_features(waveforms, lengths)
    valid = torch.cat([features[i, :n] for i, n in enumerate(frames.tolist())])
    assert out.feature_penalty.dim() == 0
    torch.testing.assert_close(out.feature_penalty, valid.float().square().mean())
    # Doubling the batch doubles the masked frames, not the penalty.
    out2 = model(
        waveforms.repeat(2, 1),
        lengths.repeat(2),
        [lab.repeat(2, 1) for lab in labels],
        mask=span_mask(labels, 0).repeat(2, 1),
    )
    torch.testing.assert_close(out2.feature_penalty, out.feature_penalty)


def test_cnn_gradient_is_scaled_by_feature_grad_mult():
    waveforms, labels = data()
    grads = {}
    for mult in (1.0, 0.1):
        cfg = small(feature_grad_mult=mult)
        model = make(cfg).train()
        out = model(waveforms, labels=labels, mask=span_mask(labels, 0))
        out.loss_sum.backward()
        grads[mult] = model.backbone.cnn.layers[0].conv.weight.grad.clone()
        proj_grad = model.backbone.feature_proj.weight.grad.clone()
        grads[f"proj{mult}"] = proj_grad
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0])
    torch.testing.assert_close(grads["proj0.1"], grads["proj1.0"])


def test_500_units_logits_are_one_matrix_product():
    cfg = small(num_units=(500,))
    model = make(cfg)
    x = torch.randn(77, cfg.backbone.hidden_dim)
    logits = model.unit_logits(x)
    assert logits.shape == (77, 500)
    proj = F.normalize(model.final_proj[0](x), dim=-1)
    emb = F.normalize(model.unit_embeddings[0], dim=-1)
    expected = F.cosine_similarity(proj[:, None], emb[None], dim=-1) / 0.1
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    # The whole training forward with 500 units allocates nothing of size K x N x final_dim.
    waveforms, labels = data(num_units=(500,))
    with torch.profiler.profile(profile_memory=True) as prof:
        out = model.train()(waveforms, labels=labels, mask=span_mask(labels, 0))
    frames = labels[0].numel()
    biggest = max(e.cpu_memory_usage for e in prof.events())  # bytes, one op call
    assert biggest < 500 * frames * cfg.final_dim * 4 // 2
    assert torch.isfinite(out.loss_sum)


def test_cluster_ensemble_has_one_head_per_unit_set():
    cfg = small(num_units=(20, 7))
    model = make(cfg).train()
    waveforms, labels = data(num_units=(20, 7))
    out = model(waveforms, labels=labels, mask=span_mask(labels, 0))
    out.loss_sum.backward()
    assert model.unit_embeddings[0].shape == (20, 32) and model.unit_embeddings[1].shape == (7, 32)
    assert model.unit_embeddings[1].grad.abs().sum() > 0
    assert model.final_proj[1].weight.grad.abs().sum() > 0
    # Summed over sets: equals set 0 alone + set 1 alone.
    single = [make(dataclasses.replace(cfg, num_units=(k,))) for k in (20, 7)]
    total = 0.0
    for j, m in enumerate(single):
        state = {
            k: v
            for k, v in model.state_dict().items()
            if not k.startswith(("final_proj", "unit_embeddings"))
        }
        state["final_proj.0.weight"] = model.final_proj[j].weight
        state["final_proj.0.bias"] = model.final_proj[j].bias
        state["unit_embeddings.0"] = model.unit_embeddings[j]
        m.load_state_dict(state)
        o = m.train()(waveforms, labels=[labels[j]], mask=span_mask(labels, 0))
        total = total + o.loss_sum.item()
    assert out.loss_sum.item() == pytest.approx(total, rel=1e-4)
    with pytest.raises(ValueError, match="label sets"):
        model(waveforms, labels=labels[:1])


def test_layerdrop_follows_its_generator():
    cfg = small(layerdrop=0.5, num_layers=6)
    model = make(cfg).train()
    calls: list[int] = []
    for i, layer in enumerate(model.backbone.encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    waveforms, labels = data()

    def run(seed: int) -> tuple[list[int], float]:
        calls.clear()
        out = model(
            waveforms,
            labels=labels,
            mask=span_mask(labels, 0),
            layerdrop_generator=torch.Generator().manual_seed(seed),
        )
        return list(calls), out.loss_sum.item()

    assert run(5) == run(5)
    assert len({tuple(run(s)[0]) for s in range(8)}) > 1  # different seeds skip differently
    model.eval()
    calls.clear()
    model.extract_features(waveforms)
    assert calls == list(range(6))  # never at inference


def test_padded_batch_matches_each_utterance_alone():
    for layout in ({}, {"conv_norm": "layer", "pre_ln": True, "normalize_waveform": True}):
        model = make(small(**layout)).eval()
        lengths = torch.tensor([16000, 11000, 6000])
        waveforms = torch.randn(3, 16000)
        with torch.no_grad():
            hidden, frames = model.extract_features(waveforms, lengths)
            for i, n in enumerate(lengths.tolist()):
                alone, _ = model.extract_features(waveforms[i : i + 1, :n])
                for h, a in zip(hidden, alone, strict=True):
                    torch.testing.assert_close(h[i, : frames[i]], a[0], atol=1e-5, rtol=1e-5)


def test_no_attention_mask_without_padding(monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, attn_mask=None, **kwargs):
        seen.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(components.F, "scaled_dot_product_attention", spy)
    model = make(small()).eval()
    waveforms = torch.randn(2, 8000)
    model.extract_features(waveforms)
    model.extract_features(waveforms, torch.tensor([8000, 8000]))
    assert seen and all(m is None for m in seen)
    seen.clear()
    model.extract_features(waveforms, torch.tensor([8000, 5000]))
    assert all(m is not None for m in seen)


def test_output_layer_stops_early():
    model = make(small()).eval()
    calls = []
    model.backbone.encoder.layers[2].register_forward_hook(lambda *_: calls.append(2))
    waveforms = torch.randn(1, 8000)
    full, _ = model.extract_features(waveforms)
    part, _ = model.extract_features(waveforms, output_layer=2)
    assert len(full) == 4 and len(part) == 3 and calls == [2]
    for a, b in zip(part, full, strict=False):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="output_layer"):
        model.extract_features(waveforms, output_layer=4)


def test_bf16_autocast_trains():
    cfg = small(pre_ln=True, conv_norm="layer")
    model = make(cfg).train()
    waveforms, labels = data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(waveforms, labels=labels, mask=span_mask(labels, 0))
        loss = loss_of(out, cfg)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_labels_are_reported():
    model = make(small())
    waveforms, labels = data()
    with pytest.raises(ValueError, match="unit id"):
        model(waveforms, labels=[labels[0] + 20])
    with pytest.raises(ValueError, match="shape"):
        model(waveforms, labels=[labels[0][:, :10]])

"""SpidR and DinoSR against the spidr package (test-only reference) on the same weights, inputs
and mask: outputs, targets, assignments, losses, perplexities, one training step."""

from __future__ import annotations

import pytest
import torch

from hubertlab.models.codebooks import perplexity
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.models.spidr_keys import config_from_spidr_state, ours_to_spidr, spidr_to_ours

spidr_models = pytest.importorskip("spidr.models")
spidr_config = pytest.importorskip("spidr.config")

CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
SIZES = dict(
    extractor_conv_layer_config=CONV,
    encoder_embed_dim=64,
    encoder_num_heads=4,
    encoder_ff_interm_features=128,
    encoder_num_layers=4,
    num_codebooks=3,
    codebook_size=16,
    encoder_pos_conv_kernel=15,  # 3 layers of kernel 5
    encoder_pos_conv_groups=4,
    encoder_pos_conv_depth=3,
    encoder_dropout=0.0,
    encoder_attention_dropout=0.0,
    encoder_layer_drop=0.0,
)
OURS = dict(
    hidden_dim=64,
    num_heads=4,
    ffn_dim=128,
    num_layers=4,
    conv_channels=(32,) * 7,
    num_codebooks=3,
    codebook_size=16,
    pos_conv_kernel=5,
    pos_conv_groups=4,
    pos_conv_layers=3,
    dropout=0.0,
    attention_dropout=0.0,
    layerdrop=0.0,
)


def pair(kind: str, seed: int = 0):
    """Their model with random weights and ours loaded from its state dict."""
    torch.manual_seed(seed)
    cls, cfg_cls = {
        "spidr": (spidr_models.SpidR, spidr_config.SpidRConfig),
        "dinosr": (spidr_models.DinoSR, spidr_config.DinoSRConfig),
    }[kind]
    theirs = cls(cfg_cls(**SIZES))
    with torch.no_grad():  # codebooks with unequal counts, so sum / count matters
        for cb in theirs.codebooks:
            cb.counts.uniform_(0.5, 2.0)
    ours = DistillModel(DistillConfig.preset(kind, "base", **OURS))
    ours.load_state_dict(spidr_to_ours(theirs.state_dict()), strict=True)
    return theirs, ours


def batch(seed: int = 1, rows: int = 2, samples: int = 16000, num_masked: int = 20):
    g = torch.Generator().manual_seed(seed)
    waveforms = torch.randn(rows, samples, generator=g)
    frames = 49
    index = torch.stack(
        [torch.randperm(frames, generator=g)[:num_masked].sort().values for _ in range(rows)]
    )
    mask = torch.zeros(rows, frames, dtype=torch.bool).scatter_(1, index, True)
    return waveforms, index, mask


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_their_state_dict_loads_strictly_and_exports_back(kind):
    theirs, ours = pair(kind)
    back = ours_to_spidr(ours.state_dict())
    original = theirs.state_dict()
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key
    assert config_from_spidr_state(original, kind).backbone.num_layers == 4


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_outputs_targets_assignments_losses_and_perplexities_match(kind):
    theirs, ours = pair(kind)
    theirs.eval(), ours.eval()
    waveforms, index, mask = batch()
    with torch.no_grad():
        for a, b in zip(
            theirs.get_intermediate_outputs(waveforms),
            ours.intermediate_outputs(waveforms)[0],
            strict=True,
        ):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        preds, _ = ours.codebook_predictions(waveforms)
        for a, b in zip(theirs.get_codebooks(waveforms), preds, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        losses, ppl = theirs(waveforms, mask_indices=index)
        out = ours(waveforms, mask=mask)
        # Their teacher targets and assignments, recomputed the way their forward does.
        feats = theirs.feature_projection(theirs.feature_extractor(waveforms))
        mine = ours.teacher_targets(feats, None)
        for layer, target in zip(
            theirs.teacher.get_intermediate_outputs(feats)[-3:], mine, strict=True
        ):
            expected = torch.nn.functional.instance_norm(layer.transpose(1, 2)).transpose(1, 2)
            torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)
        onehots = theirs.codebooks.quantize(out.targets)
    assert torch.equal(torch.stack([o.argmax(1) for o in onehots]), out.labels)
    torch.testing.assert_close(out.frame_losses, losses, atol=1e-5, rtol=1e-5)
    frames = out.num_masked
    target_ppl = perplexity(out.target_counts / frames).mean()
    pred_ppl = perplexity(out.pred_sums / frames).mean()
    torch.testing.assert_close(target_ppl, ppl["target_ppl"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred_ppl, ppl["pred_ppl"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_one_training_step_leaves_the_same_teacher_and_codebooks(kind):
    theirs, ours = pair(kind)
    theirs.train(), ours.train()
    waveforms, index, mask = batch(seed=2)
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.5)
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.5)
    losses, _ = theirs(waveforms, mask_indices=index)
    losses.mean().backward()
    opt_theirs.step()
    theirs.update_ema(1)
    out = ours(waveforms, mask=mask)
    (out.loss_sum / out.num_masked).backward()
    opt_ours.step()
    ours.codebooks.apply_update()
    assert ours.update_teacher(1) == pytest.approx(theirs.ema_scheduler(1))
    mine = ours_to_spidr(ours.state_dict())
    for key, value in theirs.state_dict().items():
        if key.startswith(("teacher.", "codebooks.", "student.")):
            torch.testing.assert_close(mine[key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_teacher_schedules_follow_both_papers():
    spidr = DistillConfig.preset("spidr", "base")
    assert spidr.teacher_decay(0) == pytest.approx(0.999)
    assert spidr.teacher_decay(20_000) == pytest.approx(1 - 0.001 / 2.718281828)
    assert spidr.teacher_decay(185_000) == 1.0  # 1 - decay below 1e-7 from step ~184k
    dinosr = DistillConfig.preset("dinosr", "base")
    assert dinosr.teacher_decay(15_000) == pytest.approx(0.99945)
    assert dinosr.teacher_decay(100_000) == pytest.approx(0.9999)
    assert dinosr.teacher_decay(200_000) == 1.0


def test_the_teacher_starts_apart_from_the_student_and_gets_no_gradient():
    model = DistillModel(DistillConfig.preset("spidr", "tiny"))
    student = dict(model.backbone.encoder.named_parameters())
    teacher = dict(model.teacher.named_parameters())
    assert not torch.equal(student["layers.0.fc1.weight"], teacher["layers.0.fc1.weight"])
    assert not any(p.requires_grad for p in teacher.values())
    model.train()
    assert not model.teacher.training


def test_a_padded_row_gives_the_outputs_and_targets_of_the_row_alone():
    """Unlike the spidr package (instance norm over padding too), targets of a padded row are
    normalised over its valid frames: batching never changes a row's targets or loss."""
    _, ours = pair("spidr")
    ours.eval()
    waveforms, _, mask = batch(seed=3)
    short = 12000  # row 1 padded to 16000 samples
    frames = int(ours.backbone.frame_lengths(short))
    mask[1, frames:] = False
    with torch.no_grad():
        both = ours(waveforms, torch.tensor([16000, short]), mask=mask)
        alone = ours(waveforms[1:, :short], mask=mask[1:, :frames])
        hidden, _ = ours.intermediate_outputs(waveforms, torch.tensor([16000, short]))
        hidden_alone, _ = ours.intermediate_outputs(waveforms[1:, :short])
    n0 = int(mask[0].sum())
    torch.testing.assert_close(both.frame_losses[n0:], alone.frame_losses, atol=1e-5, rtol=1e-5)
    assert torch.equal(both.labels[:, n0:], alone.labels)
    for a, b in zip(hidden, hidden_alone, strict=True):
        torch.testing.assert_close(a[1:, :frames], b, atol=1e-5, rtol=1e-5)


def test_hidden_states_are_an_option_of_the_outputs():
    theirs, ours = pair("dinosr")
    theirs.eval(), ours.eval()
    waveforms, _, _ = batch()
    with torch.no_grad():
        expected = theirs.student.get_intermediate_outputs(
            theirs.feature_projection(theirs.feature_extractor(waveforms)), before_residual=False
        )
        hidden, _ = ours.intermediate_outputs(waveforms, before_residual=False)
        layers, _ = ours.backbone.extract_features(waveforms)
    for a, b, c in zip(expected, hidden, layers[1:], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        assert torch.equal(b, c)


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_a_released_base_state_dict_gives_the_base_config_and_fits(kind):
    """The released files carry no config: sizes come from the tensors (shapes only here)."""
    cls, cfg_cls = {
        "spidr": (spidr_models.SpidR, spidr_config.SpidRConfig),
        "dinosr": (spidr_models.DinoSR, spidr_config.DinoSRConfig),
    }[kind]
    with torch.device("meta"):
        theirs = cls(cfg_cls())
    state = theirs.state_dict()
    cfg = config_from_spidr_state(state, kind)
    assert cfg == DistillConfig.preset(kind, "base")
    with torch.device("meta"):
        ours = DistillModel(cfg).state_dict()
    converted = spidr_to_ours(state)
    assert ours.keys() == converted.keys()
    assert all(ours[k].shape == converted[k].shape for k in ours)

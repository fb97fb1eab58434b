"""Checkpoints written before the backbone/head split still load and compute the same.

tests/assets/legacy holds a 4-step training checkpoint of the tiny test model and its
save_pretrained folder, written by hubertlab at commit 15f7f91 (flat `cnn.*`, `encoder.*` keys
and a flat model_config), with the hidden states and unit logits it gave for one input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hubertlab.models.checkpoint import from_pretrained

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "legacy"


@pytest.mark.parametrize("source", ["step_00000004.pt", "pretrained"])
def test_round_one_checkpoint_loads_and_computes_the_same(source):
    reference = load_file(str(ASSETS / "reference.safetensors"))
    model = from_pretrained(ASSETS / source).eval()
    with torch.no_grad():
        hidden, _ = model.extract_features(reference["waveforms"], reference["lengths"])
        logits = model.unit_logits(hidden[-1][0], 0)
    assert len(hidden) == sum(k.startswith("hidden") for k in reference)
    for i, h in enumerate(hidden):
        torch.testing.assert_close(h, reference[f"hidden{i}"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=1e-5)

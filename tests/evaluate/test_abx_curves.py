"""`hubertlab abx --checkpoints`: ABX learning curves over a run's checkpoints, resumable, with
the MFCC baselines; a run mixing layer counts is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubertlab.cli import main
from hubertlab.config import to_dict
from hubertlab.evaluate import abx_curves
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.train import checkpoint as ckpt
from tests.train_fixtures import TINY_OVERRIDES, make_corpus

HEADER = "#file onset offset #phone prev-phone next-phone speaker"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Four 1 s files of two speakers (spk0, spk1), six tokens each: (manifest, item file)."""
    root = tmp_path_factory.mktemp("curves")
    manifest, _ = make_corpus(root, [1.0, 1.0, 1.0, 1.0])
    rows = [HEADER]
    for i in range(4):
        for k, phone in enumerate("aabbab"):
            rows.append(f"spk{i % 2}/utt{i:03d} {0.1 * k:.2f} {0.1 * k + 0.1:.2f} {phone} x y "
                        f"spk{i % 2}")  # fmt: skip
    item = root / "abx.item"
    item.write_text("\n".join(rows) + "\n")
    return manifest, item


def save_step(ckpt_dir: Path, step: int, *, num_layers: int = 2, kind: str = "hubert") -> Path:
    """A training checkpoint (what the loop saves, less optimizer and data state) of a fresh
    tiny model seeded by its step."""
    torch.manual_seed(step)
    if kind == "hubert":
        overrides = {**TINY_OVERRIDES, "num_layers": num_layers, "num_units": (8,)}
        model = HubertModel(HubertConfig.preset("tiny", **overrides))
    else:
        keep = ("conv_channels", "hidden_dim", "num_heads", "ffn_dim")  # the preset's pos conv
        small = {k: TINY_OVERRIDES[k] for k in keep} | {"num_layers": num_layers}
        cfg = DistillConfig.preset(kind, "tiny", num_codebooks=2, **small)
        model = DistillModel(cfg)
    path = ckpt.checkpoint_path(ckpt_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "model_kind": kind, "model_config": to_dict(model.cfg)}
    ckpt.save_checkpoint(path, {**state, "step": step})
    return path


def _args(corpus, run: Path, out: Path, *extra: str) -> list[str]:
    manifest, item = corpus
    return ["abx", str(item), "--manifest", str(manifest), "--checkpoints", str(run),
            "--out", str(out), *extra]  # fmt: skip


@pytest.fixture
def count_loads(monkeypatch) -> list[str]:
    loads: list[str] = []
    real = abx_curves.load_checkpoint_model

    def counting(path):
        loads.append(path.name)
        return real(path)

    monkeypatch.setattr(abx_curves, "load_checkpoint_model", counting)
    return loads


def test_scores_every_checkpoint_then_resumes(corpus, tmp_path, count_loads, monkeypatch, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    for step in (10, 20, 30):
        save_step(run / "checkpoints", step)
    assert main(_args(corpus, run, out)) == 0
    assert count_loads == ["step_00000010.pt", "step_00000020.pt", "step_00000030.pt"]
    report = json.loads((out / "abx_curves.json").read_text())
    assert [s["step"] for s in report["steps"]] == [10, 20, 30]
    assert all([x["layer"] for x in s["scores"]] == [1, 2] for s in report["steps"])
    assert [b["name"] for b in report["baselines"]] == ["MFCC + CMVN", "MFCC (raw)"]
    assert all(0 <= s["scores"][0]["across"]["error_percent"] <= 100 for s in report["steps"])
    table = (out / "abx_curves.md").read_text()
    assert "| step | layer 1 | layer 2 |" in table and "\n| 30 | " in table
    assert "Baselines: MFCC + CMVN" in table
    assert (out / "abx_curves.png").stat().st_size > 1000
    assert "best: step" in capsys.readouterr().out

    # Interrupted after two checkpoints: the third is scored, the other two (and the
    # baselines) are read back, and the numbers are those of the uninterrupted run.
    (out / "steps" / "step_00000030.json").unlink()
    (out / "abx_curves.json").unlink()
    count_loads.clear()
    monkeypatch.setattr(abx_curves, "mfcc_features", None)  # baselines must not be recomputed
    assert main(_args(corpus, run, out)) == 0
    assert count_loads == ["step_00000030.pt"]
    assert json.loads((out / "abx_curves.json").read_text()) == report

    # A checkpoint that changed since (same name, other weights) is scored again.
    count_loads.clear()
    torch.save({**torch.load(run / "checkpoints" / "step_00000020.pt", weights_only=True),
                "counters": {"other": 1}}, run / "checkpoints" / "step_00000020.pt")  # fmt: skip
    assert main(_args(corpus, run, out)) == 0
    assert count_loads == ["step_00000020.pt"]
    # Other ABX settings: everything is scored again.
    count_loads.clear()
    assert main([*_args(corpus, run, out), "--layers", "2"]) == 0
    assert len(count_loads) == 3


def test_every_keeps_multiples_and_the_last(corpus, tmp_path, count_loads):
    found = [(s, Path(f"step_{s:08d}.pt")) for s in (5, 10, 15, 17)]
    assert [s for s, _ in abx_curves.select_checkpoints(found, 10)] == [10, 17]
    assert [s for s, _ in abx_curves.select_checkpoints(found, 1)] == [5, 10, 15, 17]
    run = tmp_path / "run"
    for step in (10, 20, 30):
        save_step(run / "checkpoints", step)
    # The checkpoints folder itself may be given too.
    assert main(_args(corpus, run / "checkpoints", tmp_path / "out", "--every", "20")) == 0
    assert count_loads == ["step_00000020.pt", "step_00000030.pt"]


def test_a_run_mixing_layer_counts_is_refused(corpus, tmp_path, count_loads, capsys):
    run = tmp_path / "run"
    save_step(run, 10)
    save_step(run, 20, num_layers=3)
    assert main(_args(corpus, run, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "checkpoints have different layer counts (step_00000010.pt: 2, step_00000020.pt: 3)" in (
        err
    )
    assert "Traceback" not in err and not count_loads  # refused before scoring any


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("empty", (), "{run}: no step_*.pt checkpoints in it or in its checkpoints/ folder"),
        ("missing", (), "run folder not found: {run}"),
        ("one", ("--every", "0"), "--every must be >= 1, got 0"),
    ],
)
def test_bad_runs_are_refused(corpus, tmp_path, capsys, setup, extra, message):
    run = tmp_path / "run"
    if setup != "missing":
        (run / "checkpoints").mkdir(parents=True)
    if setup == "one":
        save_step(run / "checkpoints", 10)
    assert main(_args(corpus, run, tmp_path / "out", *extra)) == 1
    err = capsys.readouterr().err
    assert message.format(run=run) in err and "Traceback" not in err


def test_every_needs_checkpoints(corpus, tmp_path, capsys):
    manifest, item = corpus
    argv = ["abx", str(item), "--manifest", str(manifest), "--mfcc", "--every", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 1
    assert "--every goes with --checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_self_distillation_runs_are_scored(corpus, tmp_path, kind):
    run, out = tmp_path / "run", tmp_path / "out"
    for step in (4, 8):
        save_step(run / "checkpoints", step, kind=kind)
    assert main([*_args(corpus, run, out), "--intermediate"]) == 0
    report = json.loads((out / "abx_curves.json").read_text())
    assert [s["step"] for s in report["steps"]] == [4, 8]
    assert [x["layer"] for x in report["steps"][0]["scores"]] == [1, 2]

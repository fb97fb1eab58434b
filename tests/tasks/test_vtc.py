"""VTC fine-tuning end to end on a tiny demo VTC corpus: the loop trains it and resumes it
bit-exactly, thresholds tuned on dev are what predict applies on test, long-file inference
equals window-by-window inference without overlap, bad inputs name the file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("espeakng_loader")

from hubertlab import cli  # noqa: E402
from hubertlab.constants import num_frames  # noqa: E402
from hubertlab.data.audio import write_audio  # noqa: E402
from hubertlab.data.rttm import read_rttm_files  # noqa: E402
from hubertlab.data.window_batches import WindowBatches  # noqa: E402
from hubertlab.data.windows import WindowDataset  # noqa: E402
from hubertlab.demo.vtc import VtcCorpusConfig, build_vtc_corpus  # noqa: E402
from hubertlab.finetune.inference import window_probabilities  # noqa: E402
from hubertlab.models.finetune import FinetuneModelConfig, build_finetune_model  # noqa: E402
from hubertlab.tasks.vtc import read_recordings  # noqa: E402
from hubertlab.train import checkpoint as ckpt  # noqa: E402
from tests.finetune_fixtures import tiny_encoder, vtc_tables, write_toml  # noqa: E402
from tests.models.test_finetune import BACKBONE  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtc")
    build_vtc_corpus(root, VtcCorpusConfig(minutes=1.0, recording_minutes=0.25, seed=2), workers=1)
    return root


@pytest.fixture(scope="module")
def finetuned(corpus, tmp_path_factory) -> Path:
    """A 12-step run from a tiny 'pretrained' encoder (thresholds tuned after it)."""
    root = tmp_path_factory.mktemp("run")
    config = write_toml(
        root / "vtc.toml", vtc_tables(corpus, tiny_encoder(root / "enc"), root / "run")
    )
    assert cli.main(["finetune", str(config)]) == 0
    return root


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))["model"]


def test_finetuning_trains_validates_and_tunes_thresholds(finetuned: Path):
    run = finetuned / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [6, 12] and "f1_macro" in valid[0]
    assert ckpt.read_best(run / "checkpoints") is not None
    tuned = json.loads((run / "thresholds.json").read_text())["thresholds"]
    assert set(tuned) == {"KCHI", "OCH", "MAL", "FEM"}
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    assert state["model_kind"] == "vtc" and state["train_config"]["finetune"]["task"] == "vtc"
    initial = tiny_encoder(finetuned / "again")  # same seed: the same initial encoder
    from safetensors.torch import load_file

    start = load_file(str(initial / "model.safetensors"))
    trained = state["model"]
    # The CNN stayed frozen; the Transformer trained.
    assert torch.equal(trained["backbone.cnn.layers.0.conv.weight"],
                       start["backbone.cnn.layers.0.conv.weight"])  # fmt: skip
    assert not torch.equal(trained["backbone.encoder.layers.0.fc1.weight"],
                           start["backbone.encoder.layers.0.fc1.weight"])  # fmt: skip


def test_validate_scores_the_checkpoints_of_a_finetuning_run(finetuned: Path, tmp_path: Path):
    """`hubertlab validate` reads a fine-tuning config: the dev loss the run logged."""
    out = tmp_path / "validation.jsonl"
    argv = ["validate", str(finetuned / "run"), "--config", str(finetuned / "vtc.toml")]
    assert cli.main([*argv, "--out", str(out)]) == 0
    scored = {r["step"]: r for r in map(json.loads, out.read_text().splitlines())}
    logged = [json.loads(line) for line in (finetuned / "run" / "metrics.jsonl").open()]
    last = [r for r in logged if r["split"] == "valid"][-1]
    assert scored[last["step"]]["loss"] == pytest.approx(last["loss"], rel=1e-5)
    assert scored[last["step"]]["f1_macro"] == pytest.approx(last["f1_macro"], abs=1e-6)
    assert sum(r["best"] for r in scored.values()) == 1


def test_resumed_run_continues_bit_exactly(corpus: Path, finetuned: Path, tmp_path: Path):
    tables = vtc_tables(corpus, finetuned / "enc", tmp_path / "run")
    config = write_toml(tmp_path / "vtc.toml", tables)
    assert cli.main(["finetune", str(config)]) == 0
    ckpt_dir = tmp_path / "run" / "checkpoints"
    # Stop at step 8: drop what came after, and restart.
    for step, path in ckpt.list_checkpoints(ckpt_dir):
        if step > 8:
            path.unlink()
    (ckpt_dir / "best.json").unlink(missing_ok=True)
    assert ckpt.latest_checkpoint(ckpt_dir).name == "step_00000008.pt"
    assert cli.main(["finetune", str(config)]) == 0
    full, resumed = _weights(finetuned / "run"), _weights(tmp_path / "run")
    assert set(full) == set(resumed)
    for name, value in full.items():
        assert torch.equal(value, resumed[name]), name


def test_window_batches_resume_where_they_stopped(corpus: Path):
    recordings = read_recordings(
        corpus / "train" / "manifest.csv", corpus / "train" / "reference.rttm", None,
        ("KCHI", "OCH", "MAL", "FEM"),
    )  # fmt: skip

    def batches(state=None):
        loader = WindowBatches(WindowDataset(recordings, window_s=1.0, seed=4), 5)
        if state is not None:
            loader.load_state_dict(state)
        return loader, iter(loader)

    loader, it = batches()
    total = loader.batches_per_rank
    taken = [next(it) for _ in range(total + 2)]  # into the second epoch
    _, again = batches()
    for _ in range(total - 1):
        next(again)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    _, resumed = batches({**state, "epoch": 0, "position": total - 1})
    rest = [next(resumed) for _ in range(3)]
    for a, b in zip(taken[total - 1 :], rest, strict=True):
        assert torch.equal(a.waveforms, b.waveforms)
        assert torch.equal(a.frame_targets, b.frame_targets)


def test_tuned_thresholds_are_what_predict_applies_on_test(corpus: Path, finetuned: Path, tmp_path):
    checkpoint = ckpt.latest_checkpoint(finetuned / "run" / "checkpoints")
    manifest = corpus / "test" / "manifest.csv"
    auto, explicit = tmp_path / "auto.rttm", tmp_path / "explicit.rttm"
    assert cli.main(["predict", str(checkpoint), str(manifest), str(auto)]) == 0
    thresholds = finetuned / "run" / "thresholds.json"
    argv = ["predict", str(checkpoint), str(manifest), str(explicit), "--thresholds"]
    assert cli.main([*argv, str(thresholds)]) == 0
    assert auto.read_text() == explicit.read_text()
    # Other thresholds, other turns: KCHI everywhere, nothing else.
    forced = tmp_path / "forced.json"
    table = {c: {"threshold": 1.0} for c in ("OCH", "MAL", "FEM")}
    forced.write_text(json.dumps({"thresholds": {**table, "KCHI": {"threshold": 0.0}}}))
    assert cli.main([*argv[:3], str(tmp_path / "forced.rttm"), "--thresholds", str(forced)]) == 0
    turns = read_rttm_files(tmp_path / "forced.rttm")
    recordings = read_recordings(manifest, corpus / "test" / "reference.rttm", None, ("KCHI",
                                 "OCH", "MAL", "FEM"))  # fmt: skip
    for recording in recordings:
        (turn,) = turns[recording.fileid]
        assert turn.label == "KCHI" and turn.offset_s == pytest.approx(
            recording.num_samples / 16000, abs=0.03
        )


def test_long_file_inference_equals_window_by_window_without_overlap(tmp_path: Path):
    torch.manual_seed(0)
    cfg = FinetuneModelConfig(task="vtc", outputs=("A", "B"), backbone=BACKBONE)
    model = build_finetune_model(cfg).eval()
    window, hop = 64000, 199 * 320  # 199 frames per window: consecutive windows share none
    num_samples = 3 * hop + 320
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, num_samples).astype(np.float32)
    write_audio(tmp_path / "long.wav", wav)
    wav = sf.read(tmp_path / "long.wav", dtype="float32")[0]  # as stored (16 bits)
    probs, starts = window_probabilities(
        model, tmp_path / "long.wav", num_samples, window_samples=window, hop_samples=hop,
        batch_size=3,
    )  # fmt: skip
    assert starts == [0, hop, 2 * hop]
    long_track = np.concatenate(probs)
    assert long_track.shape == (num_frames(num_samples), 2)
    by_window = []
    for start in starts:
        piece = torch.from_numpy(wav[start : start + window])[None]
        with torch.no_grad():
            by_window.append(torch.sigmoid(model(piece)[0][0]).numpy())
    np.testing.assert_allclose(long_track, np.concatenate(by_window), atol=1e-5)


def _fails(argv, capsys) -> str:
    assert cli.main(argv) == 1
    return capsys.readouterr().err


def test_bad_inputs_name_the_file_and_line(corpus: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(corpus / "train", bad)
    lines = (bad / "reference.rttm").read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split()[7], "GRANDMA")
    (bad / "reference.rttm").write_text("\n".join(lines) + "\n")
    tables = vtc_tables(corpus, "random", tmp_path / "run", finetune={"preset": "tiny"})
    tables["data"]["train_rttm"] = bad / "reference.rttm"
    config = write_toml(tmp_path / "a.toml", tables)
    err = _fails(["finetune", str(config)], capsys)
    assert f"{bad / 'reference.rttm'}:3: unknown class 'GRANDMA'" in err
    lines[2] = "SPEAKER x 1 zero 1.0 <NA> <NA> KCHI <NA> <NA>"
    (bad / "reference.rttm").write_text("\n".join(lines) + "\n")
    err = _fails(["finetune", str(config)], capsys)
    assert f"{bad / 'reference.rttm'}:3: onset 'zero' is not a number" in err
    tables["finetune"]["clases"] = ["A"]
    err = _fails(["finetune", str(write_toml(tmp_path / "b.toml", tables))], capsys)
    assert "b.toml" in err and "finetune: unknown key 'clases'" in err
    del tables["finetune"]["clases"]
    tables["finetune"]["overrides"] = {"hidden_dims": 8}
    err = _fails(["finetune", str(write_toml(tmp_path / "d.toml", tables))], capsys)
    assert "d.toml" in err and "overrides: 'hidden_dims' is not a backbone field" in err
    del tables["finetune"]["overrides"]
    del tables["data"]["dev_rttm"]
    err = _fails(["finetune", str(write_toml(tmp_path / "c.toml", tables))], capsys)
    assert "c.toml" in err and "data.dev_rttm: task 'vtc' needs it" in err

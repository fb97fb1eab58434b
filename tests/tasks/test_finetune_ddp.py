"""Fine-tuning under torchrun (gloo, 2 CPU processes): VTC with 2 ranks x 1 micro-batch equals
1 rank x 2 (same global windows, loss normalised over all ranks' frames); CTC trains, validates
and writes one checkpoint that predict reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("espeakng_loader")

from hubertlab.demo.vtc import VtcCorpusConfig, build_vtc_corpus  # noqa: E402
from hubertlab.train import checkpoint as ckpt  # noqa: E402
from tests.finetune_fixtures import tiny_encoder, vtc_tables, write_toml  # noqa: E402
from tests.tasks.test_ctc import corpus as asr_corpus  # noqa: E402, F401
from tests.tasks.test_ctc import ctc_tables  # noqa: E402
from tests.train.test_loop import cli, run_all, torchrun  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
              "input_dropout": 0.0}  # fmt: skip


def records(run: Path, split: str = "train") -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def vtc_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtc_ddp")
    build_vtc_corpus(root, VtcCorpusConfig(minutes=1.0, recording_minutes=0.25, seed=2), workers=1)
    return root


def test_vtc_two_processes_match_one_with_the_same_global_batch(vtc_corpus, tmp_path):
    encoder = tiny_encoder(tmp_path / "enc")
    configs = {
        name: write_toml(
            tmp_path / f"{name}.toml",
            vtc_tables(
                vtc_corpus,
                encoder,
                tmp_path / name,
                finetune={"dropout": 0.0, "overrides": NO_DROPOUT},
                optim={"grad_accum": accum, "max_steps": 6},
                run={"log_every": 1, "valid_every": 6, "ckpt_every": 6},
            ),  # fmt: skip
        )
        for name, accum in (("one", 2), ("ddp", 1))
    }
    run_all([cli("finetune", str(configs["one"])), torchrun(configs["ddp"], "finetune")])
    one, ddp = records(tmp_path / "one"), records(tmp_path / "ddp")
    assert len(one) == len(ddp) == 6
    for a, b in zip(one, ddp, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["f1_macro"] == pytest.approx(a["f1_macro"], abs=1e-6)
    assert records(tmp_path / "ddp", "valid")[0]["loss"] == pytest.approx(
        records(tmp_path / "one", "valid")[0]["loss"], abs=1e-5
    )
    weights = [
        ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / name / "checkpoints"))["model"]
        for name in ("one", "ddp")
    ]
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], atol=1e-5, rtol=1e-4, msg=key)
    # Thresholds are tuned once, by rank 0, after training.
    assert (tmp_path / "ddp" / "thresholds.json").is_file()


def test_ctc_trains_under_torchrun(asr_corpus, tmp_path):  # noqa: F811
    tables = ctc_tables(asr_corpus, tiny_encoder(tmp_path / "enc"), tmp_path / "run")
    config = write_toml(tmp_path / "ctc.toml", tables)
    run_all([torchrun(config, "finetune")])
    train, valid = records(tmp_path / "run"), records(tmp_path / "run", "valid")
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert [r["step"] for r in valid] == [5, 10] and all("cer" in r for r in valid)
    out = tmp_path / "hyp.tsv"
    manifest = asr_corpus / "eval" / "manifest.csv"
    latest = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    run_all([cli("predict", str(latest), str(manifest), str(out))])
    fileids = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    assert [line.split("\t")[0] for line in out.read_text().splitlines()[1:]] == fileids

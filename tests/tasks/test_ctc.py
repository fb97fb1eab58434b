"""CTC fine-tuning on the demo corpus's transcripts: trains through the loop, validates with
CER, transcribes a manifest, exports a HubertForCTC folder that decodes the same strings as
ours; a file without a transcript is an error naming the manifest row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("espeakng_loader")

from hubertlab import cli  # noqa: E402
from hubertlab.data.manifest import read_manifest  # noqa: E402
from hubertlab.data.text import (  # noqa: E402
    CharVocab,
    greedy_ctc_texts,
    load_vocab,
    read_transcripts,
)
from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus  # noqa: E402
from hubertlab.demo.transcripts import write_demo_transcripts  # noqa: E402
from hubertlab.train import checkpoint as ckpt  # noqa: E402
from hubertlab.train.validate import model_from_checkpoint  # noqa: E402
from tests.finetune_fixtures import tiny_encoder, write_toml  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("asr")
    for split, minutes in (("train", 0.5), ("eval", 0.2)):
        cfg = DemoCorpusConfig(minutes=minutes, speakers=2, split=split, seed=1)
        build_demo_corpus(root / split, cfg, workers=1)
        write_demo_transcripts(root / split)
    return root


def ctc_tables(corpus: Path, encoder, out_dir: Path, **finetune) -> dict[str, dict]:
    return {
        "finetune": {
            "task": "ctc",
            "encoder": str(encoder),
            "layer": 2,
            "freeze_encoder_steps": 4,
            **finetune,
        },  # fmt: skip
        "data": {
            "train_manifest": corpus / "train" / "manifest.csv",
            "dev_manifest": corpus / "eval" / "manifest.csv",
            "train_transcripts": corpus / "train" / "transcripts.tsv",
            "dev_transcripts": corpus / "eval" / "transcripts.tsv",
            "batch_seconds": 30.0,
            "max_utterance_seconds": 15.0,
            "num_workers": 0,
        },
        "optim": {"lr": 2e-3, "warmup_steps": 2, "max_steps": 10, "schedule": "constant"},
        "run": {
            "out_dir": out_dir,
            "precision": "fp32",
            "log_every": 2,
            "ckpt_every": 5,
            "valid_every": 5,
            "progress_bar": False,
            "num_threads": 1,
        },  # fmt: skip
    }


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ctc")
    config = write_toml(
        root / "ctc.toml", ctc_tables(corpus, tiny_encoder(root / "enc"), root / "run")
    )
    assert cli.main(["finetune", str(config)]) == 0
    return root / "run"


def test_ctc_trains_validates_with_cer_and_keeps_the_encoder_frozen_at_first(run: Path):
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [5, 10] and all(r["cer"] > 0 for r in valid)
    train = [r["loss"] for r in records if r["split"] == "train"]
    assert train[-1] < train[0], train
    vocab = load_vocab(run)  # built from the training transcripts, saved beside the run
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    assert state["model_kind"] == "ctc" and tuple(state["model_config"]["outputs"]) == vocab.tokens


def test_predict_writes_our_greedy_transcripts(corpus: Path, run: Path, tmp_path: Path):
    checkpoint = ckpt.latest_checkpoint(run / "checkpoints")
    manifest = corpus / "eval" / "manifest.csv"
    out = tmp_path / "hyp.tsv"
    assert cli.main(["predict", str(checkpoint), str(manifest), str(out)]) == 0
    texts = read_transcripts(out)
    model = model_from_checkpoint(checkpoint).eval()
    rows = read_manifest(manifest)
    assert list(texts) == [row.fileid for row in rows]
    wav = torch.from_numpy(rows.read_audio(0))[None]
    with torch.no_grad():
        logits, frames = model(wav)
    vocab = CharVocab(model.cfg.outputs)
    ours = greedy_ctc_texts(logits.numpy(), frames.tolist(), vocab)[0]
    # As HubertForCTC's processor decodes them: a double space stays (it used to be squeezed).
    assert texts[rows[0].fileid] == ours


def test_hubert_for_ctc_export_decodes_the_same_strings(corpus: Path, run: Path, tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    checkpoint = ckpt.latest_checkpoint(run / "checkpoints")
    assert cli.main(["export", str(checkpoint), str(tmp_path / "hf"), "--to", "hf"]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "pipeline_tag: automatic-speech-recognition" in card and "- ctc" in card
    assert "fine-tuning, task ctc, encoder" in card and "HubertForCTC.from_pretrained" in card
    hf = transformers.HubertForCTC.from_pretrained(tmp_path / "hf").eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "hf")
    model = model_from_checkpoint(checkpoint).eval()
    vocab = CharVocab(model.cfg.outputs)
    rows = read_manifest(corpus / "eval" / "manifest.csv")
    ours, theirs = [], []
    for i in range(len(rows)):
        wav = rows.read_audio(i)
        with torch.no_grad():
            logits, frames = model(torch.from_numpy(wav)[None])
            inputs = processor(wav, sampling_rate=16000, return_tensors="pt")
            hf_logits = hf(**inputs).logits
        np.testing.assert_allclose(hf_logits.numpy(), logits.numpy(), atol=1e-4)
        ours += greedy_ctc_texts(logits.numpy(), frames.tolist(), vocab)
        theirs += processor.batch_decode(hf_logits.argmax(-1))
    assert ours == theirs and any(ours)


def test_a_file_without_a_transcript_names_the_manifest_row(corpus: Path, tmp_path: Path, capsys):
    texts = read_transcripts(corpus / "train" / "transcripts.tsv")
    missing = list(texts)[3]
    lines = [f"{k}\t{v}" for k, v in texts.items() if k != missing]
    (tmp_path / "partial.tsv").write_text("\n".join(lines) + "\n")
    tables = ctc_tables(corpus, "mfcc", tmp_path / "run", layer=0, mfcc_dim=16)
    tables["data"]["train_transcripts"] = tmp_path / "partial.tsv"
    config = write_toml(tmp_path / "ctc.toml", tables)
    assert cli.main(["finetune", str(config)]) == 1
    err = capsys.readouterr().err
    row = [r.fileid for r in read_manifest(corpus / "train" / "manifest.csv")].index(missing) + 1
    assert (
        f"manifest.csv: row {row}: {missing!r} has no transcript in {tmp_path / 'partial.tsv'}"
        in err
    )


def test_a_weighted_sum_head_does_not_export(corpus: Path, tmp_path: Path, capsys):
    tables = ctc_tables(corpus, "random", tmp_path / "run", layer="weighted", preset="tiny",
                        overrides={"conv_channels": [16] * 7, "hidden_dim": 32, "num_layers": 1,
                                   "num_heads": 2, "ffn_dim": 32, "pos_conv_kernel": 16,
                                   "pos_conv_groups": 4})  # fmt: skip
    tables["optim"].update(max_steps=1, warmup_steps=0)
    assert cli.main(["finetune", str(write_toml(tmp_path / "w.toml", tables))]) == 0
    checkpoint = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert cli.main(["export", str(checkpoint), str(tmp_path / "hf")]) == 1
    assert "HubertForCTC reads the last layer" in capsys.readouterr().err

"""`hubertlab demo --finetune` on a miniature demo folder: the six runs, their scores and the
report table; a folder without the pretrained model says how to make it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("pyannote.metrics")
pytest.importorskip("jiwer")

from hubertlab import cli  # noqa: E402
from hubertlab.demo.finetune import FinetuneDemoSettings, run_finetune_demo  # noqa: E402
from hubertlab.demo.recipe import build_corpora  # noqa: E402
from tests.finetune_fixtures import tiny_encoder  # noqa: E402


def test_missing_pretrained_model_says_how_to_make_it(tmp_path: Path, capsys):
    assert cli.main(["demo", str(tmp_path), "--finetune"]) == 1
    err = capsys.readouterr().err
    assert "no pretrained demo model" in err and f"hubertlab demo {tmp_path}" in err
    assert cli.main(["demo", str(tmp_path), "--finetune", "--pretrained", str(tmp_path)]) == 1
    assert f"{tmp_path}: no model.safetensors" in capsys.readouterr().err


@pytest.mark.slow  # ~1 min on a busy 2-core machine: six fine-tuning runs and their scoring
def test_finetune_demo_runs_three_encoders_on_both_tasks(tmp_path: Path):
    build_corpora(tmp_path / "corpus", train_minutes=0.5, eval_minutes=0.2, speakers=2,
                  valid_fraction=0.2, workers=1)  # fmt: skip
    tiny_encoder(tmp_path / "run" / "iteration2" / "model")
    settings = FinetuneDemoSettings(
        vtc_minutes=0.5, vtc_test_minutes=0.3, vtc_speakers=2, vtc_steps=3, ctc_steps=3
    )
    report = run_finetune_demo(tmp_path, settings)
    text = report.read_text()
    assert "train / dev / test 0.4 / 0.1 / 0.3 min, 2 voices per class" in text
    assert "| random init, same recipe |" in text and "| MFCC frame model, same head |" in text
    results = json.loads((tmp_path / "finetune" / "results.json").read_text())
    assert {(r["task"], r["encoder"]) for r in results} == {
        (t, e) for t in ("vtc", "ctc") for e in ("pretrained", "random", "mfcc")
    }
    for r in results:
        metric = r["macro_f1"] if r["task"] == "vtc" else r["cer"]
        assert 0 <= metric <= 10 and r["steps"] == 3
    # Scores are kept: a second call reuses every run.
    again = run_finetune_demo(tmp_path, settings)
    assert json.loads((tmp_path / "finetune" / "results.json").read_text()) == results
    assert again == report


def test_vtc_corpus_settings_name_their_corpus():
    settings = FinetuneDemoSettings()
    corpus = settings.vtc_corpus()
    minutes = [corpus.minutes * f for f in corpus.split_fractions]
    assert minutes == pytest.approx([18.0, 6.0, 30.0])
    assert corpus.speakers_per_class == settings.vtc_speakers and corpus.seed == settings.seed
    other = FinetuneDemoSettings(vtc_test_minutes=10.0)
    assert other.vtc_tag() != settings.vtc_tag()
    assert FinetuneDemoSettings(seed=1).vtc_tag() != settings.vtc_tag()
    # A seed or a budget is another run (the CTC runs once reused seed 0's scores).
    ctc = {FinetuneDemoSettings(seed=seed, ctc_steps=steps).run_name("ctc", "random")
           for seed in (0, 1) for steps in (100, 300)}  # fmt: skip
    vtc = {FinetuneDemoSettings(seed=seed, vtc_steps=steps).run_name("vtc", "random")
           for seed in (0, 1) for steps in (100, 300)}  # fmt: skip
    assert len(ctc) == len(vtc) == 4 and settings.run_name("ctc", "mfcc") == "ctc-mfcc-300steps"
    with pytest.raises(ValueError, match="--vtc-test-minutes"):
        FinetuneDemoSettings(vtc_test_minutes=0)

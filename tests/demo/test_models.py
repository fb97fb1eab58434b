"""`hubertlab demo --model spidr`: its own pipeline beside the HuBERT demo's, and models.md
whose every figure is the one the run's steps wrote (or the evaluate code computes)."""

from __future__ import annotations

import json
import tomllib

import pytest

from hubertlab.cli import main
from hubertlab.data.alignments import read_phone_segments
from hubertlab.demo.compare import write_models_report
from hubertlab.demo.recipe import DemoSettings, config_path, prepare_demo
from hubertlab.evaluate.units import unit_quality
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.train.metrics import read_metrics
from hubertlab.units.assign import read_units

pytest.importorskip("espeakng_loader")

TINY = ["--train-minutes", "0.4", "--eval-minutes", "0.6", "--speakers", "2", "--workers", "1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", str(out), "--model", "spidr", "--spidr-steps", "2", *TINY]) == 0
    return out


def test_spidr_run_and_its_config(demo):
    run = demo / "run-spidr"
    assert (run / "report.md").is_file() and (run / "iteration1" / "model").is_dir()
    assert not (demo / "pipeline.toml").exists() and not (demo / "run").exists()
    config = tomllib.loads((demo / "pipeline-spidr.toml").read_text())
    assert config["train"]["model"] == {"kind": "spidr", "preset": "tiny", "overrides": {}}
    assert config["train"]["optim"]["max_steps"] == 2
    hubert = tomllib.loads(prepare_demo(demo, DemoSettings(**_tiny_settings())).read_text())
    assert config["corpus"] == hubert["corpus"] and config["executor"] == hubert["executor"]
    assert config["iterations"][0]["num_units"] == hubert["iterations"][0]["num_units"]


def _tiny_settings() -> dict:
    return dict(train_minutes=0.4, eval_minutes=0.6, speakers=2, workers=1)


def test_models_report_rows_and_columns(demo):
    lines = (demo / "models.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model | steps"))
    for column in ("best layer", "ABX within", "k-means PNMI", "codebook PNMI", "perplexity"):
        assert column in header
    rows = [line.split(" | ")[0] for line in lines if line.startswith("| ")]
    assert rows[:4] == ["| model", "| SpidR", "| MFCC + CMVN (baseline)", "| MFCC (raw) (baseline)"]
    assert "| model | layer 1 | layer 2 | layer 3 | layer 4 |" in lines


def test_models_figures_are_the_runs(demo):
    summary = json.loads((demo / "models.json").read_text())["models"]["spidr"]
    cfg = load_pipeline_config(config_path(demo, "spidr"))
    run = cfg.out_dir
    phones = read_phone_segments(cfg.corpus.eval_phones)
    abx = json.loads((run / "iteration1" / "abx" / "abx.json").read_text())
    assert summary["best_layer"] == abx["best"]["layer"]
    for score in abx["scores"]:
        assert summary["abx_per_layer"][str(score["layer"])] == {
            mode: score[mode]["error_percent"] for mode in ("within", "across")
        }
    # k-means units of the best layer (the pipeline's final units), k as HuBERT's iterations
    units = summary["kmeans_units"]
    assert units["layer"] == summary["best_layer"] and units["k"] == 100
    kmeans_units = read_units(run / "iteration2" / "units" / "eval")
    assert units["pnmi"] == unit_quality(kmeans_units, phones)["pnmi"]
    codebooks = summary["codebook_units"]
    assert set(codebooks["layers"]) == {"1", "2", "3", "4"}  # tiny: heads on all 4 layers
    for layer, quality in codebooks["layers"].items():
        head_units = read_units(run / "iteration1" / "codebooks" / f"layer{layer}")
        assert quality["pnmi"] == unit_quality(head_units, phones)["pnmi"]
    last = [r for r in read_metrics(run / "iteration1" / "train" / "metrics.jsonl")][-1]
    assert last["split"] == "valid"
    assert summary["perplexity"]["3"] == {
        "target": last["target_ppl_layer3"],
        "pred": last["pred_ppl_layer3"],
    }
    assert 0 < summary["train_seconds"] < summary["total_seconds"]
    md = (demo / "models.md").read_text()
    assert f"{units['pnmi']:.3f} (layer {units['layer']}, k=100)" in md


def test_a_report_of_runs_not_done_shows_dashes(demo, tmp_path):
    """A model whose config is written but not run yet: a row of dashes, nothing invented."""
    config = prepare_demo(demo, DemoSettings(**_tiny_settings()), "dinosr")
    path = write_models_report(tmp_path, {"spidr": config_path(demo, "spidr"), "dinosr": config})
    row = next(line for line in path.read_text().splitlines() if line.startswith("| DinoSR"))
    assert row.count("| - ") >= 5


@pytest.mark.slow
def test_all_models_side_by_side_resuming_the_spidr_run(demo):
    """`--model all` trains HuBERT and DinoSR beside the finished SpidR run, which it keeps."""
    done = demo / "run-spidr" / "iteration1" / "train" / "DONE.json"
    before = done.read_text()
    argv = ["demo", str(demo), "--model", "all", "--steps", "2", "--continue-steps", "2"]
    assert main([*argv, "--spidr-steps", "2", "--dinosr-steps", "2", *TINY]) == 0
    assert done.read_text() == before
    assert (demo / "run" / "report.md").is_file() and (demo / "run-dinosr" / "report.md").is_file()
    side_by_side = (demo / "models.md").read_text().split("## ABX per layer")[0]
    rows = {
        line.split(" | ")[0]: line.split(" | ")
        for line in side_by_side.splitlines()
        if line.startswith("| ")
    }
    assert list(rows)[1:6] == [
        "| HuBERT", "| SpidR", "| DinoSR", "| MFCC + CMVN (baseline)", "| MFCC (raw) (baseline)",
    ]  # fmt: skip
    assert rows["| HuBERT"][1] == "2 + 2"
    assert rows["| HuBERT"][6:8] == ["n/a", "n/a"]  # no codebooks, no perplexities
    assert "(layer 3, k=100)" in rows["| HuBERT"][5]  # the layer its pipeline clusters
    assert "head of layer" in rows["| DinoSR"][6]
    summary = json.loads((demo / "models.json").read_text())["models"]
    assert set(summary) == {"hubert", "spidr", "dinosr"}

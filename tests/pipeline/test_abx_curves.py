"""[abx] curves = true: each iteration keeps its checkpoints and scores them (a resumable step
of its own); the report shows the curves beside the loss curve. The per-layer ABX plot has
integer layer ticks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hubertlab.demo.recipe import build_corpora
from hubertlab.evaluate import abx_curves
from hubertlab.pipeline import report as report_module
from hubertlab.pipeline.config import load_pipeline_config, train_config
from hubertlab.pipeline.run import pipeline_status, run_pipeline
from hubertlab.pipeline.steps import build_steps
from tests.pipeline.test_pipeline import CONFIG, SMALL_MODEL

ONE_ITERATION = (
    CONFIG.split("[[iterations]]")[0]
    .replace("max_steps = 12", "max_steps = 6")
    .replace("ckpt_every = 4", "ckpt_every = 2\nkeep_last = 1")
    .replace("valid_every = 4", "valid_every = 0")
    + '[[iterations]]\nfeatures = "mfcc"\nnum_units = 12\nkmeans_fraction = 1.0\n'
    + "[abx]\nmax_tokens_per_group = 5\ncurves = true\n"
    + SMALL_MODEL
    + "\n"
).replace("seed = 0", "seed = 0\nfinal_units = false")


def _write(root: Path, name: str, text: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(text.replace('out_dir = "run"', f'out_dir = "{name}"'))
    return path


def test_curves_setting_keeps_checkpoints_and_redoes_nothing(tmp_path):
    for name in ("train/manifest.train.csv", "train/manifest.valid.csv", "eval/manifest.csv"):
        (tmp_path / "corpus" / name).parent.mkdir(parents=True, exist_ok=True)
    on = load_pipeline_config(_write(tmp_path, "on", ONE_ITERATION))
    off = load_pipeline_config(_write(tmp_path, "on", ONE_ITERATION.replace("curves = true", "")))
    assert train_config(on, 1).run.keep_every == 2 and train_config(off, 1).run.keep_every == 0
    explicit = ONE_ITERATION.replace("keep_last = 1", "keep_last = 1\nkeep_every = 4")
    explicit_cfg = load_pipeline_config(_write(tmp_path, "x", explicit))
    assert train_config(explicit_cfg, 1).run.keep_every == 4
    assert "iteration1/abx-curve" in [s.name for s in build_steps(on)]
    assert "iteration1/abx-curve" not in [s.name for s in build_steps(off)]
    # Turning the curves on for a finished run makes no finished step stale.
    fp_on, fp_off = ({s.name: s.fingerprint for s in build_steps(c)} for c in (on, off))
    assert all(fp_on[name] == fp_off[name] for name in (s.name for s in build_steps(off)))


def test_pipeline_scores_every_checkpoint_and_resumes(tmp_path, monkeypatch):
    build_corpora(tmp_path / "corpus", train_minutes=0.5, eval_minutes=1.0, speakers=2,
                  valid_fraction=0.2, workers=1)  # fmt: skip
    config = _write(tmp_path, "run", ONE_ITERATION)
    run_pipeline(config)
    run = tmp_path / "run"
    folder = run / "iteration1" / abx_curves.CURVES_DIR
    curves = json.loads((folder / "abx_curves.json").read_text())
    assert [s["step"] for s in curves["steps"]] == [0, 2, 4, 6]  # 0: the model before training
    baseline = json.loads((run / "baseline" / "abx.json").read_text())
    assert curves["baselines"] == baseline["scores"]  # scored once, by the baseline step
    report = (run / "report.md").read_text()
    assert "### ABX over training, iteration 1" in report
    assert "![ABX against training step](iteration1/abx_curve/abx_curves.png)" in report
    assert "| MFCC + CMVN (baseline) |" in report.split("### ABX over training")[1]
    assert (folder / "abx_curves.png").stat().st_size > 1000

    # Killed after scoring two checkpoints: the rerun scores only the third.
    (folder / "DONE.json").unlink()
    (folder / "steps" / "step_00000006.json").unlink()
    loads = []
    real = abx_curves.load_checkpoint_model
    monkeypatch.setattr(
        abx_curves, "load_checkpoint_model", lambda path: loads.append(path.name) or real(path)
    )
    run_pipeline(config)
    assert loads == ["step_00000006.pt"]
    assert json.loads((folder / "abx_curves.json").read_text()) == curves
    assert "pending" not in pipeline_status(config) and "started" not in pipeline_status(config)


def test_per_layer_abx_plot_has_integer_layer_ticks(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    scores = [{"name": f"layer {n}", "layer": n, "within": {"error_percent": 10.0 - n}}
              for n in (1, 2)]  # fmt: skip
    abx_dir = tmp_path / "iteration1" / "abx"
    abx_dir.mkdir(parents=True)
    (abx_dir / "abx.json").write_text(json.dumps({"scores": scores}))
    cfg = SimpleNamespace(out_dir=tmp_path, iteration_dir=lambda k: tmp_path / f"iteration{k}")
    drawn = {}
    monkeypatch.setattr(report_module, "_save", lambda fig, axes, png, ok: drawn.update(axes=axes))
    report_module._plot_abx(cfg, 1, tmp_path / "abx.png")
    ticks = [t for t in drawn["axes"][0].get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks

"""`hubertlab init`: the sizing of 1 h on a CPU, 100 h on one GPU and 1,000 h on 4 x 4 GPUs,
long recordings on the long-form path ([longform]), continued pretraining, and the configs
it writes load as the pipeline reads them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.init.corpus import init_run
from hubertlab.init.options import InitOptions
from hubertlab.init.sizing import Hardware, plan_run
from hubertlab.pipeline.config import load_pipeline_config

SR = 16000


def _manifest(path: Path, hours: float, seconds: float = 15.0) -> Path:
    """A manifest of `hours` of `seconds`-long rows (no audio: init reads only the lengths)."""
    n = round(hours * 3600 / seconds)
    rows = [
        ManifestRow(f"s{i % 7}/u{i}", f"s{i % 7}/u{i}.flac", int(seconds * SR)) for i in range(n)
    ]
    write_manifest(rows, path)
    return path


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_one_hour_on_a_cpu_is_the_demo_recipe(tmp_path):
    options = InitOptions(measure_step=False, hardware=Hardware(gpus_per_node=0))
    config = init_run(_manifest(tmp_path / "m.csv", 1.0), tmp_path / "out", options)
    data = _toml(config)
    assert data["executor"]["kind"] == "local"
    assert data["train"]["model"]["preset"] == "tiny"
    assert data["train"]["data"]["batch_seconds"] == 24
    assert data["train"]["optim"]["max_steps"] == 3000  # the demo's, not more for 2x its audio
    assert [it["num_units"] for it in data["iterations"]] == [100, 100]
    assert data["iterations"][1]["layer"] == 3
    assert data["iterations"][1]["train"]["optim"]["max_steps"] == 1000
    assert "eval_manifest" not in data["corpus"]
    text = config.read_text()
    assert "Expected wall time" in text and "validation loss" in text
    cfg = load_pipeline_config(config)
    assert cfg.corpus.eval_abx_item is None
    assert cfg.iterations[0].cmvn  # the demo's k-means on normalised MFCC


def test_hundred_hours_on_one_gpu_is_hubert_base(tmp_path):
    plan = plan_run(100.0, Hardware(gpus_per_node=1))
    assert plan.preset == "base" and plan.batch_seconds == 87.5
    assert plan.steps == (250_000, 400_000)  # capped at the recipe's
    assert plan.num_units == (100, 500) and plan.layer == 6
    options = InitOptions(measure_step=False, hardware=Hardware(gpus_per_node=1))
    config = init_run(_manifest(tmp_path / "m.csv", 100.0, 30.0), tmp_path / "out", options)
    data = _toml(config)
    assert data["executor"]["kind"] == "local"
    assert data["train"]["optim"]["lr"] == 5e-4
    assert data["iterations"][1]["init"] == "scratch"
    assert "cmvn" not in data["iterations"][0]  # the paper's raw MFCC
    assert "SpidR's public H100 figure" in config.read_text()  # not a measurement of ours


def test_thousand_hours_on_four_nodes_of_four_gpus(tmp_path):
    hardware = Hardware(gpus_per_node=4, nodes=4, slurm=True, partition="gpu", account="lab")
    plan = plan_run(1000.0, hardware)
    assert plan.steps == (250_000, 400_000) and plan.num_units == (100, 500)
    assert plan.num_shards == 100
    config = init_run(_manifest(tmp_path / "m.csv", 1000.0, 60.0), tmp_path / "out",
                      InitOptions(measure_step=False, hardware=hardware))  # fmt: skip
    data = _toml(config)
    slurm = data["executor"]["slurm"]
    assert data["executor"]["kind"] == "slurm" and data["executor"]["num_shards"] == 100
    assert (slurm["nodes"], slurm["gpus_per_node"]) == (4, 4)
    assert (slurm["partition"], slurm["account"]) == ("gpu", "lab")
    assert 0.0009 < data["iterations"][0]["kmeans_fraction"] <= 0.1
    load_pipeline_config(config)


def test_small_corpora_get_fewer_steps_and_a_denser_kmeans_fit():
    plan = plan_run(1 / 60, Hardware())
    assert plan.steps == (100, 50)  # the demo's passes (3000 of 0.5 h), never under 50 steps
    assert "the quiet 2-core machine's" in plan.estimate_note
    assert plan.kmeans_fraction == (1.0, 1.0)
    ten = plan_run(1 / 60, Hardware(), steps=10)
    assert ten.steps == (10, 5)  # the plan's ratio of iteration 2 to 1 (50 / 100)
    assert plan_run(5.0, Hardware(gpus_per_node=1)).num_units == (100, 100)


def test_distilling_models_follow_the_spidr_recipe(tmp_path):
    plan = plan_run(100.0, Hardware(gpus_per_node=2), model="spidr")
    assert plan.iterations == 1 and plan.batch_seconds == 237.5 and plan.schedule == "tri_stage"
    options = InitOptions(measure_step=False, model="dinosr", hardware=Hardware())
    config = init_run(_manifest(tmp_path / "m.csv", 2.0), tmp_path / "out", options)
    data = _toml(config)
    assert data["train"]["model"]["kind"] == "dinosr" and len(data["iterations"]) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(nodes=2), "--nodes"),
        (dict(gpus_per_node=-1), "--gpus"),
        (dict(partition="p"), "--partition"),
    ],
)
def test_bad_hardware_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Hardware(**kwargs)


def test_long_recordings_take_the_long_form_path(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", 2 * 20 / 60, seconds=20 * 60)
    config = init_run(manifest, tmp_path / "out", InitOptions(measure_step=False))
    text = config.read_text()
    assert "the median recording is 1200 s" in text
    data = _toml(config)
    assert data["corpus"] == {"train_manifest": "manifest.csv"}  # the spans are split later
    assert data["longform"]["vad"] == "silero" and data["longform"]["selection"] == "segments"
    assert "VAD" in text.split("Expected wall time")[1].splitlines()[0]  # counted in the estimate
    cfg = load_pipeline_config(config)
    assert cfg.manifest("train") == cfg.out_dir / "longform" / "spans" / "train.csv"
    assert not (tmp_path / "out" / "manifest.train.csv").exists()
    short = _manifest(tmp_path / "short.csv", 0.1, seconds=10)
    forced = init_run(short, tmp_path / "out3", InitOptions(measure_step=False, long_form=True))
    assert "Long recordings: --long-form." in forced.read_text()
    plain = init_run(short, tmp_path / "out4", InitOptions(measure_step=False))
    assert "longform" not in _toml(plain)


def test_continued_pretraining_from_a_checkpoint(tmp_path):
    from tests.finetune_fixtures import tiny_encoder

    ckpt = tiny_encoder(tmp_path / "ckpt")
    config = init_run(_manifest(tmp_path / "m.csv", 1.0), tmp_path / "out",
                      InitOptions(measure_step=False, init_from=ckpt))  # fmt: skip
    data = _toml(config)
    model = data["train"]["model"]
    assert model["from_pretrained"] == str(ckpt.resolve()) and model["new_head"]
    epoch = model["head_only_steps"]  # UPS: one epoch of the head alone (0.95 h: 5% is valid)
    assert epoch == round(0.95 * 3600 / 24)
    assert data["train"]["optim"]["max_steps"] == 5 * epoch
    assert data["train"]["optim"]["lr"] == 5e-5
    assert data["iterations"][0]["checkpoint"] == str(ckpt.resolve())
    assert data["iterations"][0]["layer"] == 1  # the middle of the tiny model's 2 layers
    load_pipeline_config(config)
    with pytest.raises(FileNotFoundError, match="--init-from"):
        init_run(
            tmp_path / "m.csv",
            tmp_path / "o",
            InitOptions(measure_step=False, init_from=tmp_path / "none"),
        )


def test_a_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.flac").write_text("not audio")
    with pytest.raises(ValueError, match="no usable audio"):
        init_run(tmp_path / "a", tmp_path / "out", InitOptions(measure_step=False))


def test_eval_demo_adds_the_synthetic_corpus(tmp_path):
    options = InitOptions(
        measure_step=False, eval_demo=True, eval_languages=("en", "fr"), eval_minutes=0.3
    )
    config = init_run(_manifest(tmp_path / "m.csv", 1.0), tmp_path / "out", options)
    data = _toml(config)
    assert data["corpus"]["eval_abx_item"] == "eval/abx.item"
    assert "SYNTHETIC" in config.read_text() and "en, fr" in config.read_text()
    cfg = load_pipeline_config(config)
    assert cfg.corpus.eval_phones.is_file() and cfg.corpus.eval_manifest.is_file()
    with pytest.raises(ValueError, match="--eval demo: languages"):
        InitOptions(eval_demo=True, eval_languages=("xx",))
    with pytest.raises(ValueError, match="--steps"):
        InitOptions(steps=0)


def test_an_hour_budget_takes_the_ups_selection(tmp_path):
    manifest = _manifest(tmp_path / "m.csv", 3.0, seconds=30 * 60)
    lid = tmp_path / "lid.jsonl"
    lid.write_text('{"fileid": "s0/u0", "duration": 1800.0, "segments": [[0, 10]], '
                   '"languages": ["fr"]}\n')  # fmt: skip
    options = InitOptions(measure_step=False, ups_hours=1.0, lid=lid, shards=4)
    data = _toml(init_run(manifest, tmp_path / "out", options))
    assert data["longform"]["shards"] == 4
    assert data["longform"]["selection"] == "ups" and data["longform"]["hours"] == 1.0
    assert data["longform"]["lid"] == str(lid.resolve())
    assert data["train"]["optim"]["max_steps"] == 3000  # sized on the 1 h budget, not the 3 h
    with pytest.raises(ValueError, match="--lid.*give --hours"):
        InitOptions(lid=lid)
    with pytest.raises(FileNotFoundError, match="--lid: not found"):
        init_run(manifest, tmp_path / "o2", InitOptions(ups_hours=1.0, lid=tmp_path / "x"))

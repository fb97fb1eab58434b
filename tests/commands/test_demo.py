"""`hubertlab demo`'s options: --model and the step budgets parse, and bad values stop the
command before anything is built."""

from __future__ import annotations

from hubertlab.cli import build_parser, main
from hubertlab.demo.recipe import DemoSettings


def test_model_and_steps_parse():
    argv = ["demo", "out", "--model", "all", "--spidr-steps", "7", "--dinosr-steps", "9"]
    args = build_parser(argv).parse_args(argv)
    assert (args.model, args.spidr_steps, args.dinosr_steps) == ("all", 7, 9)
    args = build_parser(["demo", "out"]).parse_args(["demo", "out"])
    assert args.model == "hubert"  # the demo as it was
    assert args.spidr_steps == DemoSettings().spidr_steps


def test_bad_model_is_refused_before_any_work(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "out"), "--model", "wav2vec"]) == 1
    err = capsys.readouterr().err
    assert "--model must be one of hubert, spidr, dinosr, all, got 'wav2vec'" in err
    assert main(["demo", str(tmp_path / "out"), "--model", "spidr", "--spidr-steps", "0"]) == 1
    assert "--spidr-steps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_vtc_speaker_count_is_refused_before_any_work(tmp_path, capsys):
    from hubertlab.demo.vtc import MAX_SPEAKERS_PER_CLASS

    argv = ["demo", str(tmp_path / "out"), "--finetune", "--vtc-speakers", "99"]
    assert main(argv) == 1
    assert f"--vtc-speakers must be in 1..{MAX_SPEAKERS_PER_CLASS}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""End to end: `hubertlab init` on a folder of 16 kHz FLACs it has never seen, then the
command it prints, runs to a report within the wall time the config states; the same for two
20-minute recordings, which take the long-form path (VAD and spans in the pipeline)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubertlab.cli import main
from hubertlab.demo.longform import LongFormConfig, build_longform_corpus

SR = 16000


def _flacs(folder: Path, count: int = 12, seed: int = 0) -> Path:
    """Gliding tones in noise, 3-5 s each, two 'speakers' (folders), and one broken file."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        t = np.arange(int(SR * rng.uniform(3, 5))) / SR
        f0 = rng.uniform(100, 300) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        x = 0.1 * np.sin(2 * np.pi * np.cumsum(f0) / SR) + 0.01 * rng.standard_normal(len(t))
        path = folder / f"spk{i % 2}" / f"u{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), SR)
    (folder / "broken.flac").write_text("not audio")
    return folder


def _init_and_run(audio: Path, out: Path, capsys) -> str:
    """`hubertlab init` then the command it prints; the report, checked against the time the
    config states."""
    assert main(["init", str(audio), str(out), "--gpus", "0", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    command = re.search(r"^\s+hubertlab (pipeline \S+)$", printed, re.M).group(1).split()
    stated = re.search(r"Expected wall time: ~(\d+) min", printed)
    assert stated, printed
    start = time.perf_counter()
    assert main(command) == 0
    elapsed = time.perf_counter() - start
    assert elapsed <= 60 * int(stated.group(1)), (elapsed, printed)
    report = (out / "run" / "report.md").read_text()
    assert "no evaluation corpus" in report and "validation loss" in report
    assert (out / "run" / "iteration2" / "model").is_dir()
    return report


def test_init_then_the_printed_command_runs_to_a_report_in_time(tmp_path, capsys):
    out = tmp_path / "out"
    _init_and_run(_flacs(tmp_path / "audio"), out, capsys)
    assert "1 rejected" in (out / "pipeline.toml").read_text()


@pytest.mark.slow
def test_two_long_recordings_take_the_long_form_path_in_time(tmp_path, capsys):
    build_longform_corpus(tmp_path / "lf", LongFormConfig(hours=40 / 60, recording_minutes=20))
    audio = tmp_path / "lf" / "longform"  # the two 20-minute FLACs, nothing else
    assert sorted(p.name for p in audio.iterdir()) == ["rec_0000.flac", "rec_0001.flac"]
    report = _init_and_run(audio, tmp_path / "out", capsys)
    assert "## Long-form recordings" in report and "silero VAD" in report
    spans = (tmp_path / "out" / "run" / "longform" / "spans" / "train.csv").read_text()
    assert spans.count("\n") > 40  # 2-30 s spans of 40 minutes

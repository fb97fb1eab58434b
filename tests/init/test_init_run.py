"""End to end: `hubertlab init` on a folder of 16 kHz FLACs it has never seen, then the
command it prints, runs to a report within the wall time the config states."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from hubertlab.cli import main

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


def test_init_then_the_printed_command_runs_to_a_report_in_time(tmp_path, capsys):
    audio = _flacs(tmp_path / "audio")
    out = tmp_path / "out"
    assert main(["init", str(audio), str(out), "--gpus", "0", "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    command = re.search(r"^\s+hubertlab (pipeline \S+)$", printed, re.M).group(1).split()
    stated = re.search(r"Expected wall time: ~(\d+) min", printed)
    assert stated, printed
    assert "1 rejected" in (out / "pipeline.toml").read_text()
    start = time.perf_counter()
    assert main(command) == 0
    elapsed = time.perf_counter() - start
    report = (out / "run" / "report.md").read_text()
    assert "no evaluation corpus" in report and "validation loss" in report
    assert (out / "run" / "iteration2" / "model").is_dir()
    assert elapsed <= 60 * int(stated.group(1)), (elapsed, printed)

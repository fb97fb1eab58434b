"""Shared test helpers: short synthetic audio written on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def write_tone(path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1) -> int:
    """A 220 Hz tone plus a little noise; returns its frame count at `sample_rate`."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(n)
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)
    if channels > 1:
        wav = np.stack([wav * (c + 1) / channels for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.astype(np.float32), sample_rate, subtype="PCM_16")
    return n


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Nested folder: two speakers with a file of the same name each, plus junk."""
    root = tmp_path / "audio"
    write_tone(root / "spk1" / "a.wav", 1.0)
    write_tone(root / "spk1" / "b.flac", 0.5)
    write_tone(root / "spk2" / "a.wav", 0.75)
    write_tone(root / "spk2" / "sub" / "c.wav", 0.25, sample_rate=8000)
    (root / "spk2" / "notes.txt").write_text("not audio")
    (root / "spk2" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (root / "spk3").mkdir()
    (root / "spk3" / "empty.wav").write_bytes(b"")
    return root

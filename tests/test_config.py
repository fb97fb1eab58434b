"""Generic config filling: non-finite numbers are refused, naming the file and the key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hubertlab.config import ConfigError, load_config


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: float | None = None


@dataclass(frozen=True)
class Cfg:
    optim: Optim = Optim()


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("lr = inf", "optim.lr"),
        ("lr = -inf", "optim.lr"),
        ("lr = nan", "optim.lr"),
        ("betas = [0.9, nan]", "optim.betas[1]"),
        ("warmup = nan", "optim.warmup"),
    ],
)
def test_non_finite_numbers_are_refused_naming_file_and_key(tmp_path, line, key):
    path = tmp_path / "c.toml"
    path.write_text(f"[optim]\n{line}\n")
    with pytest.raises(ConfigError, match="finite") as info:
        load_config(Cfg, path)
    assert f"c.toml.{key}:" in str(info.value)


def test_finite_numbers_still_load(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlr = 5e-4\nbetas = [0.9, 1]\nwarmup = 8000\n")
    assert load_config(Cfg, path).optim == Optim(5e-4, (0.9, 1.0), 8000.0)

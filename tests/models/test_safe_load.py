"""safe_load on damaged and unsafe files: a CheckpointError naming the file, never torch's
traceback or its advice to turn the safe loader off."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from hubertlab.models.safe_load import CheckpointError, safe_load


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}, "step": 3}, path)
    return path


def _damaged(good, name, transform):
    path = good.with_name(name)
    path.write_bytes(transform(good.read_bytes()))
    return path


DAMAGE = {
    "half.pt": lambda b: b[: len(b) // 2],
    "tail_cut.pt": lambda b: b[:-10],
    "empty.pt": lambda b: b"",
    "text.pt": lambda b: b"not a checkpoint at all\n" * 8,
    "overwritten.pt": lambda b: b[:200] + b"x" * 60 + b[260:],
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damaged_checkpoint_names_the_file(good, name):
    path = _damaged(good, name, DAMAGE[name])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        safe_load(path)
    assert str(path) in str(info.value)
    assert "weights_only" not in str(info.value)


def test_truncated_legacy_pickle_names_the_file(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(8)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"legacy\.pt.*truncated or corrupt"):
        safe_load(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_pickle_that_runs_code_gets_our_message(tmp_path, protocol):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"payload": _RunsCode()}, protocol=protocol))
    with pytest.raises(CheckpointError, match=r"evil\.pkl") as info:
        safe_load(path)
    assert "weights_only" not in str(info.value) and "Re-running" not in str(info.value)


def test_good_checkpoint_still_loads(good):
    assert safe_load(good)["step"] == 3

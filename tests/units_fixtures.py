"""Shared data for the unit-pipeline tests: one small demo corpus per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus


def demo_corpus(tmp_path_factory: pytest.TempPathFactory, minutes: float = 2.0) -> Path:
    """A demo corpus (eSpeak speech with phone alignments), built once per session: the
    session's base temp folder is shared by every test module."""
    out = tmp_path_factory.getbasetemp() / f"units_demo_{minutes}"
    build_demo_corpus(out, DemoCorpusConfig(minutes=minutes, seed=0), workers=2)
    return out

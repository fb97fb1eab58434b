"""Transcripts of the demo corpus, redrawn from its settings, equal the synthesised texts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("espeakng_loader")

from hubertlab.data.manifest import read_manifest  # noqa: E402
from hubertlab.data.text import read_transcripts  # noqa: E402
from hubertlab.demo.corpus import (  # noqa: E402
    DemoCorpusConfig,
    build_demo_corpus,
    make_speakers,
    render_utterance,
)
from hubertlab.demo.transcripts import demo_transcripts, write_demo_transcripts  # noqa: E402


@pytest.mark.parametrize("split", ["train", "eval"])
def test_transcripts_equal_the_synthesised_texts(tmp_path: Path, split: str):
    cfg = DemoCorpusConfig(minutes=0.3, speakers=4, languages=("en", "fr"), seed=7, split=split)
    build_demo_corpus(tmp_path, cfg, workers=1)
    path = write_demo_transcripts(tmp_path)
    texts = read_transcripts(path)
    rows = read_manifest(tmp_path / "manifest.csv")
    assert list(texts) == [row.fileid for row in rows] and len(rows) >= 3
    speakers = make_speakers(cfg)
    for index in (0, len(rows) - 1):
        utterance = render_utterance(cfg, speakers, index)
        assert texts[utterance.record.fileid] == utterance.text
    assert demo_transcripts(tmp_path) == texts


def test_needs_a_finished_corpus(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="corpus.json"):
        demo_transcripts(tmp_path)

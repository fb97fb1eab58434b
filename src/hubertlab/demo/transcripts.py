"""Transcripts of a demo corpus (for the demo ASR task), derived from what the corpus stores.

A demo utterance's text is a pure function of the corpus settings and the file index (see
`corpus.render_utterance`): corpus.json holds the settings, the fileid
"<speaker>/<split>_<index>" the index, so the sentences are drawn again, without synthesis.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hubertlab.data.manifest import read_manifest
from hubertlab.data.text import write_transcripts
from hubertlab.demo.corpus import _SPLIT_IDS, DemoCorpusConfig, make_speakers
from hubertlab.demo.sentences import make_text

TRANSCRIPTS_FILE = "transcripts.tsv"


def _config(corpus_dir: Path) -> DemoCorpusConfig:
    done = corpus_dir / "corpus.json"
    if not done.is_file():
        raise FileNotFoundError(f"{done}: not a finished demo corpus (no corpus.json)")
    settings = json.loads(done.read_text(encoding="utf-8"))["settings"]
    fields = {k: v for k, v in settings.items() if k != "sample_rate"}
    return DemoCorpusConfig(**{**fields, "languages": tuple(fields["languages"])})


def utterance_text(cfg: DemoCorpusConfig, speakers, index: int) -> tuple[str, str]:
    """(speaker name, sentence) of file `index`, drawn as `corpus.render_utterance` draws it."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[cfg.split], index])
    speaker = speakers[index % len(speakers)]
    num_clauses = int(rng.integers(1, 3))
    return speaker.name, make_text(speaker.language, rng, split=cfg.split, num_clauses=num_clauses)


def demo_transcripts(corpus_dir: str | Path) -> dict[str, str]:
    """fileid -> sentence for every file of the corpus's manifest."""
    corpus_dir = Path(corpus_dir)
    cfg = _config(corpus_dir)
    speakers = make_speakers(cfg)
    texts = {}
    for row in read_manifest(corpus_dir / "manifest.csv"):
        speaker, _, name = row.fileid.partition("/")
        prefix, _, index = name.rpartition("_")
        if prefix != cfg.split or not index.isdigit():
            raise ValueError(f"{corpus_dir}: fileid {row.fileid!r} is not <speaker>/<split>_<n>")
        drawn_speaker, text = utterance_text(cfg, speakers, int(index))
        if drawn_speaker != speaker:  # corpus.py draws differently now: fix this module
            raise ValueError(f"{corpus_dir}: {row.fileid}: speaker is {drawn_speaker} when redrawn")
        texts[row.fileid] = text
    return texts


def write_demo_transcripts(corpus_dir: str | Path) -> Path:
    """Write <corpus>/transcripts.tsv (fileid<TAB>sentence) and return its path."""
    path = Path(corpus_dir) / TRANSCRIPTS_FILE
    write_transcripts(demo_transcripts(corpus_dir), path)
    return path

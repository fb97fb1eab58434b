"""A short long-form demo recording shared by the VAD, curation and shard tests."""

import pytest

from hubertlab.demo.longform import LongFormConfig, build_longform_corpus


@pytest.fixture(scope="session")
def longform(tmp_path_factory):
    """Two 1-minute recordings (speech islands, silences, noise) with their true speech."""
    out = tmp_path_factory.mktemp("longform")
    build_longform_corpus(out, LongFormConfig(hours=2 / 60, recording_minutes=1.0))
    return out

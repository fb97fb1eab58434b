"""JsonlShardWriter (VAD output): lines are strict JSON."""

import math

import pytest

from hubertlab.curate.resumable import JsonlShardWriter


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_never_reach_the_jsonl(tmp_path, bad):
    writer = JsonlShardWriter(tmp_path, {"what": "test"})
    writer.append({"fileid": "a", "duration": 2.0, "segments": [[0.0, 1.0]]})
    with pytest.raises(ValueError, match=r"shard.*\.jsonl: line 2 \('b'\): Out of range float"):
        writer.append({"fileid": "b", "duration": 2.0, "segments": [[0.5, bad]]})
    assert writer.lines == 1 and writer.committed() == [
        {"fileid": "a", "duration": 2.0, "segments": [[0.0, 1.0]]}
    ]

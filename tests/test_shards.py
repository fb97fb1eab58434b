"""The committed-append writer shared by the feature store and transcription."""

from __future__ import annotations

import json

import pytest

from hubertlab.shards import CommittedAppender, check_committed_prefix, shard_name, shard_rows

FILES = {".a": "a_bytes", ".b": "b_bytes"}


def write(base, items, *, commit_every=2, on_commit=None):
    appender = CommittedAppender(base, FILES, ("frames",), on_commit=on_commit)
    for i, text in enumerate(items[appender.utterances :], start=appender.utterances):
        appender.append({".a": text.encode(), ".b": f"{i}\n".encode()}, frames=len(text))
        if appender.pending_utterances >= commit_every:
            appender.commit()
    appender.mark_done()
    return appender


def test_resume_drops_uncommitted_bytes_and_continues(tmp_path):
    items = [f"item{i}|" for i in range(7)]
    whole = write(tmp_path / "whole" / shard_name(0, 1), items)
    assert whole.done and not whole.path(".progress.json").exists()

    base = tmp_path / "killed" / shard_name(0, 1)

    def crash(done):
        if done == 4:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write(base, items, on_commit=crash)
    progress = json.loads(base.with_suffix(".progress.json").read_text())
    assert progress == {"utterances": 4, "frames": 24, "a_bytes": 24, "b_bytes": 8}
    with open(base.with_suffix(".a"), "ab") as f:
        f.write(b"half-written")  # a kill in the middle of a commit
    resumed = CommittedAppender(base, FILES, ("frames",))
    assert resumed.utterances == 4 and base.with_suffix(".a").stat().st_size == 24
    write(base, items)
    for suffix in FILES:
        assert base.with_suffix(suffix).read_bytes() == whole.path(suffix).read_bytes()
    # a finished shard is left alone
    again = CommittedAppender(base, FILES, ("frames",))
    assert again.done and again.utterances == 0


def test_bad_progress_is_refused_naming_the_file(tmp_path):
    base = tmp_path / shard_name(0, 1)
    base.with_suffix(".progress.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"progress.json: not valid JSON"):
        CommittedAppender(base, FILES)
    base.with_suffix(".progress.json").write_text('{"utterances": 1}')
    with pytest.raises(ValueError, match="expected counts"):
        CommittedAppender(base, FILES)
    base.with_suffix(".progress.json").write_text('{"utterances": 1, "a_bytes": 10, "b_bytes": 0}')
    with pytest.raises(ValueError, match=r"\.a: missing, but"):
        CommittedAppender(base, FILES)
    base.with_suffix(".a").write_bytes(b"short")
    with pytest.raises(ValueError, match=r"\.a: shorter than the committed 10 bytes"):
        CommittedAppender(base, FILES)


def test_committed_prefix_must_match_the_rows(tmp_path):
    appender = write(tmp_path / shard_name(0, 1), ["x", "y"])
    appender.progress["utterances"] = 2
    check_committed_prefix(appender, ["a", "b"], ["a", "b", "c"], "m.csv")
    with pytest.raises(ValueError, match="manifest changed"):
        check_committed_prefix(appender, ["a", "c"], ["a", "b", "c"], "m.csv")
    with pytest.raises(ValueError, match="this shard of m.csv has 1"):
        check_committed_prefix(appender, ["a", "b"], ["a"], "m.csv")


def test_shard_rows_partition():
    rows = list(range(10))
    parts = [shard_rows(rows, i, 3) for i in range(3)]
    assert [len(p) for p in parts] == [3, 3, 4] and sum(parts, []) == rows
    with pytest.raises(ValueError, match="shard must be in"):
        shard_rows(rows, 3, 3)

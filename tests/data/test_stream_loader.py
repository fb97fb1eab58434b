"""HuBERT training streamed from tar shards: it learns, a stopped run resumes bit-exactly (with
two DataLoader workers), corrupt members are skipped, the config names its mistakes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from hubertlab.config import ConfigError
from hubertlab.curate.shards import write_shards
from hubertlab.data.manifest import read_manifest
from hubertlab.tasks.hubert import HubertTask
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.loop import train
from hubertlab.units.assign import read_units
from tests.train_fixtures import make_corpus, write_config

SECONDS = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7, 0.9] * 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream_train")
    manifest, units = make_corpus(root, SECONDS)
    rows = read_manifest(manifest)
    write_shards(rows, root / "shards", 4, units=read_units(units, rows))
    return root / "shards"


def shard_config(path: Path, shards: str | Path, out_dir: Path, **data) -> Path:
    write_config(path, (Path("unused"), Path("unused")), out_dir, run={"log_every": 1}, data=data)
    text = path.read_text()
    text = text.replace(
        'train_manifest = "unused"\n', f"train_shards = {json.dumps(str(shards))}\n"
    )
    path.write_text(text.replace('train_units = ["unused"]\n', "shuffle_buffer = 4\n"))
    return path


class Stopped(Exception):
    pass


class StopAfter:
    """The task's batches, cut after `limit` of them (a run killed after a checkpoint)."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def __iter__(self):
        for i, batch in enumerate(self.inner):
            if i == self.limit:
                raise Stopped
            yield batch

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state) -> None:
        self.inner.load_state_dict(state)


class StoppingTask(HubertTask):
    def train_batches(self, **kw):
        return StopAfter(super().train_batches(**kw), 10)


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


def test_streamed_training_learns_and_a_stopped_run_resumes_bit_exactly(shards, tmp_path):
    # Two decoding workers, dropout on: the resume restores both workers' streams and the RNGs.
    full = shard_config(tmp_path / "full.toml", shards, tmp_path / "full", num_workers=2)
    stop = shard_config(tmp_path / "stop.toml", shards, tmp_path / "stop", num_workers=2)
    result = train(load_train_config(full))
    assert result["step"] == 20
    full_losses = losses(tmp_path / "full")
    assert sum(full_losses[-5:]) < sum(full_losses[:5])

    with pytest.raises(Stopped):
        train(load_train_config(stop), StoppingTask(load_train_config(stop)))
    stop_dir = tmp_path / "stop" / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(stop_dir)] == [10]
    assert train(load_train_config(stop))["step"] == 20  # resumes from step 10

    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "full" / "checkpoints", 20))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(stop_dir, 20))
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert a["sampler"] == b["sampler"] and a["sampler"][0]["kind"] == "stream"
    assert losses(tmp_path / "full") == losses(tmp_path / "stop")


def test_a_corrupt_member_is_skipped_and_training_goes_on(shards, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shards.json").write_text((shards / "shards.json").read_text())
    for shard in sorted(shards.glob("shard-*.tar")):
        with tarfile.open(shard) as tin, tarfile.open(bad / shard.name, "w") as tout:
            for i, member in enumerate(tin):
                data = tin.extractfile(member).read()
                if i == 0:  # the first FLAC of every shard
                    data = b"fLaC" + bytes(40)
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
    cfg = shard_config(tmp_path / "c.toml", bad, tmp_path / "run")
    result = train(load_train_config(cfg, {"optim": {"max_steps": 12}}))
    assert result["step"] == 12 and result["corrupt_skipped"] >= 4


def test_the_config_names_what_is_wrong_with_the_data_source(shards, tmp_path):
    cfg = shard_config(tmp_path / "c.toml", shards, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"c\.toml\.data: train_shards: give either"):
        load_train_config(cfg, {"data": {"train_manifest": "m.csv"}})
    with pytest.raises(ConfigError, match=r"c\.toml\.data: train_units: with train_shards"):
        load_train_config(cfg, {"data": {"train_units": ["u.jsonl"]}})
    with pytest.raises(ConfigError, match=r"c\.toml\.data: train_manifest: missing"):
        text = cfg.read_text().replace(f"train_shards = {json.dumps(str(shards))}\n", "")
        cfg.write_text(text)
        load_train_config(cfg)


def test_spidr_streams_standardised_audio_without_units(shards, tmp_path):
    from hubertlab.tasks import build_task
    from tests.tasks.test_spidr import write_config as spidr_config

    path = spidr_config(tmp_path / "s.toml", Path("unused"), tmp_path / "run",
                        optim={"max_steps": 6}, data={"shuffle_buffer": 4})  # fmt: skip
    text = path.read_text().replace(
        'train_manifest = "unused"', f"train_shards = {json.dumps(str(shards))}"
    )
    path.write_text(text)
    cfg = load_train_config(path)
    batch = next(iter(build_task(cfg).train_batches(rank=0, world_size=1, pin_memory=False)))
    assert batch.labels == [] and batch.mask is not None
    assert batch.waveforms.std(1).sub(1).abs().max() < 0.3  # whole samples standardised
    assert train(cfg)["step"] == 6


def test_two_ranks_stream_their_own_shards(shards, tmp_path):
    import subprocess

    from hubertlab.data.stream import slot_work
    from tests.train.test_loop import REPO, torchrun

    path = shard_config(tmp_path / "ddp.toml", shards, tmp_path / "ddp")
    text = (
        path.read_text()
        .replace("max_steps = 20", "max_steps = 6")
        .replace("ckpt_every = 10", "ckpt_every = 6")
    )
    path.write_text(text)
    proc = subprocess.run(torchrun(path), capture_output=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "ddp" / "checkpoints"))
    read = []
    for rank, sampler in enumerate(state["sampler"]):
        worker = sampler["workers"][0]
        assert (worker["slot"], worker["num_slots"], sampler["world_size"]) == (rank, 2, 2)
        refs = worker["buffer"] + worker["carry"]
        work = {e: slot_work(4, rank, 2, seed=0, epoch=e) for e, _, _ in refs}
        read.append({(e, work[e][p][0]) for e, p, _ in refs})  # (epoch, shard) of each sample
    assert read[0] and read[1] and not read[0] & read[1]  # no shard on both ranks in an epoch

"""The training loop is generic: a toy objective (frame-level regression of the log energy of
each 20 ms frame) trains through train/ unchanged, with its own model, loss, metrics, a hook
after each step and a frozen CNN."""

from __future__ import annotations

import json

import torch
from torch import nn

from hubertlab.config import from_dict
from hubertlab.data.dataset import Batch
from hubertlab.models.backbone import Backbone
from hubertlab.models.config import BackboneConfig
from hubertlab.tasks.base import TaskBase, TaskLoss
from hubertlab.tasks.data import build_train_loader
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import TrainConfig
from hubertlab.train.loop import train
from tests.train_fixtures import TINY_OVERRIDES, make_corpus

TINY = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_OVERRIDES.items()}
TINY = {k: v for k, v in TINY.items() if k != "final_dim"}


class EnergyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cfg = BackboneConfig(**TINY, dropout=0.0, attention_dropout=0.0, input_dropout=0.0)
        self.backbone = Backbone(self.cfg)
        self.head = nn.Linear(self.cfg.hidden_dim, 1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x, _ = self.backbone(waveforms, lengths)
        return self.head(x).squeeze(-1)  # (batch, frames)


def frame_log_energy(waveforms: torch.Tensor) -> torch.Tensor:
    frames = waveforms.unfold(1, 400, 320)  # (batch, frames, 400)
    return torch.log(frames.square().mean(-1) + 1e-6)


class EnergyTask(TaskBase):
    """Predict each frame's log energy: loss summed over valid frames, normalised by them."""

    kind = "energy"
    metric_names = ("abs_error_sum",)
    head_prefixes = ("head.",)

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.steps_seen: list[int] = []

    def build_model(self) -> nn.Module:
        return EnergyModel()

    @staticmethod
    def model_from_state(state):
        model = EnergyModel()
        model.load_state_dict(state["model"])
        return model

    def model_config(self, model):
        return {"kind": "energy"}

    def train_batches(self, *, rank, world_size, pin_memory):
        return build_train_loader(
            self.cfg.data, (), None, seed=self.cfg.run.seed, rank=rank, world_size=world_size
        )

    def valid_batches(self, *, rank, world_size):
        return None

    def normaliser(self, batch: Batch) -> int:
        return int(batch.frame_lengths.sum())

    def loss(self, model, batch: Batch, generator) -> TaskLoss:
        predicted = model(batch.waveforms, batch.lengths).float()
        target = frame_log_energy(batch.waveforms)[:, : predicted.shape[1]]
        valid = torch.arange(predicted.shape[1])[None] < batch.frame_lengths[:, None]
        error = (predicted - target)[valid]
        return TaskLoss(
            loss_sum=error.square().sum(), metrics={"abs_error_sum": error.abs().sum().detach()}
        )

    def summarize(self, totals):
        return {"mean_abs_error": totals["abs_error_sum"] / max(totals["normaliser"], 1.0)}

    def after_step(self, model, step: int) -> None:
        self.steps_seen.append(step)


def test_a_toy_task_trains_through_the_unchanged_loop(tmp_path):
    manifest, _ = make_corpus(tmp_path / "data", [1.0, 1.5, 0.8, 1.2, 1.4, 0.9])
    cfg = from_dict(
        TrainConfig,
        {
            "model": {"freeze_cnn_from_step": 0},
            "data": {
                "train_manifest": str(manifest),
                "min_crop_seconds": 0.5,
                "max_crop_seconds": 1.0,
                "batch_seconds": 2.0,
                "num_workers": 0,
            },
            "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 30, "schedule": "constant"},
            "run": {
                "out_dir": str(tmp_path / "run"),
                "precision": "fp32",
                "log_every": 5,
                "ckpt_every": 30,
                "progress_bar": False,
                "num_threads": 1,
            },
        },
    )
    task = EnergyTask(cfg)
    torch.manual_seed(0)
    initial_cnn = {k: v.clone() for k, v in EnergyModel().backbone.cnn.state_dict().items()}
    result = train(cfg, task)

    assert result["step"] == 30 and task.steps_seen == list(range(1, 31))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    errors = [r["mean_abs_error"] for r in records if r["split"] == "train"]
    assert errors[-1] < 0.5 * errors[0], errors
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert state["model_kind"] == "energy"
    trained = EnergyTask.model_from_state(state)
    # The CNN was frozen from step 0: the loop trained everything else around it.
    for name, value in trained.backbone.cnn.state_dict().items():
        assert torch.equal(value, initial_cnn[name]), name
    assert not torch.equal(trained.head.weight, EnergyModel().head.weight)

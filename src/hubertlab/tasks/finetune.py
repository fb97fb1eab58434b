"""What the two fine-tuning tasks (tasks/vtc.py, tasks/ctc.py) share: their model (an encoder
and a linear head, hubertlab.models.finetune), its checkpoint form, and which parameters train
when: the CNN never (freeze_cnn), the rest of the encoder only after freeze_encoder_steps."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from hubertlab.config import to_dict
from hubertlab.models.finetune import model_for_section, model_from_state
from hubertlab.tasks.base import TaskBase


class FinetuneTask(TaskBase):
    """Defaults for a task over a FinetuneModel; cfg is a tasks.finetune_config.FinetuneConfig."""

    cnn_prefixes = ("backbone.cnn.",)
    encoder_prefix = "backbone."
    # [data] keys the task cannot do without (unset in the dataclass: no default fits).
    needed_data: ClassVar[tuple[str, ...]] = ()
    # Keys only this task reads, by table: the other tasks' config files must not set them.
    own_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    default_dropout: ClassVar[float] = 0.1  # before the head, when [finetune] dropout is unset

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        for name in cls.needed_data:
            if getattr(cfg.data, name) is None:
                raise ValueError(f"data.{name}: task {cfg.finetune.task!r} needs it")

    def head_dropout(self) -> float:
        dropout = self.cfg.finetune.dropout
        return self.default_dropout if dropout is None else dropout

    def outputs(self) -> tuple[str, ...]:
        """Names of the head's outputs (classes or vocabulary tokens)."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        return model_for_section(self.cfg.finetune, self.outputs(), self.head_dropout())

    @staticmethod
    def model_from_state(state: dict[str, Any]) -> nn.Module:
        return model_from_state(state)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return to_dict(model.cfg)

    def trainable(self, name: str, step: int) -> bool:
        section = self.cfg.finetune
        if section.freeze_cnn and name.startswith(self.cnn_prefixes):
            return False
        return not (step < section.freeze_encoder_steps and name.startswith(self.encoder_prefix))

    def may_skip_parameters(self) -> bool:
        # Frozen parts, and a layerdrop that may come from the pretrained checkpoint's config.
        return True

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        encoder = getattr(model.backbone, "encoder", None)
        return list(encoder.layers) if encoder is not None else []

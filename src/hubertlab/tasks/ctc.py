"""CTC speech recognition as a training task: a character vocabulary (blank = <pad> = 0), CTC
loss summed over utterances (zero_infinity: an utterance with fewer frames than it needs gives
no gradient instead of inf) and normalised by the target characters of the step, so the logged
loss is per character whatever the batch. Validation adds the greedy-decoding CER (character
edit distance over reference characters, spaces included, as jiwer counts them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.dataset import Batch
from hubertlab.data.manifest import check_manifest_audio, read_manifest
from hubertlab.data.text import (
    CharVocab,
    build_vocab,
    edit_distance,
    greedy_ctc_decode,
    load_vocab,
    read_transcripts,
)
from hubertlab.data.utterances import (
    UtteranceDataset,
    utterance_ids,
    utterance_loader,
    utterance_valid_batches,
)
from hubertlab.data.valid import ValidBatches
from hubertlab.tasks.base import TaskLoss
from hubertlab.tasks.finetune import FinetuneTask

log = logging.getLogger(__name__)


class CtcTask(FinetuneTask):
    """Character CTC on the last layer (or the configured layer / weighted sum)."""

    names = {"ctc": "CTC"}
    kind = "ctc"
    predicts = "transcripts"
    # transformers' HubertForCTC (finetune.export; only a head on the last layer fits it).
    exports_to = ("hf",)
    head_prefixes = ("head.", "layer_weights")
    default_dropout = 0.1
    needed_data = ("train_transcripts", "dev_transcripts")
    own_keys = {
        "finetune": ("vocab",),
        "data": ("train_transcripts", "dev_transcripts", "batch_seconds", "max_utterance_seconds"),
    }
    metric_names = ("utterances", "char_errors", "ref_chars")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._vocab: CharVocab | None = None

    @property
    def vocab(self) -> CharVocab:
        """The configured vocabulary, or the characters of the training transcripts."""
        if self._vocab is None:
            section = self.cfg.finetune
            if section.vocab is not None:
                self._vocab = load_vocab(section.vocab)
            else:
                path = self.cfg.data.train_transcripts
                texts = read_transcripts(path)
                try:
                    self._vocab = build_vocab(texts.values())
                except ValueError as e:
                    raise ValueError(f"{path}: {e}") from None
        return self._vocab

    def outputs(self) -> tuple[str, ...]:
        return self.vocab.tokens

    def build_model(self) -> nn.Module:
        self.vocab.save(Path(self.cfg.run.out_dir))  # beside the checkpoints, for reading
        return super().build_model()

    def _dataset(self, manifest: Path, transcripts: Path) -> UtteranceDataset:
        rows = read_manifest(manifest)
        # Before training: a row that contradicts its audio would be skipped at every epoch.
        check_manifest_audio(rows)
        ids = utterance_ids(rows, read_transcripts(transcripts), self.vocab, transcripts)
        max_samples = round(self.cfg.data.max_utterance_seconds * SAMPLE_RATE)
        return UtteranceDataset(rows, ids, max_samples)

    def train_batches(self, *, rank: int, world_size: int, pin_memory: bool):
        data = self.cfg.data
        return utterance_loader(
            self._dataset(data.train_manifest, data.train_transcripts),
            round(data.batch_seconds * SAMPLE_RATE),
            seed=self.cfg.run.seed,
            rank=rank,
            world_size=world_size,
            num_workers=data.num_workers,
            pin_memory=pin_memory,
        )

    def valid_batches(self, *, rank: int, world_size: int) -> ValidBatches:
        data = self.cfg.data
        return utterance_valid_batches(
            self._dataset(data.dev_manifest, data.dev_transcripts),
            round(data.batch_seconds * SAMPLE_RATE),
            rank=rank,
            world_size=world_size,
            max_batches=data.max_valid_batches,
        )

    def normaliser(self, batch: Batch) -> int:
        return int(batch.ctc_label_lengths.sum())

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> TaskLoss:
        logits, frame_lengths = model(batch.waveforms, batch.lengths, generator)
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (batch, frames, vocab)
        labels, label_lengths = batch.ctc_labels, batch.ctc_label_lengths
        loss_sum = F.ctc_loss(
            log_probs.transpose(0, 1),  # (frames, batch, vocab)
            labels.clamp(min=0),
            frame_lengths,
            label_lengths,
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        metrics: dict[str, Any] = {"utterances": len(label_lengths), "char_errors": 0.0,
                                   "ref_chars": 0.0}  # fmt: skip
        if not model.training:  # the CER costs a decode: validation only
            errors, chars = self.char_errors(log_probs, frame_lengths, labels, label_lengths)
            metrics.update(char_errors=errors, ref_chars=chars)
        return TaskLoss(loss_sum=loss_sum, metrics=metrics)

    def char_errors(self, log_probs, frame_lengths, labels, label_lengths) -> tuple[int, int]:
        """Character edit distance of the greedy decodes to the references, and the
        reference characters (texts compared as decode() writes them)."""
        vocab, errors, chars = self.vocab, 0, 0
        best = log_probs.detach().cpu().numpy()
        for b in range(best.shape[0]):
            hyp = vocab.decode(greedy_ctc_decode(best[b], int(frame_lengths[b])))
            ref = vocab.decode(labels[b, : int(label_lengths[b])].tolist())
            errors += edit_distance(ref, hyp)
            chars += len(ref)
        return errors, chars

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        if totals["ref_chars"] <= 0:  # training windows are not decoded
            return {}
        return {"cer": totals["char_errors"] / totals["ref_chars"]}

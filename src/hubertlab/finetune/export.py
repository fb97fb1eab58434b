"""A CTC fine-tuned model as a transformers folder: HubertForCTC weights and config, and the
processor (Wav2Vec2FeatureExtractor + Wav2Vec2CTCTokenizer over our vocab.json), so that

    model = transformers.HubertForCTC.from_pretrained(out)
    processor = transformers.Wav2Vec2Processor.from_pretrained(out)
    processor.batch_decode(model(**processor(wav, sampling_rate=16000, return_tensors="pt"))
                           .logits.argmax(-1))

gives our greedy decodes. Only a CTC head on the last layer exports: transformers' head reads
the last hidden state (after the pre-LN final norm), never a chosen layer or a weighted sum."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.text import CharVocab
from hubertlab.models.checkpoint import give_weights_umask_permissions
from hubertlab.models.config import HubertConfig
from hubertlab.models.convert import hf_config_dict, ours_to_hf
from hubertlab.models.finetune import FinetuneModel, model_from_state
from hubertlab.models.safe_load import safe_load


def export_ctc_transformers(model: FinetuneModel, out_dir: str | Path) -> Path:
    """Write HubertForCTC + processor files to out_dir; returns it. `model` is a CTC model
    (the caller asks its task, Task.exports_to)."""
    try:  # lazy: transformers is a heavy optional extra, only this export needs it
        import transformers
    except ImportError as e:
        raise ImportError("exporting to transformers needs `pip install hubertlab[interop]`") from e

    cfg = model.cfg
    if cfg.encoder != "backbone":
        raise ValueError("only CTC models with a Transformer encoder export to HubertForCTC")
    if cfg.layer != cfg.num_layers:
        raise ValueError(
            f"the head reads layer {cfg.layer!r}; HubertForCTC reads the last layer "
            f"({cfg.num_layers}): fine-tune with finetune.layer = {cfg.num_layers} to export"
        )
    vocab = CharVocab(cfg.outputs)
    fields = hf_config_dict(HubertConfig(backbone=cfg.backbone))
    fields.update(
        vocab_size=len(vocab),
        pad_token_id=vocab.blank_id,
        final_dropout=cfg.dropout,
        ctc_loss_reduction="sum",
        ctc_zero_infinity=True,
        mask_time_prob=0.0,  # no masked_spec_embed: our fine-tuning does not mask
    )
    hf = transformers.HubertForCTC(transformers.HubertConfig(**fields))
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state = {f"hubert.{k}": v for k, v in ours_to_hf(backbone).items()}
    state["lm_head.weight"] = model.head.weight.detach()
    state["lm_head.bias"] = model.head.bias.detach()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"HubertForCTC export: missing {missing}, unexpected {unexpected}")
    out_dir = Path(out_dir)
    hf.save_pretrained(str(out_dir))
    give_weights_umask_permissions(out_dir)
    vocab.save(out_dir)
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(out_dir))
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=cfg.backbone.normalize_waveform,
        return_attention_mask=cfg.backbone.conv_norm == "layer",
    )
    transformers.Wav2Vec2Processor(
        feature_extractor=extractor, tokenizer=tokenizer
    ).save_pretrained(str(out_dir))
    return out_dir


def read_finetuned(path: str | Path, kinds: Container[str]) -> FinetuneModel | None:
    """The model of a fine-tuning training checkpoint (its model_kind one of `kinds`, the
    fine-tuning tasks); None for anything else (a pretraining checkpoint or folder, other
    formats)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".pt":
        return None
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("model_kind") not in kinds:
        return None
    return model_from_state(state)

"""hubertlab export CHECKPOINT OUT --to hf|hubertlab|spidr"""

from __future__ import annotations

import argparse

from hubertlab.finetune.export import export_ctc_transformers, read_finetuned
from hubertlab.models.card import read_provenance, write_model_card
from hubertlab.models.checkpoint import export_transformers, from_pretrained, save_pretrained
from hubertlab.models.hubert import HubertModel
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_io import export_spidr
from hubertlab.tasks import FINETUNING


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="our dir or training checkpoint, a transformers dir, a torchaudio or fairseq file",
    )
    p.add_argument("out", help="folder to write")
    p.add_argument(
        "--to",
        choices=["hf", "hubertlab", "spidr"],
        default="hf",
        help="hf: a dir transformers.HubertModel.from_pretrained loads (no pretraining head), "
        "or for a CTC fine-tuning checkpoint a HubertForCTC + Wav2Vec2Processor dir, with a "
        "model card (README.md: architecture, training, ABX, usage; the licence left to fill); "
        "hubertlab: model.safetensors + config.json, head included; spidr (SpidR/DinoSR "
        "models): OUT.pt (or OUT/<kind>.pt) + config.json that the spidr package loads",
    )
    p.add_argument(
        "--num-units",
        type=int,
        nargs="+",
        help="unit-set sizes, needed for fairseq checkpoints with several label sets",
    )


def run(args: argparse.Namespace) -> int:
    finetuned = read_finetuned(args.checkpoint, FINETUNING)
    if finetuned is not None:
        formats = FINETUNING[finetuned.cfg.task].exports_to
        if args.to not in formats:
            raise ValueError(
                f"{args.checkpoint}: a {finetuned.cfg.task!r} fine-tuning checkpoint exports "
                + (f"--to {' | '.join(formats)} only" if formats else "to no format")
            )
        out = export_ctc_transformers(finetuned, args.out)
        card = write_model_card(
            out, finetuned.cfg.backbone, read_provenance(args.checkpoint), ctc=True
        )
        print(f"{args.checkpoint} -> {out} (HubertForCTC + processor, model card {card.name})")
        return 0
    overrides = {"num_units": tuple(args.num_units)} if args.num_units else {}
    model = from_pretrained(args.checkpoint, **overrides)
    written = args.to
    if args.to == "spidr":
        if not isinstance(model, DistillModel):
            raise ValueError(f"{args.checkpoint}: not a SpidR/DinoSR model; --to spidr needs one")
        out = export_spidr(model, args.out)
    elif args.to == "hf":
        if not isinstance(model, HubertModel):
            raise ValueError(f"{args.checkpoint}: --to hf exports HuBERT models only")
        out = export_transformers(model, args.out)
        card = write_model_card(out, model.cfg.backbone, read_provenance(args.checkpoint))
        written = f"hf, model card {card.name}"
    else:
        out = save_pretrained(model, args.out)
    print(f"{args.checkpoint} -> {out} ({written})")
    return 0

"""The long-form recipe as pipeline steps ([longform]; docs/long-form.md): VAD of the recordings,
then the spans the iterations train on (BabyHuBERT's segment policy, or the UPS selection) with
their validation split; with `shards`, each iteration packs its training spans into tar shards
after its units (HuBERT's units travel in the shards' JSON) and training streams them.

Every step resumes: VAD commits recording by recording (sharded like features, or SLURM jobs),
the spans are cheap to redo, finished tar shards are kept."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hubertlab.config import to_dict
from hubertlab.constants import SAMPLE_RATE
from hubertlab.curate.policy import policy_spans
from hubertlab.curate.shards import write_shards
from hubertlab.curate.speech import read_speech
from hubertlab.curate.ups import select_to_folder
from hubertlab.curate.vad import run_vad
from hubertlab.data.manifest import Manifest, ManifestRow, read_manifest, relocate, write_manifest
from hubertlab.data.scan import split_rows
from hubertlab.pipeline.config import PipelineConfig, predicts_units
from hubertlab.pipeline.executor import run_shards
from hubertlab.pipeline.fingerprint import InputFile, Upstream
from hubertlab.pipeline.runner import DONE, Step
from hubertlab.units.assign import read_units

log = logging.getLogger(__name__)

LONGFORM_DIR = "longform"
# [longform] keys the spans do not depend on (the VAD step has its own; shards come after),
# and the files, which are fingerprinted by their bytes instead of their paths.
SPAN_UNTRACKED = ("vad", "shards", "lid", "hours_table")
# With this many recordings or more, validation takes whole recordings (unseen audio); with
# fewer (a few day-long files), a fraction of every recording's spans.
MIN_VALID_RECORDINGS = 20


def vad_shard(shard: int, num_shards: int, manifest: str, out: str, backend: str) -> None:
    """One shard of the VAD (picklable: shard processes and SLURM jobs run it)."""
    run_vad(manifest, out, backend=backend, shard=shard, num_shards=num_shards)


def _recordings(cfg: PipelineConfig) -> dict[str, Path]:
    paths = {"train": cfg.corpus.train_manifest, "valid": cfg.corpus.valid_manifest}
    return {split: path for split, path in paths.items() if path is not None}


def _hours(rows: list[ManifestRow]) -> float:
    return sum(r.num_samples for r in rows) / SAMPLE_RATE / 3600


def recording_of(row: ManifestRow) -> str:
    """The recording a span was cut from (its audio file, or tar member)."""
    return f"{row.archive or ''}:{row.path}"


def split_spans(
    rows: list[ManifestRow], fraction: float, seed: int, source: Path
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """Train and validation spans of one set of recordings (see MIN_VALID_RECORDINGS)."""
    whole = len({recording_of(r) for r in rows}) >= MIN_VALID_RECORDINGS
    try:
        return split_rows(
            rows, valid_fraction=fraction, seed=seed, group_of=recording_of if whole else None
        )
    except ValueError:
        raise ValueError(
            f"{source}: {len(rows)} span(s) of speech: too few to split off a validation set; "
            "give corpus.valid_manifest (recordings) or more audio"
        ) from None


def longform_steps(cfg: PipelineConfig) -> tuple[list[Step], Upstream]:
    """The VAD and spans steps, and what the spans were made from (the iterations' manifests
    are fingerprinted by it)."""
    lf = cfg.longform
    root = cfg.out_dir / LONGFORM_DIR
    recordings = _recordings(cfg)

    def vad() -> dict:
        summary = {}
        for split, manifest in recordings.items():
            out = root / "vad" / split
            run_shards(cfg.executor, vad_shard, (str(manifest), str(out), lf.vad), root / "logs",
                       f"vad-{split}")  # fmt: skip
            found = read_speech(out)
            summary[split] = {
                "recordings": len(found),
                "hours": sum(f.duration_s for f in found) / 3600,
                "speech_hours": sum(f.speech_s for f in found) / 3600,
            }
        return summary

    def spans() -> dict:
        manifests = {split: read_manifest(path) for split, path in recordings.items()}
        roots = {split: manifest.root for split, manifest in manifests.items()}
        rows = {split: _spans(cfg, split, manifest, root) for split, manifest in manifests.items()}
        for split, found in rows.items():
            if not found:
                raise ValueError(f"{recordings[split]}: the VAD found no speech span in it")
        if "valid" not in rows:
            rows["train"], rows["valid"] = split_spans(
                rows["train"], lf.valid_fraction, cfg.seed, recordings["train"]
            )
            roots["valid"] = roots["train"]
        summary = {}
        for split in ("train", "valid"):
            path = cfg.manifest(split)
            write_manifest(relocate(rows[split], roots[split], path), path)
            summary[split] = {"spans": len(rows[split]), "hours": _hours(rows[split])}
        return summary

    vad_in = {"recordings": {s: InputFile(p) for s, p in recordings.items()}, "vad": lf.vad}
    vad_in["num_shards"] = cfg.executor.shards  # a VAD shard's file is named by its count
    # Every setting of the spans (the VAD's and the shards' are not), the files by their bytes.
    selection = {k: v for k, v in to_dict(lf).items() if k not in SPAN_UNTRACKED}
    selection.update(lid=InputFile(lf.lid), hours_table=InputFile(lf.hours_table), seed=cfg.seed)
    spans_in = {"vad": Upstream(vad_in), **selection}
    steps = [
        Step("longform/vad", root / "vad", vad, f"speech of the recordings ({lf.vad} VAD)",
             inputs=vad_in),
        Step("longform/spans", root / "spans", spans, _what(cfg), inputs=spans_in),
    ]  # fmt: skip
    return steps, Upstream(spans_in)


def _selection_name(cfg: PipelineConfig) -> str:
    return "UPS selection" if cfg.longform.selection == "ups" else "BabyHuBERT's segment policy"


def _what(cfg: PipelineConfig) -> str:
    lf = cfg.longform
    if lf.selection == "ups":
        picked = f"{lf.hours:g} h of {lf.chunk_seconds:g} s chunks"
    else:
        picked = f"{lf.min_seconds:g}-{lf.max_seconds:g} s speech spans"
    return f"{_selection_name(cfg)}: {picked}, and the validation spans"


def _spans(cfg: PipelineConfig, split: str, manifest: Manifest, root: Path) -> list[ManifestRow]:
    """The spans of one split's recordings (paths as in its manifest). Validation recordings
    are cut by the segment policy whatever the selection: an hour budget is for training."""
    lf = cfg.longform
    vad_dir = root / "vad" / split
    speech = read_speech(vad_dir)
    if lf.selection == "ups" and split == "train":
        rows, summary = select_to_folder(
            speech, manifest, lf.curation(), root / "spans" / "selection", source=str(vad_dir),
            lid=lf.lid, hours_table=lf.hours_table,
        )  # fmt: skip
        if not summary["budget_met"]:
            where = root / "spans" / "selection"
            log.warning("UPS selection: %.3f h picked of the %s h budget (summary: %s)",
                        summary["picked_hours"], lf.hours, where)  # fmt: skip
        return rows
    return policy_spans(speech, manifest, lf.policy(), str(vad_dir))


def shards_step(cfg: PipelineConfig, k: int, units_in: dict[str, Any]) -> tuple[Step, dict]:
    """Iteration k's training spans packed into longform.shards tar shards (with its units
    when it predicts units), and the step's inputs."""
    root = cfg.iteration_dir(k)
    num_shards = cfg.longform.shards

    def run() -> dict:
        manifest = read_manifest(cfg.manifest("train"))
        units = None
        if predicts_units(cfg, k):
            units = read_units(root / "units" / "train", manifest)
        index = write_shards(manifest, root / "shards", num_shards, units=units)
        return {"shards": num_shards, "spans": len(manifest), "index": str(index)}

    inputs = {"units": Upstream(units_in), "num_shards": num_shards}
    step = Step(f"iteration{k}/shards", root / "shards", run,
                f"training spans in {num_shards} tar shards", inputs=inputs)  # fmt: skip
    return step, inputs


def longform_report(cfg: PipelineConfig) -> list[str]:
    """The report's section on the recordings: hours, speech the VAD found, spans kept."""
    if cfg.longform is None:
        return []
    lf, root = cfg.longform, cfg.out_dir / LONGFORM_DIR
    lines = ["## Long-form recordings", ""]
    if not (root / "spans" / DONE).is_file():
        return [*lines, "The VAD and the spans have not run yet.", ""]
    vad = json.loads((root / "vad" / DONE).read_text())["summary"]
    spans = json.loads((root / "spans" / DONE).read_text())["summary"]
    for split, found in vad.items():
        share = found["speech_hours"] / max(found["hours"], 1e-12)
        lines.append(
            f"- {split} recordings: {found['recordings']}, {found['hours']:.2f} h; speech found "
            f"by the {lf.vad} VAD: {found['speech_hours']:.2f} h ({share:.0%})"
        )
    lines.append(
        f"- spans ({_selection_name(cfg)}): {spans['train']['spans']} for training "
        f"({spans['train']['hours']:.2f} h), {spans['valid']['spans']} for validation "
        f"({spans['valid']['hours']:.2f} h"
        + (", split from the training recordings)" if "valid" not in vad else ")")
    )
    if lf.shards:
        lines.append(f"- training streamed from {lf.shards} tar shards per iteration")
    return [*lines, ""]

"""`hubertlab demo --finetune`: what the demo's pretrained model is worth on two tasks.

On top of a finished `hubertlab demo OUT` run (its iteration-2 model, OUT/run/iteration2/model),
fine-tunes voice type classification (the demo VTC corpus, OUT/finetune/vtc_corpus-<settings>:
train / dev / test recordings with their own speakers) and CTC speech recognition (the demo
corpus's sentences: its training and validation manifests; scored on the held-out evaluation
corpus, other sentences) from
  (a) the pretrained model,
  (b) the same architecture randomly initialised, same recipe and steps,
  (c) the MFCC baseline (models.finetune.MfccEncoder) whose head has the same size,
and writes OUT/finetune/report.md: VTC macro F1 on test (thresholds tuned on dev), ASR CER and
WER on the evaluation corpus. Every run resumes from its checkpoints, every score is kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubertlab.config import to_dict
from hubertlab.data.manifest import read_manifest
from hubertlab.data.rttm import read_rttm_files, read_uem, write_rttm
from hubertlab.data.text import CharVocab, normalize_text, read_transcripts, write_transcripts
from hubertlab.data.windows import load_recordings
from hubertlab.demo.transcripts import write_demo_transcripts
from hubertlab.demo.vtc import MAX_SPEAKERS_PER_CLASS, VtcCorpusConfig, build_vtc_corpus
from hubertlab.evaluate.asr import error_rates
from hubertlab.evaluate.classification import detection_scores, macro_f1
from hubertlab.fileio import atomic_write_json, atomic_write_text
from hubertlab.finetune.inference import predict_turns, transcribe
from hubertlab.finetune.postprocess import load_thresholds
from hubertlab.models.finetune import pretrained_backbone
from hubertlab.tasks.finetune_config import finetune_config_from_dict
from hubertlab.tasks.vtc import THRESHOLDS_FILE
from hubertlab.train.checkpoint import best_checkpoint
from hubertlab.train.loop import train
from hubertlab.train.validate import model_from_checkpoint

log = logging.getLogger(__name__)

ENCODERS = ("pretrained", "random", "mfcc")


@dataclass(frozen=True)
class FinetuneDemoSettings:
    vtc_minutes: float = 24.0  # VTC training + dev recordings (3:1)
    # The VTC test split. Large, because 6 minutes scored the same model 7.7 points of macro F1
    # apart from 132 minutes of the same voices (docs/results.md).
    vtc_test_minutes: float = 30.0
    # Speakers of each voice type in each split: test scores 10 unseen voices per class.
    vtc_speakers: int = MAX_SPEAKERS_PER_CLASS
    # The budget of the comparison in docs/results.md (~20 min on 2 cores for the six runs).
    vtc_steps: int = 1000
    ctc_steps: int = 300
    seed: int = 0
    pretrained: str | None = None  # another model folder than OUT/run/iteration2/model

    def __post_init__(self) -> None:
        if not min(self.vtc_minutes, self.vtc_test_minutes) > 0:
            raise ValueError("--vtc-minutes and --vtc-test-minutes must be > 0")
        if min(self.vtc_steps, self.ctc_steps) < 1:
            raise ValueError("--vtc-steps and --ctc-steps must be >= 1")
        if not 1 <= self.vtc_speakers <= MAX_SPEAKERS_PER_CLASS:
            raise ValueError(f"--vtc-speakers must be in 1..{MAX_SPEAKERS_PER_CLASS}")

    def vtc_corpus(self) -> VtcCorpusConfig:
        """The demo VTC corpus: vtc_minutes of training and dev audio, vtc_test_minutes of test."""
        total = self.vtc_minutes + self.vtc_test_minutes
        train, dev = 0.75 * self.vtc_minutes / total, 0.25 * self.vtc_minutes / total
        return VtcCorpusConfig(
            minutes=total,
            speakers_per_class=self.vtc_speakers,
            seed=self.seed,
            split_fractions=(train, dev, 1 - train - dev),
        )

    def vtc_tag(self) -> str:
        """Names the VTC corpus (and its runs): other settings are another corpus, kept apart."""
        return (
            f"{self.vtc_minutes:g}+{self.vtc_test_minutes:g}min-{self.vtc_speakers}voices-"
            f"seed{self.seed}"
        )

    def run_name(self, task: str, kind: str) -> str:
        """The folder of one run of `task` from encoder `kind` (the `<task>_run_name` below):
        another budget, VTC corpus or seed is another run."""
        return getattr(self, f"{task}_run_name")(kind)

    def vtc_run_name(self, kind: str) -> str:
        """The folder of one VTC run: another budget, VTC corpus or seed is another run."""
        return f"vtc-{kind}-{self.vtc_steps}steps-{self.vtc_tag()}"

    def ctc_run_name(self, kind: str) -> str:
        """The folder of one CTC run. Seed 0 keeps the name CTC runs had before the seed was
        part of it."""
        return f"ctc-{kind}-{self.ctc_steps}steps" + (f"-seed{self.seed}" if self.seed else "")


@dataclass(frozen=True)
class DemoRecipe:
    """How the demo fine-tunes one task: its [finetune] task, [data], steps and peak lr, the
    hidden state its head reads, its run folders and its score on held-out data."""

    task: str
    data: dict[str, Any]
    steps: int
    lr: float
    # The last layer (what exports), the encoder frozen for the first sixth of the steps (the
    # CTC recipe); otherwise a weighted sum of the layers (segma's VTC).
    last_layer: bool
    run_name: Callable[[str], str]  # encoder kind -> run folder name
    score: Callable[[Any], dict[str, Any]]  # the run's config -> its scores


def pretrained_model(out: Path, path: str | None = None) -> Path:
    """The demo's iteration-2 model folder (or `path`), or an error that says how to make it."""
    model = Path(path) if path else out / "run" / "iteration2" / "model"
    if path and not (model / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model}: no model.safetensors (a save_pretrained folder)")
    if not (model / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{model}: no pretrained demo model; run `hubertlab demo {out}` first (about 15 min "
            "on 2 cores), then `hubertlab demo --finetune` on the same folder"
        )
    return model


def _encoder(kind: str, pretrained: Path) -> dict[str, Any]:
    """The [finetune] keys of one encoder: the random one has the pretrained architecture, the
    MFCC frame model its width."""
    backbone, _ = pretrained_backbone(str(pretrained), {})
    if kind == "pretrained":
        return {"encoder": str(pretrained)}
    if kind == "random":
        return {"encoder": "random", "preset": "tiny", "overrides": to_dict(backbone)}
    return {"encoder": "mfcc", "mfcc_dim": backbone.hidden_dim}


def _config(recipe: DemoRecipe, kind: str, pretrained: Path, run_dir: Path, seed: int) -> Any:
    task, steps = recipe.task, recipe.steps
    layers = _encoder(kind, pretrained)
    if recipe.last_layer:
        num_layers = pretrained_backbone(str(pretrained), {})[0].num_layers
        layers["layer"] = 0 if kind == "mfcc" else num_layers
        layers["freeze_encoder_steps"] = steps // 6
    return finetune_config_from_dict(
        {
            "finetune": {"task": task, **layers},
            "data": recipe.data,
            "optim": {
                "lr": recipe.lr,
                "warmup_fraction": 0.1,
                "schedule": "cosine",
                "max_steps": steps,
                "clip_grad_norm": 5.0,
            },
            "run": {
                "out_dir": str(run_dir),
                "seed": seed,
                "precision": "bf16",
                "log_every": 25,
                "ckpt_every": max(1, steps // 3),
                "valid_every": max(1, steps // 3),
                "keep_last": 1,
                "progress_bar": False,
            },
        },  # fmt: skip
        where=f"demo {task} {kind}",
    )


def _vtc_score(cfg: Any, corpus: Path) -> dict[str, Any]:
    out, classes = Path(cfg.run.out_dir), tuple(cfg.finetune.classes)
    model = model_from_checkpoint(best_checkpoint(out / "checkpoints"))
    thresholds = load_thresholds(out / THRESHOLDS_FILE, classes)
    test = corpus / "test"
    turns = predict_turns(model, load_recordings(test / "manifest.csv", {}), thresholds, classes)
    write_rttm(turns, out / "test.rttm")
    hypothesis: dict[str, list] = {}
    for turn in turns:
        hypothesis.setdefault(turn.fileid, []).append(turn)
    reference = read_rttm_files(test / "reference.rttm", classes=classes)
    scores = detection_scores(reference, hypothesis, classes, uem=read_uem(test / "all.uem"))
    per_class = {f"f1_{s.label}": s.f1 for s in scores if s.defined}  # absent: no score
    return {"macro_f1": macro_f1(scores), **per_class}


def _ctc_score(cfg: Any, eval_corpus: Path) -> dict[str, Any]:
    out = Path(cfg.run.out_dir)
    model = model_from_checkpoint(best_checkpoint(out / "checkpoints"))
    texts = transcribe(
        model, read_manifest(eval_corpus / "manifest.csv"), CharVocab(model.cfg.outputs)
    )
    write_transcripts(texts, out / "eval_hypotheses.tsv")
    reference = read_transcripts(eval_corpus / "transcripts.tsv")
    (rate, *_) = error_rates(reference, texts, normalize=normalize_text)
    return {"cer": rate.cer, "wer": rate.wer}


def _run_one(recipe: DemoRecipe, kind: str, pretrained: Path, run_dir: Path,
             seed: int) -> dict[str, Any]:  # fmt: skip
    """Fine-tune (or resume) and score one (task, encoder); a finished score is kept."""
    done = run_dir / "score.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    cfg = _config(recipe, kind, pretrained, run_dir, seed)
    start, cpu = time.perf_counter(), time.process_time()
    train(cfg)
    train_s = time.perf_counter() - start
    task, steps = recipe.task, recipe.steps
    result = {"task": task, "encoder": kind, "steps": steps, "train_s": round(train_s, 1),
              **recipe.score(cfg)}  # fmt: skip
    # CPU time (all threads) as well: on a shared machine it measures the work.
    result["total_s"] = round(time.perf_counter() - start, 1)
    result["cpu_s"] = round(time.process_time() - cpu, 1)
    atomic_write_json(done, result)
    log.info("%s %s: %s", task, kind, result)
    return result


def run_finetune_demo(out_dir: str | Path, settings: FinetuneDemoSettings = FinetuneDemoSettings()):
    """Build the data, fine-tune the 2 x 3 runs, write OUT/finetune/report.md; returns its path."""
    out = Path(out_dir)
    pretrained = pretrained_model(out, settings.pretrained)
    start = time.perf_counter()
    results = finetune_runs(out, settings, ENCODERS, pretrained)
    root = out / "finetune"
    report = root / "report.md"
    seconds = time.perf_counter() - start
    atomic_write_text(report, format_report(results, pretrained, settings, seconds))
    atomic_write_json(root / "results.json", results)
    return report


def finetune_runs(out: Path, settings: FinetuneDemoSettings, kinds, pretrained: Path) -> list:
    """Fine-tune and score VTC and CTC from each encoder of `kinds` (the random and MFCC
    encoders take only the architecture of `pretrained`); runs already scored are reused."""
    root = out / "finetune"
    vtc = root / f"vtc_corpus-{settings.vtc_tag()}"
    build_vtc_corpus(vtc, settings.vtc_corpus())
    corpus = out / "corpus"
    for split in ("train", "eval"):
        if not (corpus / split / "transcripts.tsv").is_file():
            write_demo_transcripts(corpus / split)
    vtc_data = {
        "train_manifest": str(vtc / "train" / "manifest.csv"),
        "dev_manifest": str(vtc / "dev" / "manifest.csv"),
        "train_rttm": str(vtc / "train" / "reference.rttm"),
        "dev_rttm": str(vtc / "dev" / "reference.rttm"),
        "train_uem": str(vtc / "train" / "all.uem"),
        "dev_uem": str(vtc / "dev" / "all.uem"),
        "batch_size": 8,
    }
    transcripts = str(corpus / "train" / "transcripts.tsv")
    ctc_data = {
        "train_manifest": str(corpus / "train" / "manifest.train.csv"),
        "dev_manifest": str(corpus / "train" / "manifest.valid.csv"),
        "train_transcripts": transcripts,
        "dev_transcripts": transcripts,
        "batch_seconds": 32.0,
        "max_utterance_seconds": 16.0,
    }
    recipes = (
        DemoRecipe("vtc", vtc_data, settings.vtc_steps, lr=5e-4, last_layer=False,
                   run_name=settings.vtc_run_name, score=lambda cfg: _vtc_score(cfg, vtc)),
        DemoRecipe("ctc", ctc_data, settings.ctc_steps, lr=1e-3, last_layer=True,
                   run_name=settings.ctc_run_name,
                   score=lambda cfg: _ctc_score(cfg, corpus / "eval")),
    )  # fmt: skip
    results = []
    for kind in kinds:
        for recipe in recipes:
            run_dir = root / recipe.run_name(kind)
            results.append(_run_one(recipe, kind, pretrained, run_dir, settings.seed))
    return results


def format_report(
    results: list[dict[str, Any]], pretrained: Path, settings: FinetuneDemoSettings, seconds: float
) -> str:
    by = {(r["task"], r["encoder"]): r for r in results}
    names = {"pretrained": f"pretrained (`{pretrained}`)", "random": "random init, same recipe",
             "mfcc": "MFCC frame model, same head"}  # fmt: skip
    lines = [
        "# Fine-tuning the demo model",
        "",
        "| encoder | VTC macro F1 (%), test | ASR CER (%), eval | ASR WER (%), eval |",
        "|---|---|---|---|",
    ]
    for kind in ENCODERS:
        vtc, ctc = by[("vtc", kind)], by[("ctc", kind)]
        lines.append(f"| {names[kind]} | {100 * vtc['macro_f1']:.1f} | {100 * ctc['cer']:.1f} "
                     f"| {100 * ctc['wer']:.1f} |")  # fmt: skip
    corpus = settings.vtc_corpus()
    minutes = [round(corpus.minutes * f, 1) for f in corpus.split_fractions]
    lines += ["", f"VTC corpus `vtc_corpus-{settings.vtc_tag()}`: train / dev / test "
              f"{minutes[0]:g} / {minutes[1]:g} / {minutes[2]:g} min, {settings.vtc_speakers} "
              "voices per class in each split."]  # fmt: skip
    lines += ["", "CPU: seconds of the training process (its data workers not counted).", "",
              "| run | steps | training (s) | with scoring (s) | CPU (s) | per class F1 (%) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        per_class = ", ".join(f"{k[3:]} {100 * v:.1f}" for k, v in r.items() if k.startswith("f1_"))
        lines.append(f"| {r['task']} {r['encoder']} | {r['steps']} | {r['train_s']} "
                     f"| {r['total_s']} | {r['cpu_s']} | {per_class} |")  # fmt: skip
    lines += ["", f"Wall time of this invocation: {seconds:.0f} s (runs already done are reused)."]
    return "\n".join(lines) + "\n"

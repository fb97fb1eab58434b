"""`hubertlab init AUDIO OUT` (init_run): scan the audio (or read a manifest), measure it, split a
validation set and write OUT/pipeline.toml, sized by hubertlab.init.sizing, every choice
commented. Long recordings get a [longform] table: the pipeline runs the VAD and the segment
policy before the iterations and splits the validation spans itself."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.build import build_manifest
from hubertlab.data.manifest import manifest_format, read_manifest, relocate, write_manifest
from hubertlab.data.scan import split_rows
from hubertlab.demo.corpus import DemoCorpusConfig, build_demo_corpus
from hubertlab.fileio import atomic_write_text
from hubertlab.init.config_text import model_table, render_config
from hubertlab.init.options import CorpusStats, InitOptions
from hubertlab.init.sizing import SECONDS_PER_HOUR, Plan, plan_run
from hubertlab.init.step_time import measure_step_seconds
from hubertlab.models.checkpoint import from_pretrained
from hubertlab.pipeline.config import load_pipeline_config

log = logging.getLogger(__name__)

# Recordings longer than this (median) are long-form: whole-file random crops would see a few
# seconds of each per pass, silence included (BabyHuBERT cuts them into 2-30 s speech spans).
LONG_FORM_MEDIAN_SECONDS = 60.0


def corpus_stats(rows) -> CorpusStats:
    seconds = [r.num_samples / SAMPLE_RATE for r in rows]
    return CorpusStats(
        num_files=len(seconds),
        hours=sum(seconds) / SECONDS_PER_HOUR,
        median_seconds=statistics.median(seconds),
        shortest_seconds=min(seconds),
        longest_seconds=max(seconds),
    )


def valid_fraction(hours: float) -> float:
    """5% of the files, but about 1 h at most: validation runs at every checkpoint."""
    return min(0.05, max(0.001, 1.0 / hours))


def _manifest(audio: Path, out: Path) -> tuple[list, int]:
    """The corpus's rows, with paths relative to OUT, and the number of rejected files.
    A folder or tar is scanned as `hubertlab manifest` does (OUT/manifest.csv and
    OUT/manifest.csv.rejected.tsv)."""
    if audio.is_file() and audio.suffix.lower() in (".csv", ".tsv", ".jsonl"):
        manifest_format(audio)
        source = read_manifest(audio)
        rows = relocate(source, source.root, out / "manifest.csv")
        write_manifest(rows, out / "manifest.csv")
        return rows, 0
    result = build_manifest(audio, out / "manifest.csv")
    if result.num_rows == 0:
        raise ValueError(
            f"{audio}: no usable audio file (reasons in {result.report})"
            if result.num_rejected
            else f"{audio}: no audio file found"
        )
    return list(read_manifest(out / "manifest.csv")), result.num_rejected


def long_form_reason(options: InitOptions, stats: CorpusStats) -> str | None:
    """Why the recordings take the long-form path, or None."""
    if options.long_form:
        return "--long-form"
    if options.ups_hours is not None:
        return f"--hours {options.ups_hours:g}: the UPS selection"
    if stats.median_seconds > LONG_FORM_MEDIAN_SECONDS:
        return (
            f"the median recording is {stats.median_seconds:.0f} s"
            f" (> {LONG_FORM_MEDIAN_SECONDS:g} s)"
        )
    return None


DEFAULTS = InitOptions()


def init_run(audio: str | Path, out: str | Path, options: InitOptions = DEFAULTS) -> Path:
    """Write OUT/pipeline.toml (and its manifests, and the synthetic evaluation corpus with
    `eval_demo`); returns its path."""
    audio, out = Path(audio), Path(out)
    if not audio.exists():
        raise FileNotFoundError(f"no such folder, archive or manifest: {audio}")
    if options.init_from is not None and not Path(options.init_from).exists():
        raise FileNotFoundError(f"--init-from: not found: {options.init_from}")
    if options.lid is not None and not Path(options.lid).is_file():
        raise FileNotFoundError(f"--lid: not found: {options.lid}")
    out.mkdir(parents=True, exist_ok=True)
    rows, rejected = _manifest(audio, out)
    stats = corpus_stats(rows)
    log.info(
        "%s: %d files, %.2f h, median %.1f s (%d rejected)",
        audio, stats.num_files, stats.hours, stats.median_seconds, rejected,
    )  # fmt: skip
    long_form = long_form_reason(options, stats)
    fraction = valid_fraction(stats.hours)
    if long_form:  # the pipeline splits the validation spans ([longform] valid_fraction)
        train, valid = rows, []
        log.info("long-form recordings (%s): the pipeline cuts them into speech spans", long_form)
    else:
        train, valid = split_rows(rows, valid_fraction=fraction, seed=options.seed)
        write_manifest(train, out / "manifest.train.csv")
        write_manifest(valid, out / "manifest.valid.csv")
    train_hours = sum(r.num_samples for r in train) / SAMPLE_RATE / SECONDS_PER_HOUR
    if options.ups_hours is not None:  # the budget, when the recordings hold more
        train_hours = min(train_hours, options.ups_hours)
    sizing = dict(
        model=options.model, init_from=options.init_from is not None, steps=options.steps,
        with_eval=options.eval_demo, vad_hours=stats.hours if long_form else 0.0,
    )  # fmt: skip
    plan = plan_run(train_hours, options.hardware, **sizing)
    if options.measure_step and options.hardware.training_gpus == 0:
        step = measure_step_seconds(
            plan.model, model_table(plan, options.init_from),
            batch_seconds=plan.batch_seconds, crop_seconds=plan.max_crop_seconds,
        )  # fmt: skip
        log.info("one training step takes %.2f s on this machine now", step)
        plan = plan_run(train_hours, options.hardware, **sizing, cpu_step_seconds=step)
    short = sum(r.num_samples < plan.min_crop_seconds * SAMPLE_RATE for r in train)
    if short and not long_form:
        log.warning(
            "%d of %d training files are shorter than min_crop_seconds = %g and are left out",
            short, len(train), plan.min_crop_seconds,
        )  # fmt: skip
    if options.eval_demo:
        _build_eval(out / "eval", options)
    layer = _init_layer(options.init_from, plan) if options.init_from else plan.layer
    config = out / "pipeline.toml"
    text = render_config(
        plan, stats, options, audio=audio, config=config, num_valid=len(valid),
        valid_fraction=fraction, rejected=rejected, layer=layer, long_form=long_form,
    )  # fmt: skip
    atomic_write_text(config, text)
    load_pipeline_config(config)  # what we write must load; a bug here, not the user's
    return config


def _build_eval(folder: Path, options: InitOptions) -> None:
    try:
        cfg = DemoCorpusConfig(
            minutes=options.eval_minutes, speakers=8, languages=options.eval_languages,
            seed=options.seed, split="eval",
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"--eval demo: {e}") from None
    build_demo_corpus(folder, cfg)


def _init_layer(path: Path, plan: Plan) -> int:
    """The layer of the --init-from model whose units are the targets: 6 of a 12-layer model
    (HuBERT base's second iteration), the middle layer of another."""
    model = from_pretrained(path)
    num_layers = len(model.backbone.encoder.layers)
    return plan.layer if num_layers == 12 else max(1, num_layers // 2)

"""`hubertlab demo --model ...`: the demo's models side by side (OUT/models.md, models.json),
from what their pipeline runs left on disk. Every figure is read from a run (the pipeline's
ABX, unit quality, codebook quality, metrics and step times); nothing is recomputed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubertlab.fileio import atomic_write_json, atomic_write_text
from hubertlab.pipeline.config import (
    PipelineConfig,
    load_pipeline_config,
    predicts_units,
    train_config,
)
from hubertlab.pipeline.report import baseline_scores, fmt, read_json, step_seconds
from hubertlab.pipeline.steps import build_steps
from hubertlab.tasks import PRETRAINING_KINDS, display_name
from hubertlab.train.metrics import read_metrics

# The models `hubertlab demo --model` trains, by model kind, as the report names them.
MODEL_NAMES = {kind: display_name(kind) for kind in PRETRAINING_KINDS}

CAPTION = """\
One row per model (its last iteration) on the held-out corpus, then the MFCC baselines. ABX:
the hidden state of every Transformer layer (each layer's output after its residual add, as
the pipeline scores it, for SpidR and DinoSR too; `hubertlab abx --intermediate` scores their
outputs before the residual), best layer by the mean of the within- and across-speaker
errors. k-means PNMI: units of a k-means (k of the table) fitted on the training corpus's
features of the layer shown, scored on the held-out phones (HuBERT: the layer the pipeline
clusters for a next iteration; SpidR and DinoSR: their best layer). Codebook PNMI: the argmax
of the head of each codebook (the codebook of teacher layer L; SpidR's head reads student
layer L, DinoSR's heads all read the last), the best head shown (all in models.json).
Perplexities: target / pred per codebook (2^entropy, at most the codebook size), from the last
validation record.
Wall time: the training steps, and every step of the run but the MFCC baseline; the figures
come from one machine, which may have been shared."""


def model_summary(cfg: PipelineConfig) -> dict[str, Any]:
    """What models.md shows of one pipeline run ("-" cells where a step is not done)."""
    n = len(cfg.iterations)
    last = cfg.iteration_dir(n)
    abx = read_json(last / "abx" / "abx.json")
    summary: dict[str, Any] = {
        "run": str(cfg.out_dir),
        "steps": [train_config(cfg, k).optim.max_steps for k in range(1, n + 1)],
        "abx_per_layer": {},
    }
    if abx is not None:
        summary["best_layer"] = abx["best"]["layer"]
        for score in abx["scores"]:
            summary["abx_per_layer"][str(score["layer"])] = {
                mode: score[mode]["error_percent"] for mode in ("within", "across") if mode in score
            }
    targets = cfg.iteration_dir(n + 1)  # the k-means units of the last model (final_units)
    quality = read_json(targets / "quality" / "quality.json")
    source = read_json(targets / "features" / "DONE.json")
    kmeans = read_json(targets / "kmeans" / "DONE.json")
    if quality is not None and source is not None and kmeans is not None:
        summary["kmeans_units"] = {
            "layer": source["summary"]["layer"],
            "k": kmeans["summary"]["k"],
            "pnmi": quality["pnmi"],
        }
    if not predicts_units(cfg, n):
        summary["codebook_units"] = read_json(last / "codebooks" / "quality.json")
        summary["perplexity"] = _final_perplexities(last / "train" / "metrics.jsonl")
    steps = build_steps(cfg)
    # Like every other figure here, read from the run even where a newer hubertlab would redo it.
    seconds = step_seconds(steps, stale=True)
    trained = [s for s in steps if s.name.endswith("/train")]
    model_steps = [s for s in steps if not s.name.startswith("baseline/")]
    summary["train_seconds"] = _total(seconds, trained)
    summary["total_seconds"] = _total(seconds, model_steps)
    return summary


def _total(seconds: dict[str, float | None], steps) -> float | None:
    values = [seconds[step.name] for step in steps]
    return None if None in values else round(sum(values), 1)


def _final_perplexities(path: Path) -> dict[str, dict[str, float]] | None:
    """{layer: {"target", "pred"}} of the last validation record (else the last training one)."""
    if not path.is_file():
        return None
    records = [r for r in read_metrics(path) if "target_ppl" in r]
    valid = [r for r in records if r.get("split") == "valid"]
    if not (valid or records):
        return None
    record = (valid or records)[-1]
    layers = sorted(int(key.removeprefix("target_ppl_layer")) for key in record
                    if key.startswith("target_ppl_layer"))  # fmt: skip
    return {
        str(layer): {
            "target": record[f"target_ppl_layer{layer}"],
            "pred": record.get(f"pred_ppl_layer{layer}"),
        }
        for layer in layers
    }


def _kmeans_cell(summary: dict[str, Any]) -> str:
    units = summary.get("kmeans_units")
    if units is None:
        return "-"
    return f"{fmt(units['pnmi'], 3)} (layer {units['layer']}, k={units['k']})"


def _codebook_cell(summary: dict[str, Any]) -> str:
    if "codebook_units" not in summary:
        return "n/a"
    report = summary["codebook_units"]
    if report is None:
        return "-"
    best = str(report["best_layer"])
    return f"{fmt(report['layers'][best]['pnmi'], 3)} (head of layer {best})"


def _perplexity_cell(summary: dict[str, Any]) -> str:
    if "perplexity" not in summary:
        return "n/a"
    if summary["perplexity"] is None:
        return "-"
    return ", ".join(
        f"L{layer}: {fmt(p['target'], 1)} / {fmt(p['pred'], 1)}"
        for layer, p in summary["perplexity"].items()
    )


def models_table(models: dict[str, dict[str, Any]], baselines: list[dict[str, Any]]) -> list[str]:
    """The side-by-side table: one row per model, then one per baseline."""
    lines = [
        "| model | steps | best layer | ABX within (%) | ABX across (%) | k-means PNMI "
        "| codebook PNMI | perplexity target / pred | training (s) | total (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in models.items():
        best = s["abx_per_layer"].get(str(s.get("best_layer")), {})
        lines.append(
            f"| {MODEL_NAMES[kind]} | {' + '.join(map(str, s['steps']))} "
            f"| {s.get('best_layer', '-')} | {fmt(best.get('within'))} "
            f"| {fmt(best.get('across'))} | {_kmeans_cell(s)} | {_codebook_cell(s)} "
            f"| {_perplexity_cell(s)} | {fmt(s['train_seconds'], 0)} "
            f"| {fmt(s['total_seconds'], 0)} |"
        )
    for score in baselines:
        within = score.get("within", {}).get("error_percent")
        across = score.get("across", {}).get("error_percent")
        lines.append(
            f"| {score['name']} (baseline) | | | {fmt(within)} | {fmt(across)} | | | | | |"
        )
    return lines


def abx_layers_table(models: dict[str, dict[str, Any]]) -> list[str]:
    """ABX within / across of every layer, one row per model."""
    layers = sorted({int(layer) for s in models.values() for layer in s["abx_per_layer"]})
    lines = [
        "| model | " + " | ".join(f"layer {layer}" for layer in layers) + " |",
        "|---|" + "---|" * len(layers),
    ]
    for kind, s in models.items():
        cells = []
        for layer in layers:
            score = s["abx_per_layer"].get(str(layer), {})
            cells.append(f"{fmt(score.get('within'))} / {fmt(score.get('across'))}")
        lines.append(f"| {MODEL_NAMES[kind]} | " + " | ".join(cells) + " |")
    return lines


def write_models_report(out: str | Path, configs: dict[str, Path]) -> Path:
    """OUT/models.md and models.json of the runs of `configs` (model kind -> pipeline config
    of a run; a run not finished shows "-"). Returns models.md's path."""
    out = Path(out)
    models, baselines = {}, []
    for kind, config in configs.items():
        cfg = load_pipeline_config(config)
        models[kind] = model_summary(cfg)
        baselines = baselines or baseline_scores(cfg)  # the same corpus: any run's
    lines = [
        "# hubertlab demo: models side by side",
        "",
        CAPTION,
        "",
        *models_table(models, baselines),
        "",
        "## ABX per layer (within / across speakers, %)",
        "",
        *abx_layers_table(models),
        "",
    ]
    baseline_json = [
        {"name": s["name"], **{m: s[m]["error_percent"] for m in ("within", "across") if m in s}}
        for s in baselines
    ]
    atomic_write_json(out / "models.json", {"models": models, "baselines": baseline_json})
    path = out / "models.md"
    atomic_write_text(path, "\n".join(lines))
    return path

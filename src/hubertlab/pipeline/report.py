"""The run's report: report.md plus PNGs, from what the steps left on disk. Numbers come from
the run as they are; a missed target shows as missed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hubertlab.evaluate.abx_curves import CURVES_DIR, CURVES_NAME, summary_table
from hubertlab.fileio import atomic_write_text
from hubertlab.pipeline.config import PipelineConfig
from hubertlab.pipeline.longform import longform_report
from hubertlab.pipeline.runner import Step, read_done, step_state
from hubertlab.train.metrics import read_metrics


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None if there is no such file (a step not done yet)."""
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a table; "-" when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def _units_table(cfg: PipelineConfig, num_iterations: int) -> list[str]:
    lines = [
        "| units | made from | k | PNMI | phone purity | cluster purity | perplexity | used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in range(1, num_iterations + 2):
        root = cfg.iteration_dir(k)
        quality = read_json(root / "quality" / "quality.json")
        source = read_json(root / "features" / "DONE.json")
        kmeans = read_json(root / "kmeans" / "DONE.json")
        if quality is None or source is None or kmeans is None:
            continue
        spec = source["summary"]
        made_from = (
            "MFCC" if spec["kind"] == "mfcc" else f"iteration {k - 1}, layer {spec['layer']}"
        ) + (" + CMVN" if spec.get("cmvn") else "")
        label = f"iteration {k} targets" if k <= num_iterations else "next iteration's targets"
        lines.append(
            f"| {label} | {made_from} | {kmeans['summary']['k']} "
            f"| {fmt(quality['pnmi'], 3)} | {fmt(quality['phone_purity'], 3)} "
            f"| {fmt(quality['cluster_purity'], 3)} | {fmt(quality['unit_perplexity'], 1)} "
            f"| {quality['used_units']} |"
        )
    return lines


def _codebook_table(cfg: PipelineConfig, num_iterations: int) -> list[str]:
    """SpidR/DinoSR: the units of each codebook head (argmax), scored as k-means units."""
    lines = []
    for k in range(1, num_iterations + 1):
        report = read_json(cfg.iteration_dir(k) / "codebooks" / "quality.json")
        for layer, quality in (report or {"layers": {}})["layers"].items():
            mark = " (best)" if int(layer) == report["best_layer"] else ""
            lines.append(
                f"| iteration {k}, head of layer {layer}{mark} | {fmt(quality['pnmi'], 3)} "
                f"| {fmt(quality['phone_purity'], 3)} | {fmt(quality['cluster_purity'], 3)} "
                f"| {fmt(quality['unit_perplexity'], 1)} | {quality['used_units']} |"
            )
    if not lines:
        return []
    header = "| codebook units | PNMI | phone purity | cluster purity | perplexity | used |"
    return ["", header, "|---|---|---|---|---|---|", *lines]


def _abx_table(cfg: PipelineConfig, num_iterations: int) -> list[str]:
    lines = ["| features | within-speaker ABX (%) | across-speaker ABX (%) |", "|---|---|---|"]
    for score in baseline_scores(cfg):
        within = score.get("within", {}).get("error_percent")
        across = score.get("across", {}).get("error_percent")
        lines.append(f"| {score['name']} (baseline) | {fmt(within)} | {fmt(across)} |")
    for k in range(1, num_iterations + 1):
        report = read_json(cfg.iteration_dir(k) / "abx" / "abx.json")
        if report is None:
            continue
        best_layer = report["best"]["layer"]
        for score in report["scores"]:
            mark = " (best)" if score["layer"] == best_layer else ""
            within = score.get("within", {}).get("error_percent")
            across = score.get("across", {}).get("error_percent")
            lines.append(
                f"| iteration {k}, {score['name']}{mark} | {fmt(within)} | {fmt(across)} |"
            )
    return lines


def _standing(cfg: PipelineConfig, num_iterations: int) -> list[str]:
    """The report's opening: each iteration's best layer against the strong baseline (MFCC +
    CMVN), said plainly: which is ahead, by how many points, in each speaker mode."""
    baselines = baseline_scores(cfg)
    if not baselines:
        return []
    strong = baselines[0]
    lines = [
        f"| model | best layer | within % | across % | against {strong['name']} |",
        "|---|---|---|---|---|",
    ]
    for k in range(1, num_iterations + 1):
        report = read_json(cfg.iteration_dir(k) / "abx" / "abx.json")
        if report is None:
            continue
        best = next(s for s in report["scores"] if s["layer"] == report["best"]["layer"])
        verdicts = []
        for mode in ("within", "across"):
            if mode in best and mode in strong:
                gap = best[mode]["error_percent"] - strong[mode]["error_percent"]
                ahead = "model" if gap < 0 else "baseline"
                verdicts.append(f"{mode}: {ahead} ahead by {abs(gap):.2f}")
        within = best.get("within", {}).get("error_percent")
        across = best.get("across", {}).get("error_percent")
        lines.append(
            f"| iteration {k} | {best['layer']} | {fmt(within)} | {fmt(across)} "
            f"| {'; '.join(verdicts)} |"
        )
    within = strong.get("within", {}).get("error_percent")
    across = strong.get("across", {}).get("error_percent")
    lines.append(f"| {strong['name']} (baseline) | | {fmt(within)} | {fmt(across)} | |")
    return lines


def baseline_scores(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The baseline's ABX rows, the strong one (MFCC + CMVN) first."""
    baseline = read_json(cfg.out_dir / "baseline" / "abx.json")
    return [] if baseline is None else baseline["scores"]


def _two_panels():
    import matplotlib  # lazy: slow to import; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    return plt.subplots(1, 2, figsize=(11, 4))


def _save(fig, axes, png: Path, drawn: bool) -> bool:
    """Grid and legend on each panel; the PNG is written only if something was drawn."""
    import matplotlib.pyplot as plt  # lazy: slow to import; only the figure needs it

    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:  # a panel with nothing drawn has no legend
            ax.legend(fontsize=8)
    fig.tight_layout()
    if drawn:
        fig.savefig(png, dpi=100)
    plt.close(fig)
    return drawn


def _plot_training(cfg: PipelineConfig, num_iterations: int, png: Path) -> bool:
    fig, (ax_loss, ax_acc) = _two_panels()
    drawn = False
    for k in range(1, num_iterations + 1):
        path = cfg.iteration_dir(k) / "train" / "metrics.jsonl"
        if not path.is_file():
            continue
        records = read_metrics(path)
        for split, style in (("train", "-"), ("valid", "o--")):
            rows = [r for r in records if r.get("split") == split and "loss" in r]
            if not rows:
                continue
            steps = [r["step"] for r in rows]
            ax_loss.plot(steps, [r["loss"] for r in rows], style, label=f"it{k} {split}", ms=3)
            if "masked_acc" in rows[0]:
                ax_acc.plot(
                    steps,
                    [100 * r["masked_acc"] for r in rows],
                    style,
                    label=f"it{k} {split}",
                    ms=3,
                )
            drawn = True
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="masked accuracy (%)", title="masked-frame accuracy")
    return _save(fig, (ax_loss, ax_acc), png, drawn)


def _plot_abx(cfg: PipelineConfig, num_iterations: int, png: Path) -> bool:
    from matplotlib.ticker import MaxNLocator  # lazy: slow to import; only the figure needs it

    fig, axes = _two_panels()
    baselines = baseline_scores(cfg)
    drawn = False
    for ax, mode in zip(axes, ("within", "across"), strict=True):
        for k in range(1, num_iterations + 1):
            report = read_json(cfg.iteration_dir(k) / "abx" / "abx.json")
            if report is None:
                continue
            points = [(s["layer"], s[mode]["error_percent"]) for s in report["scores"] if mode in s]
            if points:
                layers, errors = zip(*points, strict=True)
                ax.plot(layers, errors, "o-", label=f"iteration {k}")
                drawn = True
        for score, style in zip(baselines, ("--", ":"), strict=False):
            if mode in score:
                ax.axhline(score[mode]["error_percent"], color="k", ls=style, label=score["name"])
        ax.set(xlabel="layer", ylabel="ABX error (%)", title=f"{mode}-speaker ABX")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no layer 1.5
    return _save(fig, axes, png, drawn)


def _curve_sections(cfg: PipelineConfig, num_iterations: int, out: Path) -> list[str]:
    """Each iteration's ABX learning curves ([abx] curves): the PNG and each step's best
    layer against the baselines."""
    lines = []
    for k in range(1, num_iterations + 1):
        folder = cfg.iteration_dir(k) / CURVES_DIR
        report = read_json(folder / f"{CURVES_NAME}.json")
        if report is None:
            continue
        lines += ["", f"### ABX over training, iteration {k}", ""]
        png = folder / f"{CURVES_NAME}.png"
        if png.is_file():
            lines += [f"![ABX against training step]({os.path.relpath(png, out)})", ""]
        lines += summary_table(report)
    return lines


def step_seconds(steps: list[Step], *, stale: bool = False) -> dict[str, float | None]:
    """Each step's wall time (as its DONE.json records it), None for a step not done (nor
    stale, with `stale`: the time of the work its outputs come from)."""
    states = ("done", "stale") if stale else ("done",)
    return {
        step.name: read_done(step)["seconds"] if step_state(step) in states else None
        for step in steps
    }


def synthetic_languages(cfg: PipelineConfig) -> list[str] | None:
    """The languages of the evaluation corpus when it is the synthesized demo corpus (its
    corpus.json beside the manifest, as demo/corpus.py writes it), else None: its figures are
    then labelled synthetic."""
    if cfg.corpus.eval_manifest is None:
        return None
    built = read_json(Path(cfg.corpus.eval_manifest).parent / "corpus.json")
    if built is None or "num_abx_items" not in built:
        return None
    return list((built.get("settings") or {}).get("languages") or ["?"])


def evaluation_note(cfg: PipelineConfig) -> list[str]:
    """What the run was judged on: the held-out corpus (synthetic or not), or nothing, and
    then how the checkpoint and the next layer were chosen."""
    n = len(cfg.iterations)
    corpus = f"{n} iteration(s); corpus: `{cfg.corpus.train_manifest}` (train)"
    if cfg.corpus.eval_manifest is None:
        layers = [
            f"iteration {k}: layer {it.layer}"
            for k, it in enumerate(cfg.iterations, start=1)
            if it.features == "layer"
        ]
        return [
            f"{corpus}; no evaluation corpus, so no ABX nor unit quality: each iteration's "
            "checkpoint was chosen by validation loss, and every target layer is the "
            f"configured one ({', '.join(layers) or 'none'}).",
        ]
    lines = [f"{corpus}, `{cfg.corpus.eval_manifest}` (held-out evaluation)."]
    languages = synthetic_languages(cfg)
    if languages is not None:
        lines += [
            "",
            f"The evaluation corpus is SYNTHETIC (eSpeak voices in {', '.join(languages)}, exact"
            " phone alignments): its ABX and PNMI say how phone-like the representations are on "
            "synthesized speech, not on your audio.",
        ]
    return lines


def write_report(cfg: PipelineConfig, steps: list[Step], out: Path | None = None) -> Path:
    """Write report.md (and training.png, abx.png) into `out` (default: the run folder)."""
    out = out or cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    n = len(cfg.iterations)
    lines = [f"# hubertlab run: {cfg.out_dir.name}", "", *evaluation_note(cfg), ""]
    lines += longform_report(cfg)
    mark = " (synthetic)" if synthetic_languages(cfg) is not None else ""
    standing = _standing(cfg, n)
    if standing:
        lines += [
            f"## Where it stands (ABX{mark}, best layer of each iteration's selected checkpoint:"
            " the lowest validation loss)",
            "",
            *standing,
        ]
    lines += _curve_sections(cfg, n, out)
    if cfg.corpus.eval_manifest is not None:
        lines += [
            "",
            f"## Unit quality on the held-out corpus{mark}",
            "",
            *_units_table(cfg, n),
            *_codebook_table(cfg, n),
            "",
            f"## ABX per layer on the held-out corpus{mark}",
            "",
            *_abx_table(cfg, n),
            "",
        ]
    if _plot_abx(cfg, n, out / "abx.png"):
        lines += ["![ABX per layer](abx.png)", ""]
    lines += ["## Training", ""]
    for k in range(1, n + 1):
        best = read_json(cfg.iteration_dir(k) / "model" / "DONE.json")
        if best is not None:
            s = best["summary"]
            lines.append(
                f"- iteration {k}: best checkpoint `{Path(s['checkpoint']).name}`"
                + (
                    f", validation loss {fmt(s.get('valid_loss'), 3)}"
                    if s.get("valid_loss") is not None
                    else ""
                )
            )
    if _plot_training(cfg, n, out / "training.png"):
        lines += ["", "![loss and accuracy](training.png)"]
    lines += ["", "## Wall time of every step", "", "| step | state | seconds |", "|---|---|---|"]
    seconds = step_seconds(steps)
    for step in steps:
        lines.append(f"| {step.name} | {step_state(step)} | {fmt(seconds[step.name], 1)} |")
    lines += [f"| total | | {sum(s or 0.0 for s in seconds.values()):.1f} |", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path

"""Issue 23's figure: the ABX learning curves of the study's runs in one PNG (best layer at each
kept checkpoint, within and across speakers, MFCC + CMVN and raw MFCC as flat lines), and the
table of each run's last and best point, from the runs `experiments/demo_recipes.py` left in
DEMO_DIR (their [abx] curves: iteration<k>/abx_curve/abx_curves.json).

    python experiments/study_figure.py DEMO_DIR --out docs/figures/abx_learning_curves.png \\
        [--runs exp-spidr-published-s0 exp-hubert-it2-scratch-s0 ...]   # default: every run

A HuBERT run contributes one curve per iteration, each against its own training steps (an
iteration continued from the previous one has had those steps too). The table goes to stdout
(Markdown).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

from hubertlab.evaluate.abx_curves import scores_of_steps
from hubertlab.evaluate.abx_sweep import best_score

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

MODES = ("within", "across")


def best_per_step(report: dict) -> list[tuple[int, float, float]]:
    """(step, within, across) of each checkpoint's best layer (lowest mean of within and
    across, as the pipeline report picks it)."""
    points = []
    for entry in scores_of_steps(report):
        best = best_score([s for s in entry.scores if s.layer is not None])
        points.append((entry.step, best.within, best.across))
    return sorted(points)


def run_curves(run: Path) -> list[tuple[str, list[tuple[int, float, float]]]]:
    """The curves of one run: one per iteration that has them."""
    curves = []
    for k in (1, 2, 3):
        path = run / f"iteration{k}" / "abx_curve" / "abx_curves.json"
        if not path.is_file():
            break
        points = best_per_step(json.loads(path.read_text()))
        label = run.name.removeprefix("exp-") + (f" it.{k}" if k > 1 or _has(run, 2) else "")
        curves.append((label, points))
    return curves


def _has(run: Path, k: int) -> bool:
    return (run / f"iteration{k}" / "abx_curve" / "abx_curves.json").is_file()


def baselines(runs: list[Path]) -> dict[str, tuple[float, float]]:
    for run in runs:
        path = run / "iteration1" / "abx_curve" / "abx_curves.json"
        if path.is_file():
            return {
                b["name"]: (b["within"]["error_percent"], b["across"]["error_percent"])
                for b in json.loads(path.read_text())["baselines"]
            }
    return {}


def draw(curves, flat: dict[str, tuple[float, float]], png: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, column, mode in zip(axes, (1, 2), MODES, strict=True):
        for label, points in curves:
            ax.plot([p[0] for p in points], [p[column] for p in points], marker="o", ms=3,
                    label=label)  # fmt: skip
        for (name, values), style in zip(flat.items(), ("--", ":"), strict=False):
            ax.axhline(values[column - 1], color="black", linestyle=style, label=name)
        ax.set_title(f"{mode}-speaker ABX, best layer")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ABX error (%)")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def table(curves, flat: dict[str, tuple[float, float]]) -> str:
    rows = ["| run | last step | ABX at the last step | best point (step) |", "|---|---|---|---|"]
    for label, points in curves:
        step, within, across = points[-1]
        best = min(points, key=lambda p: p[2])
        rows.append(
            f"| {label} | {step} | {within:.2f} / {across:.2f} "
            f"| {best[1]:.2f} / {best[2]:.2f} ({best[0]}) |"
        )
    for name, (within, across) in flat.items():
        rows.append(f"| {name} (baseline) | | {within:.2f} / {across:.2f} | |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--runs", nargs="*", help="run folders of DEMO_DIR (default: all)")
    args = parser.parse_args()
    names = args.runs or sorted(p.name for p in args.demo.glob("exp-*") if p.is_dir())
    runs = [args.demo / name for name in names]
    missing = [str(run) for run in runs if not _has(run, 1)]
    if missing:
        parser.error(f"no ABX curves in {', '.join(missing)}")
    curves = [curve for run in runs for curve in run_curves(run)]
    flat = baselines(runs)
    draw(curves, flat, args.out)
    print(table(curves, flat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

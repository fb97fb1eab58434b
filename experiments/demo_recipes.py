"""Issue 23's study of the demo's recipes on the demo corpus: each variant is the demo's own
pipeline (`hubertlab demo --model hubert|spidr|dinosr`) with a few settings changed, trained
at the demo's budget (or --steps), scored by ABX per layer on the held-out evaluation corpus,
with ABX learning curves over its checkpoints ([abx] curves).

    python experiments/demo_recipes.py DEMO_DIR VARIANT [VARIANT ...] [--seed S]
        [--steps N]  # iteration 1's steps; default: the demo's budget of the model
        [--iterations N]  # only the first N of the pipeline's iterations
    python experiments/demo_recipes.py DEMO_DIR --table   # the table of every finished run

DEMO_DIR is a folder the demo's recipes were written to (its corpus and pipeline.toml,
pipeline-spidr.toml, pipeline-dinosr.toml; the pipelines themselves need not have run):
    python -c "from hubertlab.demo.recipe import prepare_demo; \
        [prepare_demo('DEMO_DIR', model=m) for m in ('hubert', 'spidr', 'dinosr')]"
Each run goes to DEMO_DIR/exp-<variant>-s<seed>[-<steps>] and resumes where it stopped; its
config is DEMO_DIR/exp-<variant>-s<seed>[-<steps>].toml. The table goes to
DEMO_DIR/experiments.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from hubertlab.demo.compare import model_summary
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.report import baseline_scores, fmt

# variant -> (model kind, [train.model.overrides], [train.optim] changes[, changes of the
# [[iterations]] tables by number ({2: ...}: HuBERT's iteration 2)[, settings added to
# [train.data]]])
PUBLISHED = 400_000  # the run length the spidr recipe's teacher schedule was made for
VARIANTS: dict[str, tuple] = {
    # the recipe of DEMO_DIR/pipeline.toml as it was written (the study used one written before
    # 2026-12-07: raw MFCC targets); iteration 2 continued from 1, targets of layer 3
    "hubert-demo": ("hubert", {}, {}, {}),
    "hubert-it2-scratch": ("hubert", {}, {}, {2: {"init": "scratch"}}),  # the HuBERT paper
    "hubert-it2-best": ("hubert", {}, {}, {2: {"layer": "best"}}),  # targets of the best-ABX layer
    "hubert-it2-scratch-best": ("hubert", {}, {}, {2: {"init": "scratch", "layer": "best"}}),
    # Kaldi's speed perturbation of the training audio (units stretched alike)
    "hubert-speed": ("hubert", {}, {}, {}, {"speed_perturb": [0.9, 1.0, 1.1]}),
    # the paper's k-means on raw MFCC (the demo's recipe until 2026-12-07)
    "hubert-raw": ("hubert", {}, {}, {1: {"cmvn": False}}),
    # k-means targets of features normalised per utterance (MFCC + CMVN, then CMVN'd layers)
    "hubert-cmvn": ("hubert", {}, {}, {1: {"cmvn": True}, 2: {"cmvn": True}}),
    "hubert-cmvn-speed": (
        "hubert",
        {},
        {},
        {1: {"cmvn": True}, 2: {"cmvn": True}},
        {"speed_perturb": [0.9, 1.0, 1.1]},
    ),
    "spidr-published": ("spidr", {}, {}),
    "spidr-scaled": ("spidr", {"ema_schedule_steps": PUBLISHED}, {}),
    "spidr-scaled-lr1e-3": ("spidr", {"ema_schedule_steps": PUBLISHED}, {"lr": 1e-3}),
    "spidr-scaled-cb0.9": (
        "spidr",
        {"ema_schedule_steps": PUBLISHED, "codebook_decay": 0.9},
        {},
    ),
    "spidr-scaled-x4": ("spidr", {"ema_schedule_steps": PUBLISHED // 4}, {}),
    "dinosr-published": ("dinosr", {}, {}),
    "dinosr-scaled": ("dinosr", {"ema_schedule_steps": PUBLISHED}, {}),
}


def toml_value(value) -> str:
    return json.dumps(value)  # numbers and strings are the same in TOML


def variant_config(
    demo: Path, variant: str, seed: int, steps: int | None, iterations: int | None = None
) -> Path:
    """Write DEMO_DIR/exp-<variant>-s<seed>.toml from the demo's pipeline of that model
    (its first `iterations` [[iterations]] tables only, when given)."""
    kind, overrides, optim, *rest = VARIANTS[variant]
    iteration_changes, data = (rest + [{}, {}])[:2]
    text = (demo / ("pipeline.toml" if kind == "hubert" else f"pipeline-{kind}.toml")).read_text()
    name = f"exp-{variant}-s{seed}" + (f"-{steps}" if steps else "")
    name += f"-it{iterations}" if iterations else ""
    text = re.sub(r'(?m)^out_dir = ".*"$', f'out_dir = "{name}"', text)
    text = re.sub(r"(?m)^seed = \d+$", f"seed = {seed}", text)
    for table, keys in (("[train.model.overrides]", overrides), ("[train.data]", data)):
        lines = "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
        text = text.replace(f"{table}\n", f"{table}\n{lines}")
    text = change_iterations(text, iteration_changes, variant)
    if iterations:
        text = "[[iterations]]".join(text.split("[[iterations]]")[: iterations + 1])
    # The shared [train] tables come before the [[iterations]] tables, which may set their own.
    shared, marker, iterations = text.partition("[[iterations]]")
    if steps:
        first = int(re.search(r"(?m)^max_steps = (\d+)$", shared).group(1))
        optim = {**optim, "max_steps": steps}
        shared = re.sub(r"(?m)^ckpt_every = \d+$", f"ckpt_every = {max(1, steps // 8)}", shared)
        shared = re.sub(r"(?m)^valid_every = \d+$", f"valid_every = {max(1, steps // 8)}", shared)
        # A later iteration's own budget keeps its ratio to iteration 1's.
        iterations = re.sub(
            r"(?m)^max_steps = (\d+)$",
            lambda m: f"max_steps = {max(1, round(int(m.group(1)) * steps / first))}",
            iterations,
        )
    for key, value in optim.items():
        shared, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {toml_value(value)}", shared)
        if count != 1:
            raise ValueError(f"{variant}: no single [train.optim] {key} to change")
    text = shared + marker + iterations
    if not re.search(r"(?m)^curves = true$", text):  # the demo's templates already ask
        text += "\n[abx]\ncurves = true\n"
    config = demo / f"{name}.toml"
    config.write_text(text)
    return config


def change_iterations(text: str, changes: dict[int, dict], variant: str) -> str:
    """`text` with `changes[k]` made to its k-th [[iterations]] table: a key it has is
    replaced, a key it lacks is added."""
    parts = text.split("[[iterations]]")
    for k, keys in changes.items():
        if not 1 <= k < len(parts):
            raise ValueError(f"{variant}: the pipeline has no [[iterations]] table {k}")
        for key, value in keys.items():
            line = f"{key} = {toml_value(value)}"
            parts[k], count = re.subn(rf"(?m)^{key} = .*$", line, parts[k])
            if count > 1:
                raise ValueError(f"{variant}: {key} set twice in [[iterations]] table {k}")
            if count == 0:
                parts[k] = f"\n{line}" + parts[k]  # right after the table's header
    return "[[iterations]]".join(parts)


def table(demo: Path) -> str:
    """One row per finished (or partly finished) run of DEMO_DIR."""
    rows = [
        "| run | steps | best layer | ABX within / across (%) | final target perplexity "
        "(per codebook) | training (s) |",
        "|---|---|---|---|---|---|",
    ]
    baselines = []
    for config in sorted(demo.glob("exp-*.toml")):
        cfg = load_pipeline_config(config)
        s = model_summary(cfg)
        baselines = baselines or baseline_scores(cfg)
        best = s["abx_per_layer"].get(str(s.get("best_layer")), {})
        ppl = (s.get("perplexity") or {}).get("target", {})
        rows.append(
            f"| {config.stem} | {' + '.join(map(str, s['steps']))} | {s.get('best_layer', '-')} "
            f"| {fmt(best.get('within'))} / {fmt(best.get('across'))} "
            f"| {', '.join(fmt(v, 1) for v in ppl.values()) or '-'} "
            f"| {fmt(s['train_seconds'], 0)} |"
        )
    for score in baselines:
        within = score.get("within", {}).get("error_percent")
        across = score.get("across", {}).get("error_percent")
        rows.append(f"| {score['name']} (baseline) | | | {fmt(within)} / {fmt(across)} | | |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("variants", nargs="*", help=", ".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="iteration 1's steps (default: the demo's)")
    parser.add_argument("--iterations", type=int, help="only the first N iterations")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    demo = args.demo.resolve()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    for variant in args.variants:
        config = variant_config(demo, variant, args.seed, args.steps, args.iterations)
        print(f"== {variant} (seed {args.seed}): hubertlab pipeline {config}", flush=True)
        subprocess.run(
            [str(Path(sys.executable).with_name("hubertlab")), "pipeline", str(config)],
            cwd=demo,
            check=True,
        )
    text = table(demo)
    (demo / "experiments.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
